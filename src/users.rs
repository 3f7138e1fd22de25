//! Get-or-create (contract §5): a known user is answered from the database; a user never seen is
//! fetched from Clerk once (one flight per `sub` in this process) and stored with one upsert.

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::{
    clerk::{ClerkApi, ClerkError},
    db::{self, DbError, users::UserRow},
    metrics::Metrics,
};

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Clerk(#[from] ClerkError),
}

#[derive(Clone)]
pub struct Users {
    pool: Pool,
    clerk: ClerkApi,
    /// Concurrent first sights of one `sub` share a single load (moka coalesces `try_get_with`).
    /// Entries are dropped as soon as the load ends: rows are read from the database, not here.
    first_sight: moka::future::Cache<String, Arc<UserRow>>,
    metrics: Metrics,
}

impl Users {
    pub fn new(pool: Pool, clerk: ClerkApi, metrics: Metrics) -> Self {
        let first_sight = moka::future::Cache::builder().max_capacity(10_000).build();
        Self {
            pool,
            clerk,
            first_sight,
            metrics,
        }
    }

    pub async fn get_or_create(&self, clerk_id: &str) -> Result<UserRow, UsersError> {
        if let Some(row) = self.find(clerk_id).await? {
            self.metrics.user_lookup(true);
            return Ok(row);
        }
        self.metrics.user_lookup(false);
        let result = self
            .first_sight
            .try_get_with_by_ref(clerk_id, async {
                // Another flight may have finished between our miss and taking this one.
                if let Some(row) = self.find(clerk_id).await? {
                    return Ok(Arc::new(row));
                }
                let user = self.clerk.get_user(clerk_id).await?;
                if user.id != clerk_id {
                    tracing::error!("Clerk answered with another user's id");
                    return Err(UsersError::Clerk(ClerkError::Unavailable {
                        retry_after: std::time::Duration::from_secs(5),
                        reason: "mismatched user id".into(),
                    }));
                }
                let client = self.pool.get().await.map_err(DbError::from)?;
                let row = db::users::upsert_from_clerk(&client, &user).await?;
                tracing::info!(user_id = %row.id, "first sight: user stored");
                Ok::<_, UsersError>(Arc::new(row))
            })
            .await;
        self.first_sight.invalidate(clerk_id).await;
        match result {
            Ok(row) => Ok((*row).clone()),
            Err(shared) => Err(unshare(&shared)),
        }
    }

    async fn find(&self, clerk_id: &str) -> Result<Option<UserRow>, DbError> {
        let client = self.pool.get().await?;
        db::users::find_by_clerk_id(&client, clerk_id).await
    }
}

/// moka hands every waiter the same `Arc` error; each caller needs its own value.
fn unshare(e: &UsersError) -> UsersError {
    match e {
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
    }
}
