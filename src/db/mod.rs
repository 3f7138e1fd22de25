//! PostgreSQL: the pool (bounded waits, so no request hangs, TLS as libpq's `sslmode` says), its
//! reachability (`health`), and the migrations of `sql/`, applied in order under an advisory lock
//! so that many replicas may start at once, also through a transaction pooler (README "Database").

pub mod health;
pub mod notify;
pub mod query;
pub mod sync;
pub mod users;
pub mod webhooks;

use std::time::Duration;

use aws_lc_rs::digest;
use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use tokio_postgres::types::Type;

use crate::net::postgres::{ConnectOptions, describe};
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

/// The pool. Connections are opened lazily, so this succeeds while the database is down. Sends no
/// `options` startup parameter (PgBouncer refuses it): the statement timeout is set per
/// transaction instead (`query`). Logs the TLS warning of `DATABASE_URL`, if any.
pub fn create_pool(settings: &DatabaseSettings) -> Pool {
    warn_if_unverified("DATABASE_URL", &settings.url);
    pool_for(&settings.url, settings, settings.pool_max_size)
}

fn warn_if_unverified(variable: &str, options: &ConnectOptions) {
    if let Some(warning) = options.warning() {
        tracing::warn!("{variable}: {warning}");
    }
}

fn pool_for(options: &ConnectOptions, settings: &DatabaseSettings, max_size: usize) -> Pool {
    let manager = Manager::from_config(
        options.config.expose().clone(),
        options.tls(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.pool_wait_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()
        .expect("a runtime is set, so the pool builds")
}

/// One connection for a one-shot job that keeps session state (`sync`'s temporary table):
/// `DATABASE_DIRECT_URL` when it is set, as for migrations and `LISTEN`.
pub fn session_database(settings: &DatabaseSettings) -> Database {
    let options = direct_or_pooled(settings);
    Database::new(pool_for(options, settings, 1), query::Mode::of(settings))
}

/// Where migrations and `LISTEN` go: `DATABASE_DIRECT_URL` when set, else `DATABASE_URL`.
pub fn direct_or_pooled(settings: &DatabaseSettings) -> &ConnectOptions {
    settings.direct_url.as_ref().unwrap_or(&settings.url)
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached: no connection could be made, or the server closed it or is
    /// shutting down. A 503, and [`Database`] fails fast until a probe reaches it again.
    #[error("database unreachable: {0}")]
    Unreachable(String),
    /// Reachable but not answering in time (a statement timeout, no pooled connection came free,
    /// too many connections): a 503, nothing more.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else is a bug or a broken schema: a 500.
    #[error("database error: {0}")]
    Other(String),
}

impl DbError {
    /// Either 503 kind.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Unavailable(_))
    }
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            PoolError::Timeout(TimeoutType::Create | TimeoutType::Recycle) => {
                DbError::Unreachable(describe_pool_error(&e))
            }
            other => DbError::Unavailable(describe_pool_error(&other)),
        }
    }
}

/// One line for a pool failure: the server's or the TLS reason, or which wait ran out.
pub fn describe_pool_error(e: &PoolError) -> String {
    match e {
        PoolError::Backend(e) => describe(e),
        PoolError::Timeout(TimeoutType::Create) => {
            "no connection within DB_CONNECT_TIMEOUT_MS (is the host reachable?)".into()
        }
        PoolError::Timeout(TimeoutType::Wait) => {
            "no pooled connection came free within DB_POOL_WAIT_TIMEOUT_MS".into()
        }
        other => other.to_string(),
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let unreachable = e.is_closed()
            || e.code().is_none()
            || e.code().is_some_and(|c| {
                [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                ]
                .contains(c)
            });
        let busy = e.code().is_some_and(|c| {
            [SqlState::QUERY_CANCELED, SqlState::TOO_MANY_CONNECTIONS].contains(c)
        });
        // `Display` of a server error is only "db error", of a TLS failure only "error
        // performing TLS handshake": keep the server's message, or the causes.
        let cause = describe(&e);
        if unreachable {
            DbError::Unreachable(cause)
        } else if busy {
            DbError::Unavailable(cause)
        } else {
            DbError::Other(cause)
        }
    }
}

pub use self::health::Database;

/// `select 1`, for `/db-test/ping` and `/readyz`; at once an error while the database is down.
pub async fn ping(db: &Database) -> Result<(), DbError> {
    let client = db.client().await?;
    query::query_one(&client, "select 1", &[], &[]).await?;
    Ok(())
}

fn checksum(sql: &str) -> String {
    digest::digest(&digest::SHA256, sql.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Apply what is not applied yet, in order, each file in its own transaction, each transaction
/// under a transaction-scoped advisory lock (`pg_advisory_xact_lock`): a session lock would stay
/// on whatever server connection a transaction pooler lent, so it works only on a direct
/// connection, while this works on both. Runs over `DATABASE_DIRECT_URL` when that is set.
/// Refuses to start when an applied file was edited. The error names the host and the server's
/// or the TLS reason.
pub async fn migrate(settings: &DatabaseSettings, pool: &Pool) -> anyhow::Result<usize> {
    let direct = settings.direct_url.as_ref().map(|d| {
        warn_if_unverified("DATABASE_DIRECT_URL", d);
        (pool_for(d, settings, 1), "DATABASE_DIRECT_URL", d)
    });
    let (pool, variable, options) = match &direct {
        Some((p, v, o)) => (p, *v, *o),
        None => (pool, "DATABASE_URL", &settings.url),
    };
    let client = pool.get().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the database at {} ({variable}): {}",
            options.hosts(),
            describe_pool_error(&e)
        )
    })?;
    let mut client = query::Client::new(client, query::Mode::of(settings));
    let mut applied = 0;
    for (version, sql) in MIGRATIONS {
        if apply(&mut client, version, sql).await.map_err(|e| {
            match e.downcast::<tokio_postgres::Error>() {
                Ok(pg) => anyhow::anyhow!("migration {version}: {}", describe(&pg)),
                Err(other) => other,
            }
        })? {
            tracing::info!(version, "migration applied");
            applied += 1;
        }
    }
    if let Some((pool, ..)) = direct {
        pool.close();
    }
    Ok(applied)
}

/// One file in one transaction, under the lock. `true` when it was applied now.
async fn apply(client: &mut query::Client, version: &str, sql: &str) -> anyhow::Result<bool> {
    let sum = checksum(sql);
    let tx = client.transaction().await?;
    query::query(
        &tx,
        "select pg_advisory_xact_lock($1)",
        &[Type::INT8],
        &[&MIGRATION_LOCK],
    )
    .await?;
    tx.batch_execute(
        "create table if not exists schema_migrations (
             version    text primary key,
             checksum   text not null,
             applied_at timestamptz not null default now()
         )",
    )
    .await?;
    let row = query::query_opt(
        &tx,
        "select checksum from schema_migrations where version = $1",
        &[Type::TEXT],
        &[&version],
    )
    .await?;
    if let Some(row) = row {
        let existing: String = row.get(0);
        anyhow::ensure!(
            existing == sum,
            "migration {version} was edited after it was applied; add a new file to sql/ instead"
        );
        return Ok(false);
    }
    tx.batch_execute(sql)
        .await
        .map_err(|e| anyhow::anyhow!("migration {version} failed: {}", describe(&e)))?;
    query::execute(
        &tx,
        "insert into schema_migrations (version, checksum) values ($1, $2)",
        &[Type::TEXT, Type::TEXT],
        &[&version, &sum],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
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
