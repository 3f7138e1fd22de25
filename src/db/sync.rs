//! The bookkeeping of `clerk-users sync`: the ids Clerk listed during the walk (a temporary
//! table of the sync's one connection), and the prune of the users it did not list. A temporary
//! table is session state, so the sync's connection goes to `DATABASE_DIRECT_URL` when it is set
//! (a transaction pooler would hand its transactions to different server connections).

use time::OffsetDateTime;
use tokio_postgres::types::Type;

use super::{
    DbError,
    query::{self, Conn},
};

/// The session's list of the ids Clerk listed during a sync (a temporary table, gone with the
/// connection): what `prune_unlisted` keeps.
pub async fn create_listed(client: &impl Conn) -> Result<(), DbError> {
    client
        .pg()
        .batch_execute(
            "create temporary table if not exists sync_listed (clerk_id text primary key);
             truncate pg_temp.sync_listed",
        )
        .await?;
    Ok(())
}

/// Note ids Clerk listed (see [`create_listed`]).
pub async fn add_listed(client: &impl Conn, clerk_ids: &[&str]) -> Result<(), DbError> {
    let sql = "insert into pg_temp.sync_listed (clerk_id) select unnest($1::text[]) on conflict do nothing";
    query::execute(client, sql, &[Type::TEXT_ARRAY], &[&clerk_ids]).await?;
    Ok(())
}

/// Delete the users Clerk did not list, remembering each deletion at `walk_started` as a
/// `user.deleted` would. Users stored since the walk started (a first sight of a user Clerk
/// created after the walk went by), or whose Clerk data is that recent, are kept. Returns the
/// ids deleted.
pub async fn prune_unlisted(
    client: &impl Conn,
    walk_started: OffsetDateTime,
) -> Result<Vec<String>, DbError> {
    client
        .pg()
        .batch_execute("analyze pg_temp.sync_listed")
        .await?;
    let sql = "with gone as (
                 delete from users u
                 where u.created_at < $1
                   and (u.clerk_updated_at is null or u.clerk_updated_at < $1)
                   and not exists (select 1 from pg_temp.sync_listed l where l.clerk_id = u.clerk_id)
                 returning u.clerk_id
             ), remembered as (
                 insert into clerk_deletions (clerk_id, deleted_at) select clerk_id, $1 from gone
                 on conflict (clerk_id) do update
                     set deleted_at = greatest(clerk_deletions.deleted_at, excluded.deleted_at)
             )
             select clerk_id from gone";
    let rows = query::query(client, sql, &[Type::TIMESTAMPTZ], &[&walk_started]).await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get("clerk_id"))
        .collect::<Result<_, _>>()?)
}

/// The database's clock: the walk's start is measured where `created_at` is.
pub async fn now(client: &impl Conn) -> Result<OffsetDateTime, DbError> {
    Ok(query::query_one(client, "select now() as now", &[], &[])
        .await?
        .try_get("now")?)
}
