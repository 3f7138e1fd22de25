//! The `users` queries: one function per statement, each over any client (pool connection or
//! transaction), each through `query` (prepared once per connection, or unnamed).

use time::OffsetDateTime;
use tokio_postgres::{Row, types::Type};
use uuid::Uuid;

use super::{
    DbError,
    query::{self, Conn},
};
use crate::clerk::{ClerkUser, time_of_millis};

/// One row of `users`.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: Uuid,
    pub clerk_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub metadata: serde_json::Value,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// What every query that yields a [`UserRow`] returns; read back by name, so the order here is
/// free and a column missing from it fails the query's test instead of shifting the others.
const COLUMNS: &str = "id, clerk_id, email, first_name, last_name, username, image_url, metadata, created_at, updated_at";

impl TryFrom<&Row> for UserRow {
    type Error = tokio_postgres::Error;

    fn try_from(row: &Row) -> Result<Self, Self::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            clerk_id: row.try_get("clerk_id")?,
            email: row.try_get("email")?,
            first_name: row.try_get("first_name")?,
            last_name: row.try_get("last_name")?,
            username: row.try_get("username")?,
            image_url: row.try_get("image_url")?,
            metadata: row.try_get("metadata")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// A row that may be absent, read by name.
fn user(row: Option<Row>) -> Result<Option<UserRow>, DbError> {
    Ok(row.as_ref().map(UserRow::try_from).transpose()?)
}

pub async fn find_by_clerk_id(
    client: &impl Conn,
    clerk_id: &str,
) -> Result<Option<UserRow>, DbError> {
    let sql = format!("select {COLUMNS} from users where clerk_id = $1");
    user(query::query_opt(client, &sql, &[Type::TEXT], &[&clerk_id]).await?)
}

/// Insert the user as Clerk describes them, or refresh the Clerk-owned columns of the existing
/// row. Data never goes back in time: when the stored `clerk_updated_at` is newer, the row keeps
/// its values (the update still runs so that `returning` always yields the row, in one
/// statement, whoever won a concurrent insert). `id`, `metadata` and `created_at` are never
/// touched by Clerk data.
pub async fn upsert_from_clerk(client: &impl Conn, user: &ClerkUser) -> Result<UserRow, DbError> {
    // "Newer" is written out in each column: `excluded` is Clerk's copy, `u` the stored row.
    let sql = format!(
        "insert into users as u
             (id, clerk_id, email, first_name, last_name, username, image_url, clerk_created_at, clerk_updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         on conflict (clerk_id) do update set
             email = case
                 when u.clerk_updated_at is null or u.clerk_updated_at < excluded.clerk_updated_at
                 then excluded.email else u.email end,
             first_name = case
                 when u.clerk_updated_at is null or u.clerk_updated_at < excluded.clerk_updated_at
                 then excluded.first_name else u.first_name end,
             last_name = case
                 when u.clerk_updated_at is null or u.clerk_updated_at < excluded.clerk_updated_at
                 then excluded.last_name else u.last_name end,
             username = case
                 when u.clerk_updated_at is null or u.clerk_updated_at < excluded.clerk_updated_at
                 then excluded.username else u.username end,
             image_url = case
                 when u.clerk_updated_at is null or u.clerk_updated_at < excluded.clerk_updated_at
                 then excluded.image_url else u.image_url end,
             clerk_created_at = coalesce(u.clerk_created_at, excluded.clerk_created_at),
             clerk_updated_at = case
                 when u.clerk_updated_at is null or u.clerk_updated_at < excluded.clerk_updated_at
                 then excluded.clerk_updated_at else u.clerk_updated_at end,
             updated_at = case
                 when u.clerk_updated_at is null or u.clerk_updated_at < excluded.clerk_updated_at
                 then now() else u.updated_at end
         returning {COLUMNS}"
    );
    let text = Type::TEXT;
    let row = query::query_one(
        client,
        &sql,
        &[
            Type::UUID,
            text.clone(),
            text.clone(),
            text.clone(),
            text.clone(),
            text.clone(),
            text,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
        ],
        &[
            &Uuid::now_v7(),
            &user.id,
            &user.primary_email(),
            &user.first_name,
            &user.last_name,
            &user.username,
            &user.image_url,
            &time_of_millis(user.created_at),
            &time_of_millis(user.updated_at),
        ],
    )
    .await?;
    Ok(UserRow::try_from(&row)?)
}

/// Replace `metadata` (already merged by the caller under `lock_metadata`'s row lock).
pub async fn set_metadata(
    client: &impl Conn,
    clerk_id: &str,
    metadata: &serde_json::Value,
) -> Result<Option<UserRow>, DbError> {
    let sql = format!(
        "update users set metadata = $2, updated_at = now() where clerk_id = $1 returning {COLUMNS}"
    );
    user(
        query::query_opt(
            client,
            &sql,
            &[Type::TEXT, Type::JSONB],
            &[&clerk_id, metadata],
        )
        .await?,
    )
}

/// The current `metadata`, locking the row until the transaction ends (PATCH is read-merge-write).
pub async fn lock_metadata(
    client: &impl Conn,
    clerk_id: &str,
) -> Result<Option<serde_json::Value>, DbError> {
    Ok(query::query_opt(
        client,
        "select metadata from users where clerk_id = $1 for update",
        &[Type::TEXT],
        &[&clerk_id],
    )
    .await?
    .map(|r| r.try_get("metadata"))
    .transpose()?)
}

/// Delete the local record. `true` when there was one.
pub async fn delete_by_clerk_id(client: &impl Conn, clerk_id: &str) -> Result<bool, DbError> {
    let sql = "delete from users where clerk_id = $1";
    Ok(query::execute(client, sql, &[Type::TEXT], &[&clerk_id]).await? > 0)
}
