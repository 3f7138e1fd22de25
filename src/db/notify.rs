//! Cross-replica invalidation: a write announces the changed user on [`CHANNEL`]. Sent inside the
//! write's transaction, PostgreSQL delivers it only on commit.

use deadpool_postgres::GenericClient;

use super::DbError;

pub const CHANNEL: &str = "clerk_users_user_changed";

pub async fn user_changed(client: &impl GenericClient, clerk_id: &str) -> Result<(), DbError> {
    let stmt = client.prepare_cached("select pg_notify($1, $2)").await?;
    client.execute(&stmt, &[&CHANNEL, &clerk_id]).await?;
    Ok(())
}

/// [`user_changed`] for many users in one statement.
pub async fn users_changed(
    client: &impl GenericClient,
    clerk_ids: &[String],
) -> Result<(), DbError> {
    if clerk_ids.is_empty() {
        return Ok(());
    }
    let stmt = client
        .prepare_cached("select pg_notify($1, id) from unnest($2::text[]) as id")
        .await?;
    client.execute(&stmt, &[&CHANNEL, &clerk_ids]).await?;
    Ok(())
}
