//! PostgreSQL: the pool (bounded waits, so no request hangs) and the migrations of `sql/`, applied
//! in order under an advisory lock so that many replicas may start at once.

pub mod notify;
pub mod sync;
pub mod users;
pub mod webhooks;

use std::time::Duration;

use aws_lc_rs::digest;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::settings::DatabaseSettings;

/// The schema files, in order. `migrations_match_the_sql_folder` fails when `sql/` and this list
/// disagree; an applied file is never edited (its checksum is checked at every start).
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_create_users.sql",
        include_str!("../../sql/0001_create_users.sql"),
    ),
    (
        "0002_webhooks.sql",
        include_str!("../../sql/0002_webhooks.sql"),
    ),
];

/// Any number that no other application on the same database uses for an advisory lock.
const MIGRATION_LOCK: i64 = 0x636c_6572_6b75; // "clerku"

/// The pool. Connections are opened lazily, so this succeeds while the database is down.
pub fn create_pool(settings: &DatabaseSettings) -> Pool {
    let mut config = settings.config.expose().clone();
    config.options(format!(
        "-c statement_timeout={}",
        settings.statement_timeout.as_millis()
    ));
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.pool_max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.pool_wait_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()
        .expect("a runtime is set, so the pool builds")
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached, or no connection came free in time: a 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else is a bug or a broken schema: a 500.
    #[error("database error: {0}")]
    Other(String),
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            other => DbError::Unavailable(other.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let unavailable = e.is_closed()
            || e.code().is_none()
            || e.code().is_some_and(|c| {
                [
                    SqlState::QUERY_CANCELED,
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(c)
            });
        // `Display` of a server error is only "db error": keep its code and message.
        let cause = match e.as_db_error() {
            Some(db) => format!("{} ({}): {}", e, db.code().code(), db.message()),
            None => e.to_string(),
        };
        if unavailable {
            DbError::Unavailable(cause)
        } else {
            DbError::Other(cause)
        }
    }
}

/// `select 1`, for `/db-test/ping` and `/readyz`.
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached("select 1").await?;
    client.query_one(&stmt, &[]).await?;
    Ok(())
}

fn checksum(sql: &str) -> String {
    digest::digest(&digest::SHA256, sql.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Apply what is not applied yet, in order, each file in its own transaction, all under one
/// session-level advisory lock. Refuses to start when an applied file was edited.
pub async fn migrate(pool: &Pool) -> anyhow::Result<usize> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the database: {e}"))?;
    client
        .execute("select pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply(&mut client).await;
    // Unlock on the same connection whatever happened; a dropped connection unlocks too.
    let _ = client
        .execute("select pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn apply(client: &mut deadpool_postgres::Object) -> anyhow::Result<usize> {
    client
        .batch_execute(
            "create table if not exists schema_migrations (
                 version    text primary key,
                 checksum   text not null,
                 applied_at timestamptz not null default now()
             )",
        )
        .await?;
    let mut applied = 0;
    for (version, sql) in MIGRATIONS {
        let sum = checksum(sql);
        let row = client
            .query_opt(
                "select checksum from schema_migrations where version = $1",
                &[version],
            )
            .await?;
        match row {
            Some(row) => {
                let existing: String = row.try_get("checksum")?;
                anyhow::ensure!(
                    existing == sum,
                    "migration {version} was edited after it was applied; add a new file to sql/ instead"
                );
            }
            None => {
                let tx = client.transaction().await?;
                tx.batch_execute(sql)
                    .await
                    .map_err(|e| anyhow::anyhow!("migration {version} failed: {e}"))?;
                tx.execute(
                    "insert into schema_migrations (version, checksum) values ($1, $2)",
                    &[version, &sum],
                )
                .await?;
                tx.commit().await?;
                tracing::info!(version, "migration applied");
                applied += 1;
            }
        }
    }
    Ok(applied)
}

/// How long `/readyz` and the ping wait for the database at most.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_match_the_sql_folder() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(
            files, listed,
            "every file in sql/ is listed in db::MIGRATIONS, in order"
        );
        for (name, sql) in MIGRATIONS {
            assert_eq!(
                std::fs::read_to_string(format!("{dir}/{name}")).unwrap(),
                *sql
            );
        }
    }
}
