//! Settings (contract §1): layered with figment, checked once by `validate()`, whose every message
//! names the variable at fault. Secrets live in [`Secret`], which never prints.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use reqwest::Url;
use serde::{Deserialize, Deserializer, Serialize};

/// The defaults, compiled in so the binary runs without a `config/` folder.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

pub use crate::secret::Secret;

/// One flat key per setting, as in the files and the environment. Every key has a default in
/// `config/default.toml` except the three required ones.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawSettings {
    #[serde(deserialize_with = "opt_string")]
    pub database_url: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub database_direct_url: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub database_prepared_statements: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_secret_key: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_issuer: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_jwks_url: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_jwt_key: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_api_url: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_authorized_parties: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_audience: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_clock_skew_secs: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_accept_pending: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_webhook_secret: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_jwks_refresh_secs: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_jwks_max_stale_secs: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_jwks_unknown_kid_interval_secs: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_http_timeout_ms: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_api_max_attempts: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_api_retry_budget_ms: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_api_backoff_ms: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_breaker_failures: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub clerk_breaker_cooldown_ms: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub user_cache_max_entries: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub user_cache_ttl_secs: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub user_cache_stale_if_error_secs: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub token_cache_max_entries: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub api_env: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub listen_addr: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub log_format: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub rust_log: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub cors_allowed_origins: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub db_pool_max_size: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub db_pool_wait_timeout_ms: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub db_connect_timeout_ms: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub db_statement_timeout_ms: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub request_body_limit_bytes: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub request_timeout_ms: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub shutdown_grace_secs: Option<String>,
}

/// The names of every key: the environment provider reads only these, so `PATH` and friends
/// never leak into the settings.
pub const KEYS: &[&str] = &[
    "database_url",
    "database_direct_url",
    "database_prepared_statements",
    "clerk_secret_key",
    "clerk_issuer",
    "clerk_jwks_url",
    "clerk_jwt_key",
    "clerk_api_url",
    "clerk_authorized_parties",
    "clerk_audience",
    "clerk_clock_skew_secs",
    "clerk_accept_pending",
    "clerk_webhook_secret",
    "clerk_jwks_refresh_secs",
    "clerk_jwks_max_stale_secs",
    "clerk_jwks_unknown_kid_interval_secs",
    "clerk_http_timeout_ms",
    "clerk_api_max_attempts",
    "clerk_api_retry_budget_ms",
    "clerk_api_backoff_ms",
    "clerk_breaker_failures",
    "clerk_breaker_cooldown_ms",
    "user_cache_max_entries",
    "user_cache_ttl_secs",
    "user_cache_stale_if_error_secs",
    "token_cache_max_entries",
    "api_env",
    "listen_addr",
    "log_format",
    "rust_log",
    "cors_allowed_origins",
    "db_pool_max_size",
    "db_pool_wait_timeout_ms",
    "db_connect_timeout_ms",
    "db_statement_timeout_ms",
    "request_body_limit_bytes",
    "request_timeout_ms",
    "shutdown_grace_secs",
];

/// Files and the environment deliver numbers, booleans and strings; every key is read as text
/// here and parsed by `validate()`, so a bad value gets a message that names its variable.
fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(Option::<Scalar>::deserialize(d)?.map(|v| match v {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::U(u) => u.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::B(b) => b.to_string(),
    }))
}

/// A start-up error: one line naming the variable and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct SettingsError {
    pub variable: String,
    pub problem: String,
}

