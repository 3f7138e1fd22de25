//! Whether the database can be reached. The first failure that says it cannot
//! ([`DbError::Unreachable`]: a refused or timed-out connection, a server closing connections or
//! shutting down) marks it down; from then on [`Database::client`] fails at once instead of letting
//! every request wait out the pool's timeout, and one probe at a time, in the background, finds
//! out when it is back. A database that is merely slow or busy ([`DbError::Unavailable`]) marks
//! nothing.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;

use super::{
    DbError,
    query::{Client, Mode},
};

/// The pool, and what is known of the database's reachability.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    mode: Mode,
    health: Arc<Health>,
}

#[derive(Default)]
struct Health {
    /// Set while the database is known to be unreachable.
    down_since: Mutex<Option<Instant>>,
    /// Mirrors `down_since.is_some()`, read without the lock on every request.
    down: AtomicBool,
    /// True while the one probe runs.
    probing: AtomicBool,
}

/// How often the probe tries while the database is down.
const PROBE_EVERY: Duration = Duration::from_millis(250);

impl Database {
    pub fn new(pool: Pool, mode: Mode) -> Self {
        Self {
            pool,
            mode,
            health: Arc::default(),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// True while the database is known to be unreachable.
    pub fn is_down(&self) -> bool {
        self.health.down.load(Ordering::Acquire)
    }

    /// How long it has been down, if it is.
    pub fn down_for(&self) -> Option<Duration> {
        self.health
            .down_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }

    /// A pooled connection; at once an error while the database is known to be down.
    pub async fn client(&self) -> Result<Client, DbError> {
        if self.is_down() {
            return Err(DbError::Unreachable(
                "known to be down (a probe checks when it is back)".into(),
            ));
        }
        match self.pool.get().await {
            Ok(client) => Ok(Client::new(client, self.mode)),
            Err(e) => Err(self.observed(e.into())),
        }
    }

    /// Pass on an error of this database, noting first whether it says the database is
    /// unreachable (a server that went away mid-query, say).
    pub fn observed(&self, e: DbError) -> DbError {
        if matches!(e, DbError::Unreachable(_)) {
            self.mark_down(&e);
        }
        e
    }

    fn mark_down(&self, why: &DbError) {
        {
            let mut since = self
                .health
                .down_since
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if since.is_some() {
                return;
            }
            *since = Some(Instant::now());
            self.health.down.store(true, Ordering::Release);
        }
        tracing::warn!(error = %why, "database unreachable: failing fast and probing until it is back");
        if !self.health.probing.swap(true, Ordering::AcqRel) {
            let db = self.clone();
            tokio::spawn(async move { db.probe().await });
        }
    }

    /// Try one connection and `select 1` at a time until one succeeds.
    async fn probe(self) {
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let ok = async {
                let client = self.pool.get().await.ok()?;
                tokio::time::timeout(super::PING_TIMEOUT, client.simple_query("select 1"))
                    .await
                    .ok()?
                    .ok()
            }
            .await
            .is_some();
            if ok {
                let down_for = {
                    let mut since = self
                        .health
                        .down_since
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    self.health.down.store(false, Ordering::Release);
                    since.take().map(|t| t.elapsed())
                };
                self.health.probing.store(false, Ordering::Release);
                tracing::info!(
                    down_ms = down_for.map_or(0, |d| d.as_millis() as u64),
                    "database reachable again"
                );
                return;
            }
        }
    }
}
