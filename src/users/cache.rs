//! The user cache, coherent across replicas: every write sends a PostgreSQL `NOTIFY` on
//! [`CHANNEL`](crate::db::notify::CHANNEL) in its transaction, and every replica listens on a
//! connection of its own (to `DATABASE_DIRECT_URL` when set) and drops the entry. While that
//! connection is down (notifications may be missed) the cache is bypassed; the TTL bounds
//! staleness should anything slip through.
//!
//! Whether notifications arrive at all is found out, not assumed: a `LISTEN` through a transaction
//! pooler is accepted and then hears nothing, because the pooler hands the listening server
//! connection to other clients. So the listener sends a probe notification through the pool and
//! waits for it ([`PROBE_WAIT`]) before the cache is used, and again every [`PROBE_EVERY`]; a probe
//! that does not come back bypasses the cache (logged, and `clerk_users_user_cache_bypassed` in
//! `/metrics`).
//!
//! Stale-if-error: an entry was last confirmed when the listener last heard everything (up to the
//! moment it was lost). While the database itself cannot be reached, [`UserCache::get_stale`]
//! still hands out such an entry for up to the stale limit after that moment, so entries are kept
//! (within the same size bound) past their TTL for that purpose, and none older than both
//! together is ever served. When the listener is back, every entry held is dropped: notifications
//! sent just before the outage may have been lost.
//!
//! The map is `quick_cache`'s (sharded; its eviction, a Clock-PRO variant, keeps entries read
//! again over one-off ones): a hit is a shard's read lock and a clone of an `Arc`. Expiry is the
//! entry's own `read_at`, checked on every read, so nothing runs in the background and an expired
//! entry only waits to be evicted or replaced.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

use super::Known;
use crate::{
    db::{self, notify::CHANNEL},
    metrics::Metrics,
    net::postgres::{ConnectOptions, describe},
};

/// How long a probe notification may take to come back before the cache is bypassed.
pub const PROBE_WAIT: Duration = Duration::from_secs(1);
/// How often a probe goes out while listening (it also shows that the connection is alive).
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// Probe payloads start with this, which no Clerk user id does.
const PROBE_PREFIX: &str = "probe:";

struct Inner {
    cache: quick_cache::sync::Cache<String, Entry>,
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
        let cache =
            quick_cache::sync::Cache::new(usize::try_from(max_entries).unwrap_or(usize::MAX));
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
    pub fn get(&self, clerk_id: &str) -> Option<Arc<Known>> {
        let inner = self.0.as_ref()?;
        if !inner.live.load(Ordering::Acquire) {
            return None;
        }
        let known = inner
            .cache
            .get(clerk_id)
            .filter(|e| e.read_at.elapsed() < inner.ttl)
            .map(|e| e.known);
        inner.metrics.user_cache(known.is_some());
        known
    }

    /// For a database that cannot be reached: the entry held for `clerk_id` and how long ago it
    /// was last confirmed, when that is within the stale limit. While the listener still listens
    /// every entry is confirmed up to now; once it is lost, up to the moment it was lost.
    pub fn get_stale(&self, clerk_id: &str) -> Option<(Arc<Known>, Duration)> {
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
        let entry = inner
            .cache
            .get(clerk_id)
            .filter(|e| e.read_at.elapsed() < inner.ttl + inner.stale_limit)?;
        Some((entry.known, age))
    }

