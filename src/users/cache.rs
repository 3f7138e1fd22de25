//! The user cache, coherent across replicas: every write sends a PostgreSQL `NOTIFY` on
//! [`CHANNEL`](crate::db::notify::CHANNEL) in its transaction, and every replica listens on a
//! connection of its own and drops the entry. While that connection is down (notifications may be
//! missed) the cache is bypassed; the TTL bounds staleness should anything slip through.
//!
//! Stale-if-error: an entry was last confirmed when the listener last heard everything (up to the
//! moment it was lost). While the database itself cannot be reached, [`UserCache::get_stale`]
//! still hands out such an entry for up to the stale limit after that moment, so entries are kept
//! (within the same size bound) past their TTL for that purpose. When the listener is back, every
//! entry held is dropped: notifications sent just before the outage may have been lost.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use super::Known;
use crate::{db::notify::CHANNEL, metrics::Metrics, settings::Secret};

struct Inner {
    cache: moka::future::Cache<String, Entry>,
    /// An entry is served as fresh for this long after it was read.
    ttl: Duration,
    /// How long after its last confirmation an entry may be served while the database is down.
    stale_limit: Duration,
    /// True while the listener is connected and listening.
    live: AtomicBool,
    /// When the listener was last lost after listening: every entry held was confirmed up to then.
    lost_at: Mutex<Option<Instant>>,
    /// Bumped by every invalidation: a row read before an invalidation is not cached after it.
    epoch: AtomicU64,
    metrics: Metrics,
}

#[derive(Clone)]
struct Entry {
    known: Arc<Known>,
    read_at: Instant,
}

/// Cheap to clone. A disabled cache (size or TTL 0) holds nothing and never listens.
#[derive(Clone)]
pub struct UserCache(Option<Arc<Inner>>);

impl UserCache {
    /// `stale_limit`: how long past the listener's loss an entry still serves while the database
    /// is unreachable (0: never).
    pub fn new(max_entries: u64, ttl: Duration, stale_limit: Duration, metrics: Metrics) -> Self {
        if max_entries == 0 || ttl.is_zero() {
            return Self(None);
        }
        let cache = moka::future::Cache::builder()
            .max_capacity(max_entries)
            .time_to_live(ttl + stale_limit)
            .build();
        Self(Some(Arc::new(Inner {
            cache,
            ttl,
            stale_limit,
            live: AtomicBool::new(false),
            lost_at: Mutex::new(None),
            epoch: AtomicU64::new(0),
            metrics,
        })))
    }

    pub fn disabled() -> Self {
        Self(None)
    }

    /// A cached row read less than the TTL ago, only while invalidations are being received.
    pub async fn get(&self, clerk_id: &str) -> Option<Arc<Known>> {
        let inner = self.0.as_ref()?;
        if !inner.live.load(Ordering::Acquire) {
            return None;
        }
        let known = inner
            .cache
            .get(clerk_id)
            .await
            .filter(|e| e.read_at.elapsed() < inner.ttl)
            .map(|e| e.known);
        inner.metrics.user_cache(known.is_some());
        known
    }

    /// For a database that cannot be reached: the entry held for `clerk_id` and how long ago it
    /// was last confirmed, when that is within the stale limit. While the listener still listens
    /// every entry is confirmed up to now; once it is lost, up to the moment it was lost.
    pub async fn get_stale(&self, clerk_id: &str) -> Option<(Arc<Known>, Duration)> {
        let inner = self.0.as_ref()?;
        let age = if inner.live.load(Ordering::Acquire) {
            Duration::ZERO
        } else {
            inner
                .lost_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()?
                .elapsed()
        };
        if age >= inner.stale_limit {
            return None;
        }
        let entry = inner.cache.get(clerk_id).await?;
        Some((entry.known, age))
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
            let entry = Entry {
                known: Arc::clone(known),
                read_at: Instant::now(),
            };
            inner.cache.insert(known.row.clerk_id.clone(), entry).await;
        }
    }

    /// Drop one user (a write here, or a notification from another replica).
    pub async fn invalidate(&self, clerk_id: &str) {
        if let Some(inner) = &self.0 {
            inner.epoch.fetch_add(1, Ordering::AcqRel);
            inner.cache.invalidate(clerk_id).await;
        }
    }

    /// Listening from now on: what is held was not confirmed while the listener was away.
    fn listening(&self) {
        if let Some(inner) = &self.0 {
            inner.epoch.fetch_add(1, Ordering::AcqRel);
            inner.cache.invalidate_all();
            *inner.lost_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
            inner.live.store(true, Ordering::Release);
        }
    }

    /// The listener is gone: bypass the cache, but keep what is held for [`UserCache::get_stale`].
    fn lost(&self) {
        if let Some(inner) = &self.0 {
            inner.epoch.fetch_add(1, Ordering::AcqRel);
            if inner.live.swap(false, Ordering::AcqRel) {
                *inner.lost_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
        }
    }

    /// True while invalidations are being received (the cache serves only then).
    pub fn is_listening(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|i| i.live.load(Ordering::Acquire))
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
                cache.lost();
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
            self.listening();
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
