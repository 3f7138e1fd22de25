//! Signing keys (README, "Signing keys"): the key set of the one configured issuer, its background refresher
//! and the rate-limited refetch for an unknown `kid`. This is the only code that fetches keys.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::settings::{ClerkSettings, KeySource, Secret};

/// The keys of one issuer at one moment. Immutable: a refresh builds a new set.
pub struct KeySet {
    /// The issuer these keys sign for; the store serves exactly one.
    pub issuer: String,
    keys: Keys,
    /// When this set was fetched; a pinned key never ages.
    pub fetched_at: Option<Instant>,
    /// Bumped on every successful fetch: waiters on a refetch compare it to see that one happened.
    pub generation: u64,
}

enum Keys {
    ByKid(HashMap<String, DecodingKey>),
    /// `CLERK_JWT_KEY`: used whatever the `kid` says.
    Pinned(DecodingKey),
}

impl KeySet {
    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        match &self.keys {
            Keys::ByKid(map) => map.get(kid),
            Keys::Pinned(key) => Some(key),
        }
    }

    pub fn len(&self) -> usize {
        match &self.keys {
            Keys::ByKid(map) => map.len(),
            Keys::Pinned(_) => 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A set holding the one pinned key (SPKI DER).
    pub fn pinned(issuer: &str, spki_der: &[u8]) -> Self {
        // Re-encode as the (n, e) components so the pinned key and fetched keys verify alike.
        let key = aws_lc_rs::signature::RsaSubjectPublicKey::from_der(spki_der)
            .map(|k| {
                let comps = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(&k);
                DecodingKey::from_rsa_raw_components(&comps.n, &comps.e)
            })
            .ok()
            .unwrap_or_else(|| DecodingKey::from_rsa_der(spki_der));
        Self {
            issuer: issuer.to_string(),
            keys: Keys::Pinned(key),
            fetched_at: None,
            generation: 0,
        }
    }

    /// Parse a JWKS document. Keys that are not RSA signing keys for RS256 are skipped.
    pub fn from_jwks(issuer: &str, body: &[u8], generation: u64) -> Result<Self, KeyError> {
        #[derive(Deserialize)]
        struct Jwks {
            keys: Vec<serde_json::Value>,
        }
        #[derive(Deserialize)]
        struct Jwk {
            kty: String,
            kid: String,
            #[serde(rename = "use")]
            use_: Option<String>,
            alg: Option<String>,
            n: String,
            e: String,
        }
        let doc: Jwks = serde_json::from_slice(body).map_err(|_| KeyError::BadDocument)?;
        let mut map = HashMap::new();
        for raw in doc.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
                continue;
            };
            let usable = jwk.kty == "RSA"
                && jwk.use_.as_deref().is_none_or(|u| u == "sig")
                && jwk.alg.as_deref().is_none_or(|a| a == "RS256")
                && !jwk.kid.is_empty();
            if !usable {
                continue;
            }
            let (Ok(n), Ok(e)) = (
                URL_SAFE_NO_PAD.decode(&jwk.n),
                URL_SAFE_NO_PAD.decode(&jwk.e),
            ) else {
                continue;
            };
            let n_bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if n_bits < 2048 || e.is_empty() {
                continue;
            }
            map.entry(jwk.kid)
                .or_insert_with(|| DecodingKey::from_rsa_raw_components(&n, &e));
        }
        if map.is_empty() {
            return Err(KeyError::NoUsableKey);
        }
        Ok(Self {
            issuer: issuer.to_string(),
            keys: Keys::ByKid(map),
            fetched_at: Some(Instant::now()),
            generation,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("request failed: {0}")]
    Http(String),
    #[error("JWKS endpoint answered {0}")]
    Status(u16),
    #[error("JWKS document is not valid JSON of the expected shape")]
    BadDocument,
    #[error("JWKS document holds no RSA signing key for RS256")]
    NoUsableKey,
    #[error("JWKS document is larger than {0} bytes")]
    TooLarge(usize),
}

/// Why no key set can be used right now (a 503: not the caller's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    NeverLoaded,
    Stale,
}

