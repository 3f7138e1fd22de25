//! Get-or-create (README, "First sight of a user"): a known user is answered from the cache or the database; a user
//! never seen is fetched from Clerk once (one flight per `sub` in this process) and stored with one
//! upsert. Every write announces itself to the other replicas' caches (`cache`).

pub mod cache;

use std::sync::{Arc, OnceLock};

use crate::{
    clerk::{ClerkApi, ClerkError, time_of_millis},
    db::{self, Database, DbError, users::UserRow},
    merge_patch::merge_patch,
    metrics::Metrics,
    users::cache::UserCache,
    webhooks::Action,
};

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Clerk(#[from] ClerkError),
    /// The merged `metadata` would exceed [`MAX_METADATA_BYTES`].
    #[error("metadata too large")]
    MetadataTooLarge,
}

/// A user's row as read or stored, shared by the cache and the requests it answers.
#[derive(Debug)]
pub struct Known {
    pub row: UserRow,
    /// The API's JSON of `row`, made at most once however often a cached row is served
    /// (`api::payload::JsonBody::encode_once`).
    pub rendered: OnceLock<bytes::Bytes>,
}

impl Known {
    pub fn new(row: UserRow) -> Arc<Self> {
        Arc::new(Self {
            row,
            rendered: OnceLock::new(),
        })
    }
}

/// The largest `metadata` object stored, as JSON text.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct Users {
    db: Database,
    clerk: ClerkApi,
    /// Concurrent first sights of one `sub` share a single load (moka coalesces `try_get_with`).
    /// Entries are dropped as soon as the load ends: rows are read from the database, not here.
    first_sight: moka::future::Cache<String, Arc<Known>>,
    cache: UserCache,
    metrics: Metrics,
}

impl Users {
    pub fn new(db: Database, clerk: ClerkApi, cache: UserCache, metrics: Metrics) -> Self {
        let first_sight = moka::future::Cache::builder().max_capacity(10_000).build();
        Self {
            db,
            clerk,
            first_sight,
            cache,
            metrics,
        }
    }

    pub fn cache(&self) -> &UserCache {
        &self.cache
    }

    pub fn clerk(&self) -> &ClerkApi {
        &self.clerk
    }

    pub async fn get_or_create(&self, clerk_id: &str) -> Result<Arc<Known>, UsersError> {
        if let Some(known) = self.cache.get(clerk_id) {
            self.metrics.user_lookup(true);
            return Ok(known);
        }
        // Boxed: the database and first-sight paths make a large future, which every request's
        // future would otherwise carry (and copy) even when the cache answers.
        Box::pin(self.load(clerk_id)).await
    }

    /// A user the cache does not hold: the database, else Clerk once.
    async fn load(&self, clerk_id: &str) -> Result<Arc<Known>, UsersError> {
        let epoch = self.cache.epoch();
        match self.find(clerk_id).await {
            Ok(Some(row)) => {
                let known = Known::new(row);
                self.cache.insert(&known, epoch);
                self.metrics.user_lookup(true);
                return Ok(known);
            }
            Ok(None) => {}
            // Stale-if-error: a known user outlives a database that cannot be reached.
            Err(e @ DbError::Unreachable(_)) => {
                return match self.cache.get_stale(clerk_id) {
                    Some((known, age)) => {
                        self.metrics.user_lookup(true);
                        self.metrics.stale_answer(age);
                        Ok(known)
                    }
                    None => Err(e.into()),
                };
            }
            Err(e) => return Err(e.into()),
        }
        self.metrics.user_lookup(false);
        let result = self
            .first_sight
            .try_get_with_by_ref(clerk_id, async {
                // Another flight may have finished between our miss and taking this one.
                if let Some(row) = self.find(clerk_id).await? {
                    return Ok(Known::new(row));
                }
                let user = self.clerk.get_user(clerk_id).await?;
                if user.id != clerk_id {
                    tracing::error!("Clerk answered with another user's id");
                    return Err(UsersError::Clerk(ClerkError::Unavailable {
                        retry_after: std::time::Duration::from_secs(5),
                        reason: "mismatched user id".into(),
                    }));
                }
                let client = self.db.client().await?;
                let row = db::users::upsert_from_clerk(&client, &user).await?;
                // Another replica may have stored (and cached) an older version meanwhile.
                db::notify::user_changed(&client, clerk_id).await?;
                tracing::info!(user_id = %row.id, "first sight: user stored");
                Ok::<_, UsersError>(Known::new(row))
            })
            .await;
        self.first_sight.invalidate(clerk_id).await;
        self.cache.invalidate(clerk_id);
        result.map_err(|shared| unshare(&shared))
    }

