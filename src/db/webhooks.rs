//! Webhook bookkeeping: processed Svix ids (replays change nothing) and Clerk's deletions.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use super::DbError;

/// Record a Svix message id. `false` when it was already processed.
pub async fn record_event(
    client: &impl GenericClient,
    svix_id: &str,
    event_type: &str,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached("insert into webhook_events (svix_id, event_type) values ($1, $2) on conflict do nothing")
        .await?;
    Ok(client.execute(&stmt, &[&svix_id, &event_type]).await? == 1)
}

/// Forget ids that can no longer arrive with a valid timestamp.
pub async fn prune_events(client: &impl GenericClient) -> Result<u64, DbError> {
    let stmt = client
        .prepare_cached("delete from webhook_events where received_at < now() - interval '1 hour'")
        .await?;
    Ok(client.execute(&stmt, &[]).await?)
}

/// Remember that Clerk deleted a user at `at` (the newest deletion wins).
pub async fn record_deletion(
    client: &impl GenericClient,
    clerk_id: &str,
    at: OffsetDateTime,
) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "insert into clerk_deletions (clerk_id, deleted_at) values ($1, $2)
             on conflict (clerk_id) do update set deleted_at = greatest(clerk_deletions.deleted_at, excluded.deleted_at)",
        )
        .await?;
    client.execute(&stmt, &[&clerk_id, &at]).await?;
    Ok(())
}

/// Whether Clerk reported the user deleted at or after `version` (their `updated_at`).
pub async fn deleted_since(
    client: &impl GenericClient,
    clerk_id: &str,
    version: OffsetDateTime,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "select exists (select 1 from clerk_deletions where clerk_id = $1 and deleted_at >= $2) as deleted",
        )
        .await?;
    Ok(client
        .query_one(&stmt, &[&clerk_id, &version])
        .await?
        .try_get("deleted")?)
}
