//! The Clerk keys: the instance (secret key, issuer), where signing keys come from, which tokens
//! pass, the Backend API's retries and breaker, and the webhook secret.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::{
    Secret, SettingsError,
    kinds::{Boolean, Kind, List, LoopbackOrHttps, Millis, Number, Secs},
    table::Table,
};

#[derive(Debug, Clone, Deserialize)]
pub struct ClerkSettings {
    #[serde(rename = "clerk_secret_key", deserialize_with = "SecretKey::read")]
    pub secret_key: Secret<String>,
    /// Without a trailing `/`; tokens must carry exactly this `iss`.
    #[serde(rename = "clerk_issuer", deserialize_with = "Issuer::read")]
    pub issuer: String,
    #[serde(rename = "clerk_api_url", deserialize_with = "LoopbackOrHttps::read")]
    pub api_url: Url,
    /// Not a key: read from the keys of [`KeySourceKeys`].
    pub keys: KeySource,
    #[serde(
        rename = "clerk_webhook_secret",
        deserialize_with = "WebhookSecret::optional"
    )]
    pub webhook_secret: Option<Secret<String>>,
    #[serde(
        rename = "clerk_jwks_refresh_secs",
        deserialize_with = "Secs::<1, 86_400>::read"
    )]
    pub jwks_refresh: Duration,
    /// At least `jwks_refresh` (see [`ClerkSettings::check`]).
    #[serde(
        rename = "clerk_jwks_max_stale_secs",
        deserialize_with = "Secs::<1, 2_592_000>::read"
    )]
    pub jwks_max_stale: Duration,
    #[serde(rename = "clerk_authorized_parties", deserialize_with = "List::read")]
    pub authorized_parties: Vec<String>,
    #[serde(rename = "clerk_audience", deserialize_with = "List::read")]
    pub audience: Vec<String>,
    #[serde(
        rename = "clerk_clock_skew_secs",
        deserialize_with = "Number::<0, 60>::read"
    )]
    pub clock_skew_secs: u64,
    #[serde(rename = "clerk_accept_pending", deserialize_with = "Boolean::read")]
    pub accept_pending: bool,
    #[serde(
        rename = "clerk_jwks_unknown_kid_interval_secs",
        deserialize_with = "Secs::<0, 3_600>::read"
    )]
    pub jwks_unknown_kid_interval: Duration,
    #[serde(
        rename = "clerk_http_timeout_ms",
        deserialize_with = "Millis::<50, 60_000>::read"
    )]
    pub http_timeout: Duration,
    #[serde(
        rename = "clerk_api_max_attempts",
        deserialize_with = "Number::<1, 10, u32>::read"
    )]
    pub api_max_attempts: u32,
    #[serde(
        rename = "clerk_api_retry_budget_ms",
        deserialize_with = "Millis::<50, 120_000>::read"
    )]
    pub api_retry_budget: Duration,
    #[serde(
        rename = "clerk_api_backoff_ms",
        deserialize_with = "Millis::<1, 60_000>::read"
    )]
    pub api_backoff: Duration,
    /// Most Backend API requests this process sends in any 10 seconds (first sights and `sync`
    /// together); when blank, from the kind of secret key (see [`dependent_defaults`]).
    #[serde(
        rename = "clerk_api_rate_limit",
        deserialize_with = "Number::<1, 100_000, u32>::read"
    )]
    pub api_rate_limit: u32,
    /// Consecutive failed Backend API lookups that open the circuit breaker; 0 = no breaker.
    #[serde(
        rename = "clerk_breaker_failures",
        deserialize_with = "Number::<0, 10_000, u32>::read"
    )]
    pub breaker_failures: u32,
    /// How long the open breaker fails lookups at once before one probe goes through.
    #[serde(
        rename = "clerk_breaker_cooldown_ms",
        deserialize_with = "Millis::<100, 3_600_000>::read"
    )]
    pub breaker_cooldown: Duration,
}

impl ClerkSettings {
    /// The rules between keys, once each key is read.
    pub(super) fn check(&self) -> Result<(), SettingsError> {
        if self.jwks_max_stale < self.jwks_refresh {
            return Err(SettingsError::new(
                "clerk_jwks_max_stale_secs",
                "must not be shorter than CLERK_JWKS_REFRESH_SECS",
            ));
        }
        Ok(())
    }
}