    /// Apply a JSON Merge Patch (RFC 7396) to the user's `metadata`, creating the user first on
    /// first sight. Read, merge and write happen under the row's lock, so concurrent patches
    /// compose instead of overwriting each other.
    pub async fn patch_metadata(
        &self,
        clerk_id: &str,
        patch: &serde_json::Value,
    ) -> Result<UserRow, UsersError> {
        self.get_or_create(clerk_id).await?;
        let mut client = self.db.client().await?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        // Deleted between the two steps: it is created again, as a GET would.
        let Some(mut metadata) = db::users::lock_metadata(&tx, clerk_id).await? else {
            drop(tx);
            return Box::pin(self.patch_metadata(clerk_id, patch)).await;
        };
        merge_patch(&mut metadata, patch);
        if !metadata.is_object() {
            metadata = serde_json::Value::Object(serde_json::Map::new());
        }
        if metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(UsersError::MetadataTooLarge);
        }
        let row = db::users::set_metadata(&tx, clerk_id, &metadata).await?;
        db::notify::user_changed(&tx, clerk_id).await?;
        tx.commit().await.map_err(DbError::from)?;
        self.cache.invalidate(clerk_id);
        row.ok_or_else(|| DbError::Other("locked row vanished".into()).into())
    }

    /// Act on a verified webhook delivery, once per Svix id: the id is recorded in the same
    /// transaction as the change, so a replay (or a retry after a failure) is handled exactly once.
    /// `false` when the id was already processed.
    pub async fn apply_webhook(
        &self,
        svix_id: &str,
        kind: &str,
        action: &Action,
    ) -> Result<bool, UsersError> {
        let mut client = self.db.client().await?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        if !db::webhooks::record_event(&tx, svix_id, kind).await? {
            return Ok(false);
        }
        let changed = match action {
            Action::Upsert(user) => Some(user.id.as_str()),
            Action::Delete { clerk_id, .. } => Some(clerk_id.as_str()),
            Action::Ignore => None,
        };
        if let Some(clerk_id) = changed {
            db::notify::user_changed(&tx, clerk_id).await?;
        }
        match action {
            Action::Upsert(user) => {
                let version = time_of_millis(user.updated_at)
                    .ok_or_else(|| DbError::Other("updated_at out of range".into()))?;
                if db::webhooks::deleted_since(&tx, &user.id, version).await? {
                    tracing::info!("webhook: older version of a deleted user ignored");
                } else {
                    db::users::upsert_from_clerk(&tx, user).await?;
                }
            }
            Action::Delete { clerk_id, at } => {
                let at = time_of_millis(*at)
                    .ok_or_else(|| DbError::Other("timestamp out of range".into()))?;
                db::users::delete_by_clerk_id(&tx, clerk_id).await?;
                db::webhooks::record_deletion(&tx, clerk_id, at).await?;
            }
            Action::Ignore => {}
        }
        // Pruning is cheap (indexed) but needless on every delivery.
        if fastrand::u8(..16) == 0 {
            db::webhooks::prune_events(&tx).await?;
        }
        tx.commit().await.map_err(DbError::from)?;
        if let Some(clerk_id) = changed {
            self.cache.invalidate(clerk_id);
        }
        Ok(true)
    }

    /// Delete the local record; the next request creates it again from Clerk.
    pub async fn delete(&self, clerk_id: &str) -> Result<bool, UsersError> {
        let mut client = self.db.client().await?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        let deleted = db::users::delete_by_clerk_id(&tx, clerk_id).await?;
        db::notify::user_changed(&tx, clerk_id).await?;
        tx.commit().await.map_err(DbError::from)?;
        self.cache.invalidate(clerk_id);
        Ok(deleted)
    }

    async fn find(&self, clerk_id: &str) -> Result<Option<UserRow>, DbError> {
        let client = self.db.client().await?;
        db::users::find_by_clerk_id(&client, clerk_id)
            .await
            .map_err(|e| self.db.observed(e))
    }
}

/// moka hands every waiter the same `Arc` error; each caller needs its own value.
fn unshare(e: &UsersError) -> UsersError {
    match e {
        UsersError::Db(DbError::Unreachable(m)) => DbError::Unreachable(m.clone()).into(),
        UsersError::Db(DbError::Unavailable(m)) => DbError::Unavailable(m.clone()).into(),
        UsersError::Db(DbError::Other(m)) => DbError::Other(m.clone()).into(),
        UsersError::Clerk(ClerkError::NotFound) => ClerkError::NotFound.into(),
        UsersError::Clerk(ClerkError::Misconfigured(s)) => ClerkError::Misconfigured(*s).into(),
        UsersError::Clerk(ClerkError::Unavailable {
            retry_after,
            reason,
        }) => ClerkError::Unavailable {
            retry_after: *retry_after,
            reason: reason.clone(),
        }
        .into(),
        UsersError::MetadataTooLarge => UsersError::MetadataTooLarge,
    }
}