fn err(key: &str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        variable: key.to_uppercase(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiEnv {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Where signing keys come from (§4).
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Fetched from this URL; `send_secret` when its origin is the Backend API's.
    Jwks { url: Url, send_secret: bool },
    /// `CLERK_JWT_KEY`: the one key, as DER (SPKI); nothing is fetched.
    Pem { spki_der: Vec<u8> },
}

#[derive(Debug, Clone)]
pub struct ClerkSettings {
    pub secret_key: Secret<String>,
    /// Without a trailing `/`; tokens must carry exactly this `iss`.
    pub issuer: String,
    pub keys: KeySource,
    pub api_url: Url,
    pub authorized_parties: Vec<String>,
    pub audience: Vec<String>,
    pub clock_skew_secs: u64,
    pub accept_pending: bool,
    pub webhook_secret: Option<Secret<String>>,
    pub jwks_refresh: Duration,
    pub jwks_max_stale: Duration,
    pub jwks_unknown_kid_interval: Duration,
    pub http_timeout: Duration,
    pub api_max_attempts: u32,
    pub api_retry_budget: Duration,
    pub api_backoff: Duration,
    /// Consecutive failed Backend API lookups that open the circuit breaker; 0 = no breaker.
    pub breaker_failures: u32,
    /// How long the open breaker fails lookups at once before one probe goes through.
    pub breaker_cooldown: Duration,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`: the connection settings and their TLS (password redacted in `Debug`).
    pub url: crate::net::postgres::ConnectOptions,
    /// `DATABASE_DIRECT_URL`: where migrations and `LISTEN` go, when set.
    pub direct_url: Option<crate::net::postgres::ConnectOptions>,
    /// `DATABASE_PREPARED_STATEMENTS`: `false` sends every statement unnamed.
    pub prepared_statements: bool,
    pub pool_max_size: usize,
    pub pool_wait_timeout: Duration,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

/// The in-memory caches; a size or TTL of 0 turns a cache off.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    pub user_max_entries: u64,
    pub user_ttl: Duration,
    /// How long after its last confirmation a cached user is still served while the database
    /// cannot be reached; 0: never.
    pub user_stale_if_error: Duration,
    pub token_max_entries: u64,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub api_env: ApiEnv,
    pub listen_addr: SocketAddr,
    pub log_format: LogFormat,
    pub rust_log: String,
    pub cors_allowed_origins: Vec<String>,
    pub database: DatabaseSettings,
    pub clerk: ClerkSettings,
    pub caches: CacheSettings,
    pub request_body_limit: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Settings {
    /// The full §1 stack for the binary: defaults, `config/`, `.env`, environment.
    pub fn load() -> Result<Self, SettingsError> {
        Self::from_figment(figment_from_files_and_env())
    }

    /// What `clerk-users migrate` needs: the database and logging settings, nothing of Clerk.
    pub fn load_database_only() -> Result<MigrateSettings, SettingsError> {
        let raw = extract(figment_from_files_and_env())?;
        let (log_format, rust_log) = raw.validate_logging()?;
        Ok(MigrateSettings {
            database: raw.validate_database()?,
            log_format,
            rust_log,
        })
    }

    /// Extract and validate whatever figment holds.
    pub fn from_figment(figment: Figment) -> Result<Self, SettingsError> {
        extract(figment)?.validate()
    }

    /// The compiled-in defaults with `overrides` on top: the tests and the tools build their
    /// settings this way, through the same `validate()` as the binary.
    pub fn from_overrides(overrides: &[(&str, &str)]) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        for (k, v) in overrides {
            figment = figment.merge(Serialized::default(k, v));
        }
        Self::from_figment(figment)
    }
}

fn extract(figment: Figment) -> Result<RawSettings, SettingsError> {
    figment.extract().map_err(|e| {
        let key = e.path.last().cloned().unwrap_or_else(|| "settings".into());
        err(&key, e.kind.to_string())
    })
}

/// The settings of `clerk-users migrate`.
#[derive(Debug, Clone)]
pub struct MigrateSettings {
    pub database: DatabaseSettings,
    pub log_format: LogFormat,
    pub rust_log: String,
}

/// The layers of §1, in order. `.env` is loaded into the process environment first, never
/// overriding a variable that is already set.
pub fn figment_from_files_and_env() -> Figment {
    let _ = dotenvy::dotenv();
    let env_name = std::env::var("API_ENV").unwrap_or_else(|_| "development".into());
    Figment::from(Toml::string(DEFAULT_TOML))
        .merge(Toml::file("config/default.toml"))
        .merge(Toml::file(format!(
            "config/{}.toml",
            env_name.to_lowercase()
        )))
        .merge(Env::raw().only(KEYS))
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn required<'a>(key: &str, v: &'a Option<String>) -> Result<&'a str, SettingsError> {
    non_empty(v).ok_or_else(|| err(key, "required, not set"))
}

fn number<T>(key: &str, v: &Option<String>, min: T, max: T) -> Result<T, SettingsError>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    let s = required(key, v)?;
    let n: T = s
        .parse()
        .map_err(|_| err(key, format!("not a whole number: {s:?}")))?;
    if n < min || n > max {
        return Err(err(
            key,
            format!("must be between {min} and {max}, got {n}"),
        ));
    }
    Ok(n)
}

fn millis(key: &str, v: &Option<String>, min: u64, max: u64) -> Result<Duration, SettingsError> {
    number(key, v, min, max).map(Duration::from_millis)
}

fn secs(key: &str, v: &Option<String>, min: u64, max: u64) -> Result<Duration, SettingsError> {
    number(key, v, min, max).map(Duration::from_secs)
}

fn boolean(key: &str, v: &Option<String>) -> Result<bool, SettingsError> {
    match required(key, v)?.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(err(key, format!("expected true or false, got {other:?}"))),
    }
}

fn list(v: &Option<String>) -> Vec<String> {
    non_empty(v)
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// `https://`, or `http://` for a loopback host only (§1).
fn clerk_url(key: &str, s: &str) -> Result<Url, SettingsError> {
    let url = Url::parse(s).map_err(|e| err(key, format!("not a URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(err(
                key,
                "http:// is allowed only for localhost, 127.0.0.0/8 and ::1; use https://",
            ));
        }
        other => {
            return Err(err(
                key,
                format!("unsupported scheme {other:?}; use https://"),
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err(key, "has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(key, "must not carry credentials"));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The body of a PEM `PUBLIC KEY` block, checked to be an RSA key of at least 2048 bits.
fn parse_pem_key(key: &str, pem: &str) -> Result<Vec<u8>, SettingsError> {
    use base64::Engine;
    // Environment variables often carry the PEM with literal "\n" sequences.
    let pem = pem.replace("\\n", "\n");
    let begin = "-----BEGIN PUBLIC KEY-----";
    let end = "-----END PUBLIC KEY-----";
    let start = pem
        .find(begin)
        .ok_or_else(|| err(key, format!("not a PEM public key: expected {begin}")))?;
    let body_start = start + begin.len();
    let stop = pem[body_start..]
        .find(end)
        .ok_or_else(|| err(key, format!("not a PEM public key: missing {end}")))?;
    let body: String = pem[body_start..body_start + stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| err(key, "not a PEM public key: bad base64"))?;
    let parsed = aws_lc_rs::rsa::PublicEncryptingKey::from_der(&der)
        .map_err(|_| err(key, "not an RSA public key (SPKI)"))?;
    let bits = parsed.key_size_bits();
    if bits < 2048 {
        return Err(err(
            key,
            format!("RSA key of {bits} bits; at least 2048 are required"),
        ));
    }
    Ok(der)
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

impl RawSettings {
    /// The database settings alone: all that `clerk-users migrate` needs.
    pub fn validate_database(&self) -> Result<DatabaseSettings, SettingsError> {
        let connect_timeout = millis(
            "db_connect_timeout_ms",
            &self.db_connect_timeout_ms,
            100,
            60_000,
        )?;
        let url = |key: &str, value: &str| {
            let options = crate::net::postgres::ConnectOptions::from_url(value)
                .map_err(|problem| err(key, problem))?;
            if options.config.expose().get_hosts().is_empty() {
                return Err(err(key, "names no host"));
            }
            Ok(options.for_service(connect_timeout))
        };
        let database_url = required("database_url", &self.database_url)?;
        Ok(DatabaseSettings {
            url: url("database_url", database_url)?,
            direct_url: non_empty(&self.database_direct_url)
                .map(|u| url("database_direct_url", u))
                .transpose()?,
            prepared_statements: boolean(
                "database_prepared_statements",
                &self.database_prepared_statements,
            )?,
            pool_max_size: number("db_pool_max_size", &self.db_pool_max_size, 1, 1_000)?,
            pool_wait_timeout: millis(
                "db_pool_wait_timeout_ms",
                &self.db_pool_wait_timeout_ms,
                1,
                60_000,
            )?,
            connect_timeout,
            statement_timeout: millis(
                "db_statement_timeout_ms",
                &self.db_statement_timeout_ms,
                100,
                600_000,
            )?,
        })
    }

    pub fn validate_logging(&self) -> Result<(LogFormat, String), SettingsError> {
        let log_format = match required("log_format", &self.log_format)?
            .to_ascii_lowercase()
            .as_str()
        {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(err(
                    "log_format",
                    format!("expected json or pretty, got {other:?}"),
                ));
            }
        };
        let rust_log = required("rust_log", &self.rust_log)?.to_string();
        tracing_subscriber::EnvFilter::try_new(&rust_log)
            .map_err(|e| err("rust_log", format!("not a tracing filter ({e})")))?;
        Ok((log_format, rust_log))
    }

    /// Every check of §1. The first problem found stops the start.
    pub fn validate(&self) -> Result<Settings, SettingsError> {
        let database = self.validate_database()?;

        let secret_key = required("clerk_secret_key", &self.clerk_secret_key)?;
        if !secret_key.starts_with("sk_") {
            return Err(err("clerk_secret_key", "must start with sk_"));
        }
        let issuer_raw = required("clerk_issuer", &self.clerk_issuer)?;
        let issuer = issuer_raw.trim_end_matches('/').to_string();
        let issuer_url = clerk_url("clerk_issuer", &issuer)?;
        let api_url = clerk_url(
            "clerk_api_url",
            required("clerk_api_url", &self.clerk_api_url)?,
        )?;

        let keys = match non_empty(&self.clerk_jwt_key) {
            Some(pem) => KeySource::Pem {
                spki_der: parse_pem_key("clerk_jwt_key", pem)?,
            },
            None => {
                let url = match non_empty(&self.clerk_jwks_url) {
                    Some(u) => clerk_url("clerk_jwks_url", u)?,
                    None => clerk_url(
                        "clerk_issuer",
                        &format!(
                            "{}/.well-known/jwks.json",
                            issuer_url.as_str().trim_end_matches('/')
                        ),
                    )?,
                };
                let send_secret = same_origin(&url, &api_url);
                KeySource::Jwks { url, send_secret }
            }
        };

        let webhook_secret = match non_empty(&self.clerk_webhook_secret) {
            None => None,
            Some(s) => {
                use base64::Engine;
                let b64 = s
                    .strip_prefix("whsec_")
                    .ok_or_else(|| err("clerk_webhook_secret", "must start with whsec_"))?;
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| {
                        err(
                            "clerk_webhook_secret",
                            "the part after whsec_ is not base64",
                        )
                    })?;
                Some(Secret::new(s.to_string()))
            }
        };

        let jwks_refresh = secs(
            "clerk_jwks_refresh_secs",
            &self.clerk_jwks_refresh_secs,
            1,
            86_400,
        )?;
        let jwks_max_stale = secs(
            "clerk_jwks_max_stale_secs",
            &self.clerk_jwks_max_stale_secs,
            1,
            30 * 86_400,
        )?;
        if jwks_max_stale < jwks_refresh {
            return Err(err(
                "clerk_jwks_max_stale_secs",
                "must not be shorter than CLERK_JWKS_REFRESH_SECS",
            ));
        }

        let clerk = ClerkSettings {
            secret_key: Secret::new(secret_key.to_string()),
            issuer,
            keys,
            api_url,
            authorized_parties: list(&self.clerk_authorized_parties),
            audience: list(&self.clerk_audience),
            clock_skew_secs: number("clerk_clock_skew_secs", &self.clerk_clock_skew_secs, 0, 60)?,
            accept_pending: boolean("clerk_accept_pending", &self.clerk_accept_pending)?,
            webhook_secret,
            jwks_refresh,
            jwks_max_stale,
            jwks_unknown_kid_interval: secs(
                "clerk_jwks_unknown_kid_interval_secs",
                &self.clerk_jwks_unknown_kid_interval_secs,
                0,
                3_600,
            )?,
            http_timeout: millis(
                "clerk_http_timeout_ms",
                &self.clerk_http_timeout_ms,
                50,
                60_000,
            )?,
            api_max_attempts: number(
                "clerk_api_max_attempts",
                &self.clerk_api_max_attempts,
                1,
                10,
            )?,
            api_retry_budget: millis(
                "clerk_api_retry_budget_ms",
                &self.clerk_api_retry_budget_ms,
                50,
                120_000,
            )?,
            api_backoff: millis(
                "clerk_api_backoff_ms",
                &self.clerk_api_backoff_ms,
                1,
                60_000,
            )?,
            breaker_failures: number(
                "clerk_breaker_failures",
                &self.clerk_breaker_failures,
                0,
                10_000,
            )?,
            breaker_cooldown: millis(
                "clerk_breaker_cooldown_ms",
                &self.clerk_breaker_cooldown_ms,
                100,
                3_600_000,
            )?,
        };

        let api_env = match required("api_env", &self.api_env)?
            .to_ascii_lowercase()
            .as_str()
        {
            "development" => ApiEnv::Development,
            "production" => ApiEnv::Production,
            other => {
                return Err(err(
                    "api_env",
                    format!("expected development or production, got {other:?}"),
                ));
            }
        };
        let listen = required("listen_addr", &self.listen_addr)?;
        let listen_addr = listen.parse().map_err(|_| {
            err(
                "listen_addr",
                format!("expected host:port such as 0.0.0.0:8000, got {listen:?}"),
            )
        })?;
        let (log_format, rust_log) = self.validate_logging()?;

        let cors_allowed_origins = list(&self.cors_allowed_origins);
        for origin in &cors_allowed_origins {
            let url = Url::parse(origin).map_err(|_| {
                err(
                    "cors_allowed_origins",
                    format!("{origin:?} is not an origin"),
                )
            })?;
            if url.origin().ascii_serialization() != *origin {
                return Err(err(
                    "cors_allowed_origins",
                    format!(
                        "{origin:?} is not an origin (scheme://host[:port], no path or trailing /)"
                    ),
                ));
            }
        }

        Ok(Settings {
            api_env,
            listen_addr,
            log_format,
            rust_log,
            cors_allowed_origins,
            database,
            clerk,
            caches: CacheSettings {
                user_max_entries: number(
                    "user_cache_max_entries",
                    &self.user_cache_max_entries,
                    0,
                    10_000_000,
                )?,
                user_ttl: secs("user_cache_ttl_secs", &self.user_cache_ttl_secs, 0, 86_400)?,
                user_stale_if_error: secs(
                    "user_cache_stale_if_error_secs",
                    &self.user_cache_stale_if_error_secs,
                    0,
                    86_400,
                )?,
                token_max_entries: number(
                    "token_cache_max_entries",
                    &self.token_cache_max_entries,
                    0,
                    10_000_000,
                )?,
            },
            request_body_limit: number(
                "request_body_limit_bytes",
                &self.request_body_limit_bytes,
                1_024,
                16 << 20,
            )?,
            request_timeout: millis("request_timeout_ms", &self.request_timeout_ms, 100, 600_000)?,
            shutdown_grace: secs("shutdown_grace_secs", &self.shutdown_grace_secs, 0, 600)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &[(&str, &str)] = &[
        ("database_url", "postgres://app:hunter2@localhost:5432/app"),
        ("clerk_secret_key", "sk_test_abc"),
        ("clerk_issuer", "https://clerk.example.com/"),
    ];

    fn with(extra: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let mut all = BASE.to_vec();
        all.extend_from_slice(extra);
        Settings::from_overrides(&all)
    }

    #[test]
    fn defaults_apply_and_issuer_loses_its_trailing_slash() {
        let s = with(&[]).unwrap();
        assert_eq!(s.clerk.issuer, "https://clerk.example.com");
        assert_eq!(s.clerk.clock_skew_secs, 5);
        assert_eq!(s.clerk.breaker_failures, 5);
        assert_eq!(s.clerk.breaker_cooldown, Duration::from_secs(5));
        assert_eq!(s.listen_addr.port(), 8000);
        match &s.clerk.keys {
            KeySource::Jwks { url, send_secret } => {
                assert_eq!(
                    url.as_str(),
                    "https://clerk.example.com/.well-known/jwks.json"
                );
                assert!(!send_secret);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_required_names_the_variable() {
        let e = Settings::from_overrides(&[
            ("clerk_secret_key", "sk_x"),
            ("clerk_issuer", "https://a.b"),
        ])
        .unwrap_err();
        assert_eq!(e.to_string(), "DATABASE_URL: required, not set");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (k, v, var) in [
            ("clerk_clock_skew_secs", "61", "CLERK_CLOCK_SKEW_SECS"),
            ("clerk_clock_skew_secs", "five", "CLERK_CLOCK_SKEW_SECS"),
            ("clerk_issuer", "http://clerk.example.com", "CLERK_ISSUER"),
            ("clerk_api_url", "ftp://x", "CLERK_API_URL"),
            ("clerk_jwks_url", "http://10.0.0.1/jwks", "CLERK_JWKS_URL"),
            ("clerk_jwt_key", "not a key", "CLERK_JWT_KEY"),
            ("clerk_accept_pending", "maybe", "CLERK_ACCEPT_PENDING"),
            ("clerk_breaker_failures", "-1", "CLERK_BREAKER_FAILURES"),
            ("clerk_breaker_failures", "many", "CLERK_BREAKER_FAILURES"),
            (
                "clerk_breaker_cooldown_ms",
                "50",
                "CLERK_BREAKER_COOLDOWN_MS",
            ),
            ("clerk_breaker_cooldown_ms", "", "CLERK_BREAKER_COOLDOWN_MS"),
            ("clerk_webhook_secret", "nope", "CLERK_WEBHOOK_SECRET"),
            ("clerk_secret_key", "pk_test_x", "CLERK_SECRET_KEY"),
            ("database_url", "mysql:// nope", "DATABASE_URL"),
            ("api_env", "staging", "API_ENV"),
            ("listen_addr", "8000", "LISTEN_ADDR"),
            ("log_format", "xml", "LOG_FORMAT"),
            (
                "cors_allowed_origins",
                "https://a.example/",
                "CORS_ALLOWED_ORIGINS",
            ),
        ] {
            let e = with(&[(k, v)]).unwrap_err();
            assert_eq!(e.variable, var, "{k}={v} gave {e}");
        }
    }

    #[test]
    fn loopback_http_is_allowed() {
        for host in ["localhost", "127.0.0.1", "127.8.9.10", "[::1]"] {
            let s = with(&[("clerk_issuer", &format!("http://{host}:3000"))]).unwrap();
            assert!(s.clerk.issuer.starts_with("http://"));
        }
    }

    #[test]
    fn secret_sent_only_to_the_api_origin() {
        let s = with(&[
            ("clerk_api_url", "http://127.0.0.1:9000"),
            ("clerk_jwks_url", "http://127.0.0.1:9000/v1/jwks"),
        ])
        .unwrap();
        assert!(matches!(
            s.clerk.keys,
            KeySource::Jwks {
                send_secret: true,
                ..
            }
        ));
        let s = with(&[
            ("clerk_api_url", "http://127.0.0.1:9000"),
            ("clerk_jwks_url", "http://127.0.0.1:9001/v1/jwks"),
        ])
        .unwrap();
        assert!(matches!(
            s.clerk.keys,
            KeySource::Jwks {
                send_secret: false,
                ..
            }
        ));
    }

    #[test]
    fn debug_output_has_no_secret() {
        let s = with(&[("clerk_webhook_secret", "whsec_c2VjcmV0c2VjcmV0")]).unwrap();
        let out = format!("{s:?}");
        for secret in [
            "hunter2",
            "sk_test_abc",
            "whsec_c2VjcmV0c2VjcmV0",
            "c2VjcmV0c2VjcmV0",
        ] {
            assert!(!out.contains(secret), "{secret} printed in {out}");
        }
    }
}

#[cfg(test)]
mod documented {
    use super::*;

    /// Every key is read from the environment, has a (possibly commented) line in
    /// config/default.toml, and a (possibly commented) variable in .env.example; and neither file
    /// names a key the service does not read.
    #[test]
    fn every_key_is_in_default_toml_and_env_example() {
        let env_example =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
        let named = |text: &str, upper: bool| -> Vec<String> {
            text.lines()
                .map(|l| l.trim_start_matches('#').trim())
                .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
                .filter(|k| {
                    !k.is_empty() && k.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
                })
                .filter(|k| k.chars().any(|c| c.is_ascii_alphabetic()))
                .filter(|k| upper == k.chars().all(|c| !c.is_ascii_lowercase()))
                .map(str::to_lowercase)
                .collect()
        };
        let in_toml = named(DEFAULT_TOML, false);
        let in_env = named(&env_example, true);
        for key in KEYS {
            assert!(
                in_toml.iter().any(|k| k == key),
                "{key} missing from config/default.toml"
            );
            assert!(
                in_env.iter().any(|k| k == key),
                "{} missing from .env.example",
                key.to_uppercase()
            );
        }
        for key in &in_toml {
            assert!(
                KEYS.contains(&key.as_str()),
                "config/default.toml names {key}, which is not read"
            );
        }
        // .env.example also documents the variables of the local run and of compose.
        let others = ["dev_clerk_addr", "pg_bin", "postgres_password", "http_port"];
        for key in &in_env {
            assert!(
                KEYS.contains(&key.as_str()) || others.contains(&key.as_str()),
                ".env.example names {}, which nothing reads",
                key.to_uppercase()
            );
        }
    }
}
