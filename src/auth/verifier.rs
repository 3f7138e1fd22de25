//! The verifier: the token rules against the held keys, the unknown-`kid` refetch within its
//! limits, and a cache of tokens that already passed, which never outlives a token's `exp` or its
//! key set.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    AuthError,
    keys::KeyStore,
    token::{self, Claims, Policy},
};
use crate::metrics::Metrics;

/// Verifies tokens against the held keys; refetches keys for an unknown `kid` within the limits of the README's "Signing keys".
#[derive(Clone)]
pub struct Verifier {
    pub keys: KeyStore,
    pub policy: Policy,
    /// Tokens that passed every check, by (key set generation, SHA-256 of the token). A hit skips
    /// the RSA verification; an entry serves until the token's `exp` plus the skew (checked on
    /// every read), and a new key set (a new generation) misses every entry. `quick_cache`: a hit
    /// is a shard's read lock, with no bookkeeping queued for later.
    cache: Option<Arc<quick_cache::sync::Cache<CacheKey, Verified>>>,
    metrics: Metrics,
}

#[derive(Clone)]
struct Verified {
    claims: Arc<Claims>,
    /// The token's `exp` plus the skew.
    until: Instant,
}

/// (key set generation, SHA-256 of the token). The generation beside the digest rather than hashed
/// into it: a one-shot SHA-256, which needs no digest context (aws-lc allocates one for each).
type CacheKey = (u64, [u8; 32]);

fn cache_key(generation: u64, raw: &str) -> CacheKey {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, raw.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    (generation, key)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Verifier {
    /// `cache_entries`: how many verified tokens to remember (0: none).
    pub fn new(keys: KeyStore, policy: Policy, cache_entries: u64, metrics: Metrics) -> Self {
        let cache = (cache_entries > 0).then(|| {
            Arc::new(quick_cache::sync::Cache::new(
                usize::try_from(cache_entries).unwrap_or(usize::MAX),
            ))
        });
        Self {
            keys,
            policy,
            cache,
            metrics,
        }
    }

    /// Verified tokens held, for `/metrics`.
    pub fn cached_tokens(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.len() as u64)
    }

    /// Checks 1–10 of the token rules, or the verified-token cache. Shared: a cache hit copies nothing.
    pub async fn verify(&self, raw: &str) -> Result<Arc<Claims>, AuthError> {
        // The cache is consulted only while the keys are usable, so stale keys still give 503.
        let key = match (&self.cache, self.keys.current()) {
            (Some(cache), Ok(set)) => {
                let key = cache_key(set.generation, raw);
                if let Some(hit) = cache.get(&key).filter(|v| v.until > Instant::now()) {
                    self.metrics.token_cache(true);
                    self.metrics.token_verification("ok");
                    return Ok(hit.claims);
                }
                self.metrics.token_cache(false);
                Some((cache, key))
            }
            _ => None,
        };
        // Boxed: the full check (and the keys' refetch) is a large future that a cache hit need not
        // carry.
        let result = Box::pin(self.verify_inner(raw)).await.map(Arc::new);
        if let (Some((cache, key)), Ok(claims)) = (key, &result) {
            let until = claims.expires_at + self.policy.clock_skew_secs as f64;
            let ttl = Duration::from_secs_f64((until - now()).clamp(0.0, 86_400.0));
            cache.insert(
                key,
                Verified {
                    claims: Arc::clone(claims),
                    until: Instant::now() + ttl,
                },
            );
        }
        self.metrics.token_verification(match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        });
        result
    }

    async fn verify_inner(&self, raw: &str) -> Result<Claims, AuthError> {
        // Checks 1–2 need no keys: a malformed token is the caller's fault even while keys are out.
        let parsed = token::parse(raw).map_err(AuthError::Token)?;
        let set = match self.keys.current() {
            Ok(set) => set,
            Err(why) => {
                // Never loaded or too old (Clerk down): one rate-limited fetch before giving up.
                match self
                    .keys
                    .refetch_for_unknown_kid(self.keys.generation())
                    .await
                {
                    Some(set) => set,
                    None => return Err(AuthError::KeysUnavailable(why)),
                }
            }
        };
        if set.get(parsed.kid()).is_none() {
            let fresh = self.keys.refetch_for_unknown_kid(set.generation).await;
            let set = fresh.unwrap_or(set);
            return parsed
                .check(&set, now(), &self.policy)
                .map_err(AuthError::Token);
        }
        parsed
            .check(&set, now(), &self.policy)
            .map_err(AuthError::Token)
    }
}
