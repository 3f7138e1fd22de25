//! Webhook bookkeeping: processed Svix ids (replays change nothing) and Clerk's deletions.

use time::OffsetDateTime;
use tokio_postgres::types::Type;

use super::{
    DbError,
    query::{self, Conn},
};

/// Record a Svix message id. `false` when it was already processed.
pub async fn record_event(
    client: &impl Conn,
    svix_id: &str,
    event_type: &str,
) -> Result<bool, DbError> {
    let sql =
        "insert into webhook_events (svix_id, event_type) values ($1, $2) on conflict do nothing";
    let types = [Type::TEXT, Type::TEXT];
    Ok(query::execute(client, sql, &types, &[&svix_id, &event_type]).await? == 1)
}

/// Forget ids that can no longer arrive with a valid timestamp.
pub async fn prune_events(client: &impl Conn) -> Result<u64, DbError> {
    let sql = "delete from webhook_events where received_at < now() - interval '1 hour'";
    Ok(query::execute(client, sql, &[], &[]).await?)
}

/// Remember that Clerk deleted a user at `at` (the newest deletion wins).
pub async fn record_deletion(
    client: &impl Conn,
    clerk_id: &str,
    at: OffsetDateTime,
) -> Result<(), DbError> {
    let sql = "insert into clerk_deletions (clerk_id, deleted_at) values ($1, $2)
             on conflict (clerk_id) do update set deleted_at = greatest(clerk_deletions.deleted_at, excluded.deleted_at)";
    let types = [Type::TEXT, Type::TIMESTAMPTZ];
    query::execute(client, sql, &types, &[&clerk_id, &at]).await?;
    Ok(())
}

/// Whether Clerk reported the user deleted at or after `version` (their `updated_at`).
pub async fn deleted_since(
    client: &impl Conn,
    clerk_id: &str,
    version: OffsetDateTime,
) -> Result<bool, DbError> {
    let sql = "select exists (select 1 from clerk_deletions where clerk_id = $1 and deleted_at >= $2) as deleted";
    let types = [Type::TEXT, Type::TIMESTAMPTZ];
    Ok(
        query::query_one(client, sql, &types, &[&clerk_id, &version])
            .await?
            .try_get("deleted")?,
    )
}