/// The defaults that depend on another key, filled into the table before anything is read, so
/// that the keys they are for stay plain keys of their struct. (A key whose default depends on
/// the kind of secret key, say, gets its line here.)
pub(super) fn dependent_defaults(table: &mut Table) {
    // CLERK_JWKS_URL: when empty, the issuer's own JWKS, where Clerk publishes it. With
    // CLERK_JWT_KEY set nothing is fetched, so whatever it says is not checked but replaced.
    let pinned = table.text("clerk_jwt_key").is_some();
    if (pinned || table.text("clerk_jwks_url").is_none())
        && let Some(issuer) = table.text("clerk_issuer")
    {
        let url = format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'));
        table.set("clerk_jwks_url", url);
    }
    // CLERK_API_RATE_LIMIT: Clerk's limits are per instance, 100 requests in 10 s for a
    // development instance (an `sk_test_` key), 1000 for a production one.
    if table.text("clerk_api_rate_limit").is_none() {
        let development = table
            .text("clerk_secret_key")
            .is_some_and(|k| k.starts_with("sk_test_"));
        table.set(
            "clerk_api_rate_limit",
            if development { "100" } else { "1000" },
        );
    }
}

/// Where signing keys come from (the README's "Signing keys").
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "KeySourceKeys")]
pub enum KeySource {
    /// Fetched from this URL; `send_secret` when its origin is the Backend API's.
    Jwks { url: Url, send_secret: bool },
    /// `CLERK_JWT_KEY`: the one key, as DER (SPKI); nothing is fetched.
    Pem { spki_der: Vec<u8> },
}

/// The keys a [`KeySource`] is made of.
#[derive(Deserialize)]
pub(super) struct KeySourceKeys {
    #[serde(rename = "clerk_jwt_key", deserialize_with = "PemKey::optional")]
    jwt_key: Option<Vec<u8>>,
    /// Never unset: see [`dependent_defaults`].
    #[serde(rename = "clerk_jwks_url", deserialize_with = "LoopbackOrHttps::read")]
    jwks_url: Url,
    /// Read here as well as in [`ClerkSettings`]: the secret key goes with the JWKS request only
    /// to the Backend API's own origin.
    #[serde(rename = "clerk_api_url", deserialize_with = "LoopbackOrHttps::read")]
    api_url: Url,
}

impl From<KeySourceKeys> for KeySource {
    fn from(keys: KeySourceKeys) -> Self {
        match keys.jwt_key {
            Some(spki_der) => Self::Pem { spki_der },
            None => Self::Jwks {
                send_secret: keys.jwks_url.origin() == keys.api_url.origin(),
                url: keys.jwks_url,
            },
        }
    }
}

/// A Backend API secret key (`sk_test_…`, `sk_live_…`).
struct SecretKey;

impl Kind for SecretKey {
    type Value = Secret<String>;

    fn parse(text: &str) -> Result<Self::Value, String> {
        if !text.starts_with("sk_") {
            return Err("must start with sk_".into());
        }
        Ok(Secret::new(text.to_string()))
    }
}

/// The issuer, without its trailing `/`, held to the rules of [`LoopbackOrHttps`].
struct Issuer;

impl Kind for Issuer {
    type Value = String;

    fn parse(text: &str) -> Result<String, String> {
        let issuer = text.trim_end_matches('/');
        LoopbackOrHttps::parse(issuer)?;
        Ok(issuer.to_string())
    }
}

/// A Svix signing secret: `whsec_` and base64.
struct WebhookSecret;

impl Kind for WebhookSecret {
    type Value = Secret<String>;

    fn parse(text: &str) -> Result<Self::Value, String> {
        use base64::Engine;
        let b64 = text
            .strip_prefix("whsec_")
            .ok_or("must start with whsec_")?;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "the part after whsec_ is not base64")?;
        Ok(Secret::new(text.to_string()))
    }
}

/// The body of a PEM `PUBLIC KEY` block, checked to be an RSA key of at least 2048 bits.
struct PemKey;

impl Kind for PemKey {
    type Value = Vec<u8>;

    fn parse(pem: &str) -> Result<Vec<u8>, String> {
        use base64::Engine;
        // Environment variables often carry the PEM with literal "\n" sequences.
        let pem = pem.replace("\\n", "\n");
        let begin = "-----BEGIN PUBLIC KEY-----";
        let end = "-----END PUBLIC KEY-----";
        let start = pem
            .find(begin)
            .ok_or_else(|| format!("not a PEM public key: expected {begin}"))?;
        let body_start = start + begin.len();
        let stop = pem[body_start..]
            .find(end)
            .ok_or_else(|| format!("not a PEM public key: missing {end}"))?;
        let body: String = pem[body_start..body_start + stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| "not a PEM public key: bad base64")?;
        let parsed = aws_lc_rs::rsa::PublicEncryptingKey::from_der(&der)
            .map_err(|_| "not an RSA public key (SPKI)")?;
        let bits = parsed.key_size_bits();
        if bits < 2048 {
            return Err(format!(
                "RSA key of {bits} bits; at least 2048 are required"
            ));
        }
        Ok(der)
    }
}
