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