    /// Take before reading a row from the database; pass to [`UserCache::insert`].
    pub fn epoch(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |i| i.epoch.load(Ordering::Acquire))
    }

    /// Cache a row read at `epoch`, unless something was invalidated since.
    pub fn insert(&self, known: &Arc<Known>, epoch: u64) {
        let Some(inner) = &self.0 else { return };
        if inner.live.load(Ordering::Acquire) && inner.epoch.load(Ordering::Acquire) == epoch {
            let entry = Entry {
                known: Arc::clone(known),
                read_at: Instant::now(),
            };
            inner.cache.insert(known.row.clerk_id.clone(), entry);
        }
    }

    /// Drop one user (a write here, or a notification from another replica).
    pub fn invalidate(&self, clerk_id: &str) {
        if let Some(inner) = &self.0 {
            inner.epoch.fetch_add(1, Ordering::AcqRel);
            inner.cache.remove(clerk_id);
        }
    }

    /// Listening from now on: what is held was not confirmed while the listener was away.
    fn listening(&self) {
        if let Some(inner) = &self.0 {
            inner.epoch.fetch_add(1, Ordering::AcqRel);
            inner.cache.clear();
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

    /// Enabled, but not serving, because notifications are not known to arrive.
    pub fn bypassed(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|i| !i.live.load(Ordering::Acquire))
    }

    pub fn entries(&self) -> u64 {
        self.0.as_ref().map_or(0, |i| i.cache.len() as u64)
    }

    /// Listen for other replicas' writes until aborted: a connection of its own, reconnected with
    /// backoff; a probe that does not come back counts as a lost connection.
    pub fn spawn_listener(
        &self,
        options: ConnectOptions,
        db: db::Database,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.0.as_ref()?;
        let cache = self.clone();
        Some(tokio::spawn(async move {
            let mut failures: u32 = 0;
            loop {
                match cache.listen(&options, &db).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        if failures == 1 {
                            tracing::warn!(error = %e, "user cache: bypassed");
                        }
                    }
                }
                cache.lost();
                tokio::time::sleep(Duration::from_millis(100 << failures.min(6))).await;
            }
        }))
    }

    async fn listen(&self, options: &ConnectOptions, db: &db::Database) -> Result<(), String> {
        let (client, mut conn) = options
            .config
            .expose()
            .connect(options.tls())
            .await
            .map_err(|e| format!("cannot connect to listen: {}", describe(&e)))?;
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
            client
                .batch_execute(&format!("listen {CHANNEL}"))
                .await
                .map_err(|e| format!("listen failed: {}", describe(&e)))?;
            loop {
                self.probe(db, &mut rx).await?;
                if !self
                    .0
                    .as_ref()
                    .is_some_and(|i| i.live.load(Ordering::Acquire))
                {
                    // From here on every write is heard: start from an empty cache.
                    self.listening();
                    tracing::info!("user cache: listening for invalidations");
                }
                let next = tokio::time::sleep(PROBE_EVERY);
                tokio::pin!(next);
                loop {
                    tokio::select! {
                        id = rx.recv() => match id {
                            Some(id) => self.heard(&id),
                            None => return Err("the listening connection closed".to_string()),
                        },
                        _ = &mut next => break,
                    }
                }
            }
        }
        .await;
        driver.abort();
        result
    }

    /// Send a probe through the pool and wait for it on the listening connection, acting on
    /// every other notification meanwhile.
    async fn probe(
        &self,
        db: &db::Database,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    ) -> Result<(), String> {
        let payload = format!("{PROBE_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let sent = async {
            let client = db.client().await?;
            db::notify::user_changed(&client, &payload).await
        };
        sent.await
            .map_err(|e| format!("cannot send the probe notification: {e}"))?;
        let deadline = tokio::time::sleep(PROBE_WAIT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                id = rx.recv() => match id {
                    Some(id) if id == payload => return Ok(()),
                    Some(id) => self.heard(&id),
                    None => return Err("the listening connection closed".to_string()),
                },
                _ = &mut deadline => return Err(format!(
                    "a notification sent through DATABASE_URL did not arrive on the LISTEN \
                     connection within {} ms (a transaction pooler keeps no LISTEN: set \
                     DATABASE_DIRECT_URL); every lookup reads the database",
                    PROBE_WAIT.as_millis()
                )),
            }
        }
    }

    /// A notification: another replica (or this one) changed a user. Probes change nothing.
    fn heard(&self, id: &str) {
        if !id.starts_with(PROBE_PREFIX) {
            self.invalidate(id);
        }
    }
}
