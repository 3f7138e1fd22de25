//! Cross-replica invalidation: a write announces the changed user on [`CHANNEL`]. Sent inside the
//! write's transaction, PostgreSQL delivers it only on commit.

use tokio_postgres::types::Type;

use super::{
    DbError,
    query::{self, Conn},
};

pub const CHANNEL: &str = "clerk_users_user_changed";

pub async fn user_changed(client: &impl Conn, clerk_id: &str) -> Result<(), DbError> {
    let sql = "select pg_notify($1, $2)";
    query::execute(
        client,
        sql,
        &[Type::TEXT, Type::TEXT],
        &[&CHANNEL, &clerk_id],
    )
    .await?;
    Ok(())
}

/// [`user_changed`] for many users in one statement.
pub async fn users_changed(client: &impl Conn, clerk_ids: &[String]) -> Result<(), DbError> {
    if clerk_ids.is_empty() {
        return Ok(());
    }
    let sql = "select pg_notify($1, id) from unnest($2::text[]) as id";
    query::execute(
        client,
        sql,
        &[Type::TEXT, Type::TEXT_ARRAY],
        &[&CHANNEL, &clerk_ids],
    )
    .await?;
    Ok(())
}