const MAX_JWKS_BYTES: usize = 1 << 20;

struct Remote {
    http: reqwest::Client,
    url: Url,
    /// The Backend API secret, only when the JWKS URL is on the Backend API's origin.
    bearer: Option<Secret<String>>,
}

struct Inner {
    issuer: String,
    remote: Option<Remote>,
    current: RwLock<Option<Arc<KeySet>>>,
    /// Serializes fetches and remembers the last unknown-kid attempt.
    refetch: Mutex<Option<Instant>>,
    refresh_every: Duration,
    max_stale: Duration,
    unknown_kid_interval: Duration,
    timeout: Duration,
    metrics: crate::metrics::Metrics,
}

/// The held key set and the means to refresh it. Cheap to clone.
#[derive(Clone)]
pub struct KeyStore(Arc<Inner>);

impl KeyStore {
    pub fn new(
        settings: &ClerkSettings,
        http: reqwest::Client,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        let (remote, current) = match &settings.keys {
            KeySource::Pem { spki_der } => (
                None,
                Some(Arc::new(KeySet::pinned(&settings.issuer, spki_der))),
            ),
            KeySource::Jwks { url, send_secret } => (
                Some(Remote {
                    http,
                    url: url.clone(),
                    bearer: send_secret.then(|| settings.secret_key.clone()),
                }),
                None,
            ),
        };
        Self(Arc::new(Inner {
            issuer: settings.issuer.clone(),
            remote,
            current: RwLock::new(current),
            refetch: Mutex::new(None),
            refresh_every: settings.jwks_refresh,
            max_stale: settings.jwks_max_stale,
            unknown_kid_interval: settings.jwks_unknown_kid_interval,
            timeout: settings.http_timeout,
            metrics,
        }))
    }

    /// The set to verify with, unless none was ever loaded or the last one is too old.
    pub fn current(&self) -> Result<Arc<KeySet>, Unavailable> {
        let guard = self.0.current.read().unwrap_or_else(|e| e.into_inner());
        let set = guard.as_ref().ok_or(Unavailable::NeverLoaded)?;
        if set
            .fetched_at
            .is_some_and(|t| t.elapsed() > self.0.max_stale)
        {
            return Err(Unavailable::Stale);
        }
        Ok(set.clone())
    }

    /// Seconds since the held set was fetched (0 for a pinned key), for `/metrics`.
    pub fn age(&self) -> Option<Duration> {
        let guard = self.0.current.read().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .map(|s| s.fetched_at.map(|t| t.elapsed()).unwrap_or_default())
    }

    pub fn is_ready(&self) -> bool {
        self.current().is_ok()
    }

    /// The generation of the held set (0 when none): see [`KeyStore::refetch_for_unknown_kid`].
    pub fn generation(&self) -> u64 {
        let guard = self.0.current.read().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map_or(0, |s| s.generation)
    }

    /// Fetch the JWKS once, bounded by the timeout, and hold it if usable. Callers hold the
    /// `refetch` lock, so fetches never overlap.
    async fn fetch(&self) -> Result<Arc<KeySet>, KeyError> {
        let Some(remote) = &self.0.remote else {
            return self.current().map_err(|_| KeyError::NoUsableKey);
        };
        let result = async {
            let mut req = remote.http.get(remote.url.clone()).timeout(self.0.timeout);
            if let Some(secret) = &remote.bearer {
                req = req.bearer_auth(secret.expose());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| KeyError::Http(crate::net::describe(&e)))?;
            if !resp.status().is_success() {
                return Err(KeyError::Status(resp.status().as_u16()));
            }
            let body = crate::net::read_limited(resp, MAX_JWKS_BYTES)
                .await
                .map_err(|e| {
                    e.map_or(KeyError::TooLarge(MAX_JWKS_BYTES), |e| {
                        KeyError::Http(crate::net::describe(&e))
                    })
                })?;
            KeySet::from_jwks(&self.0.issuer, &body, self.generation() + 1)
        }
        .await;
        match result {
            Ok(set) => {
                let set = Arc::new(set);
                tracing::info!(
                    keys = set.len(),
                    generation = set.generation,
                    "signing keys loaded"
                );
                *self.0.current.write().unwrap_or_else(|e| e.into_inner()) = Some(set.clone());
                self.0.metrics.key_fetch("ok");
                Ok(set)
            }
            Err(e) => {
                tracing::warn!(error = %e, url = %remote.url, "fetching signing keys failed; keeping the last good set");
                self.0.metrics.key_fetch("error");
                Err(e)
            }
        }
    }

