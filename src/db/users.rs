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

/// What storing one page of Clerk's user list did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PageOutcome {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// Store a page of users as Clerk lists them, in one statement, by the rules of a webhook's
/// `user.updated`: a new user is inserted; a stored one gets Clerk's columns only when Clerk's
/// `updated_at` is newer than the stored one; a user whose remembered deletion is at or after
/// their `updated_at` is left out; `id`, `metadata` and `created_at` are never touched. The
/// record's `updated_at` moves only when a stored value changed. Returns the counts and the
/// users whose row changed (inserted or updated), for the caches to be told. `users` must not
/// list an id twice.
pub async fn store_page(
    client: &impl Conn,
    users: &[ClerkUser],
) -> Result<(PageOutcome, Vec<String>), DbError> {
    let sql = "with page as (
                 select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                      $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[])
                     as p(id, clerk_id, email, first_name, last_name, username, image_url,
                          clerk_created_at, clerk_updated_at)
             )
             insert into users as u
                 (id, clerk_id, email, first_name, last_name, username, image_url, clerk_created_at, clerk_updated_at)
             select id, clerk_id, email, first_name, last_name, username, image_url, clerk_created_at, clerk_updated_at
             from page p
             where not exists (
                 select 1 from clerk_deletions d
                 where d.clerk_id = p.clerk_id and d.deleted_at >= p.clerk_updated_at)
             on conflict (clerk_id) do update set
                 email = excluded.email,
                 first_name = excluded.first_name,
                 last_name = excluded.last_name,
                 username = excluded.username,
                 image_url = excluded.image_url,
                 clerk_created_at = coalesce(u.clerk_created_at, excluded.clerk_created_at),
                 clerk_updated_at = excluded.clerk_updated_at,
                 updated_at = case
                     when (u.email, u.first_name, u.last_name, u.username, u.image_url)
                          is distinct from
                          (excluded.email, excluded.first_name, excluded.last_name, excluded.username, excluded.image_url)
                     then now() else u.updated_at end
             where u.clerk_updated_at is null or u.clerk_updated_at < excluded.clerk_updated_at
             -- now() is the transaction's start: a row whose updated_at is now() was written here.
             returning u.clerk_id, (u.xmax = 0) as inserted, (u.updated_at = now()) as changed";
    let n = users.len();
    let (mut ids, mut clerk_ids, mut emails, mut first, mut last, mut usernames, mut images) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut created_at, mut updated_at) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for user in users {
        ids.push(Uuid::now_v7());
        clerk_ids.push(user.id.as_str());
        emails.push(user.primary_email());
        first.push(user.first_name.as_deref());
        last.push(user.last_name.as_deref());
        usernames.push(user.username.as_deref());
        images.push(user.image_url.as_deref());
        created_at.push(time_of_millis(user.created_at));
        updated_at.push(time_of_millis(user.updated_at));
    }
    let text = Type::TEXT_ARRAY;
    let rows = query::query(
        client,
        sql,
        &[
            Type::UUID_ARRAY,
            text.clone(),
            text.clone(),
            text.clone(),
            text.clone(),
            text.clone(),
            text,
            Type::TIMESTAMPTZ_ARRAY,
            Type::TIMESTAMPTZ_ARRAY,
        ],
        &[
            &ids,
            &clerk_ids,
            &emails,
            &first,
            &last,
            &usernames,
            &images,
            &created_at,
            &updated_at,
        ],
    )
    .await?;
    let mut outcome = PageOutcome::default();
    let mut changed_ids = Vec::new();
    for row in &rows {
        let inserted: bool = row.try_get("inserted")?;
        let changed: bool = row.try_get("changed")?;
        if inserted {
            outcome.created += 1;
        } else if changed {
            outcome.updated += 1;
        }
        if inserted || changed {
            changed_ids.push(row.try_get("clerk_id")?);
        }
    }
    outcome.unchanged = n as u64 - outcome.created - outcome.updated;
    Ok((outcome, changed_ids))
}
