//! The user cache, coherent across replicas: every write sends a PostgreSQL `NOTIFY` on
//! [`CHANNEL`](crate::db::notify::CHANNEL) in its transaction, and every replica listens on a
//! connection of its own and drops the entry. While that connection is down (notifications may be
//! missed) the cache is bypassed and emptied; the TTL bounds staleness should anything slip through.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use super::Known;
use crate::{db::notify::CHANNEL, metrics::Metrics, settings::Secret};

struct Inner {
    cache: moka::future::Cache<String, Arc<Known>>,
    /// True while the listener is connected and listening.
    live: AtomicBool,
    /// Bumped by every invalidation: a row read before an invalidation is not cached after it.
    epoch: AtomicU64,
    metrics: Metrics,
}

/// Cheap to clone. A disabled cache (size or TTL 0) holds nothing and never listens.
#[derive(Clone)]
pub struct UserCache(Option<Arc<Inner>>);

impl UserCache {
    pub fn new(max_entries: u64, ttl: Duration, metrics: Metrics) -> Self {
        if max_entries == 0 || ttl.is_zero() {
            return Self(None);
        }
        let cache = moka::future::Cache::builder()
            .max_capacity(max_entries)
            .time_to_live(ttl)
            .build();
        Self(Some(Arc::new(Inner {
            cache,
            live: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            metrics,
        })))
    }

    pub fn disabled() -> Self {
        Self(None)
    }

    /// A cached row, only while invalidations are being received.
    pub async fn get(&self, clerk_id: &str) -> Option<Arc<Known>> {
        let inner = self.0.as_ref()?;
        if !inner.live.load(Ordering::Acquire) {
            return None;
        }
        let row = inner.cache.get(clerk_id).await;
        inner.metrics.user_cache(row.is_some());
        row
    }

    /// Take before reading a row from the database; pass to [`UserCache::insert`].
    pub fn epoch(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |i| i.epoch.load(Ordering::Acquire))
    }

    /// Cache a row read at `epoch`, unless something was invalidated since.
    pub async fn insert(&self, known: &Arc<Known>, epoch: u64) {
        let Some(inner) = &self.0 else { return };
        if inner.live.load(Ordering::Acquire) && inner.epoch.load(Ordering::Acquire) == epoch {
            inner
                .cache
                .insert(known.row.clerk_id.clone(), Arc::clone(known))
                .await;
        }
    }

    /// Drop one user (a write here, or a notification from another replica).
    pub async fn invalidate(&self, clerk_id: &str) {
        if let Some(inner) = &self.0 {
            inner.epoch.fetch_add(1, Ordering::AcqRel);
            inner.cache.invalidate(clerk_id).await;
        }
    }

    fn set_live(&self, live: bool) {
        if let Some(inner) = &self.0 {
            inner.epoch.fetch_add(1, Ordering::AcqRel);
            inner.cache.invalidate_all();
            inner.live.store(live, Ordering::Release);
        }
    }

    pub fn entries(&self) -> u64 {
        self.0.as_ref().map_or(0, |i| i.cache.entry_count())
    }

    /// Listen for other replicas' writes until aborted: a connection of its own, reconnected with
    /// backoff; a failed keep-alive counts as a lost connection.
    pub fn spawn_listener(
        &self,
        config: Secret<tokio_postgres::Config>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.0.as_ref()?;
        let cache = self.clone();
        Some(tokio::spawn(async move {
            let mut failures: u32 = 0;
            loop {
                match cache.listen(config.expose()).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        if failures == 1 {
                            tracing::warn!(error = %e, "user cache: listener down; cache bypassed");
                        }
                    }
                }
                cache.set_live(false);
                tokio::time::sleep(Duration::from_millis(100 << failures.min(6))).await;
            }
        }))
    }

    async fn listen(&self, config: &tokio_postgres::Config) -> Result<(), tokio_postgres::Error> {
        let (client, mut conn) = config.connect(NoTls).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(n) = message
                    && tx.send(n.payload().to_string()).is_err()
                {
                    break;
                }
            }
        });
        let result = async {
            client.batch_execute(&format!("listen {CHANNEL}")).await?;
            // From here on every write is heard: start from an empty cache.
            self.set_live(true);
            tracing::info!("user cache: listening for invalidations");
            let mut keepalive = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    id = rx.recv() => match id {
                        Some(id) => self.invalidate(&id).await,
                        None => return Ok(()),
                    },
                    _ = keepalive.tick() => {
                        tokio::time::timeout(Duration::from_secs(5), client.simple_query(""))
                            .await
                            .unwrap_or(Ok(Vec::new()))?;
                    }
                }
            }
        }
        .await;
        driver.abort();
        result
    }
}