    /// A scheduled refresh (start-up and background): always fetches.
    pub async fn refresh(&self) -> Result<(), KeyError> {
        let _guard = self.0.refetch.lock().await;
        self.fetch().await.map(|_| ())
    }

    /// A token named a `kid` that `seen` does not hold. At most one fetch per interval, shared by
    /// everyone waiting: a waiter that finds a newer set than the one it saw uses that set; one
    /// that arrives within the interval after an attempt gets `None` without any network call.
    pub async fn refetch_for_unknown_kid(&self, seen_generation: u64) -> Option<Arc<KeySet>> {
        self.0.remote.as_ref()?;
        let mut last = self.0.refetch.lock().await;
        if self.generation() != seen_generation {
            return self.current().ok();
        }
        if last.is_some_and(|t| t.elapsed() < self.0.unknown_kid_interval) {
            return None;
        }
        *last = Some(Instant::now());
        self.fetch().await.ok()
    }

    /// Keep the set fresh: refresh before it is `refresh_every` old; after a failure retry with
    /// backoff (1 s doubling, at most a minute or the refresh interval). Runs until aborted.
    pub fn spawn_refresher(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.0.remote.as_ref()?;
        let store = self.clone();
        Some(tokio::spawn(async move {
            let mut failures: u32 = 0;
            loop {
                let wait = if failures == 0 {
                    match store.age() {
                        // Refresh at 90% of the interval, so the set never reaches its age limit.
                        Some(age) => (store.0.refresh_every.mul_f64(0.9)).saturating_sub(age),
                        None => Duration::ZERO,
                    }
                } else {
                    let backoff = Duration::from_secs(1u64 << failures.min(6));
                    backoff
                        .min(store.0.refresh_every)
                        .min(Duration::from_secs(60))
                };
                tokio::time::sleep(wait).await;
                match store.refresh().await {
                    Ok(()) => failures = 0,
                    Err(_) => failures = failures.saturating_add(1),
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(kid: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut n = vec![0xc5u8];
        n.extend(std::iter::repeat_n(0x11u8, 255));
        let mut v = serde_json::json!({"kty": "RSA", "kid": kid, "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    }

    #[test]
    fn skips_keys_that_are_not_rs256_signing_keys() {
        let doc = serde_json::json!({"keys": [
            jwk("good", serde_json::json!({"use": "sig", "alg": "RS256"})),
            jwk("bare", serde_json::json!({})),
            jwk("enc", serde_json::json!({"use": "enc"})),
            jwk("ps256", serde_json::json!({"alg": "PS256"})),
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
            "not even an object",
        ]});
        let set = KeySet::from_jwks("https://i", doc.to_string().as_bytes(), 1).unwrap();
        assert!(set.get("good").is_some());
        assert!(set.get("bare").is_some());
        for kid in ["enc", "ps256", "ec", "small"] {
            assert!(set.get(kid).is_none(), "{kid}");
        }
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn a_set_without_usable_keys_is_an_error() {
        let doc = serde_json::json!({"keys": [jwk("enc", serde_json::json!({"use": "enc"}))]});
        assert!(matches!(
            KeySet::from_jwks("i", doc.to_string().as_bytes(), 1),
            Err(KeyError::NoUsableKey)
        ));
        assert!(matches!(
            KeySet::from_jwks("i", b"[]", 1),
            Err(KeyError::BadDocument)
        ));
    }
}
