//! Settings (the README's "Settings"): the layers merged by figment into one flat table of keys,
//! read into typed structs, one per section, with every error naming its variable. Secrets live in
//! [`Secret`], which never prints.
//!
//! Each key is declared once, as a field of its section's struct (`database.rs`, `clerk.rs`,
//! `caches.rs`, or [`Settings`] itself for the service's own keys): its serde name is the key and
//! its `deserialize_with` names the key's kind (`kinds.rs`), which parses and bounds it. Adding a
//! setting is that field, plus its line in `config/default.toml` and in `.env.example` (a test
//! holds the three together); the keys read from the environment follow from the structs
//! ([`keys`]). A default that depends on another key is filled into the table before it is read
//! (`dependent_defaults` in `clerk.rs`), so that its key stays a plain field; a rule between keys
//! is checked once they are read (`ClerkSettings::check`).

use std::{net::SocketAddr, sync::LazyLock, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, de::DeserializeOwned};

mod caches;
mod clerk;
mod database;
mod http;
mod kinds;
mod logging;
mod table;

pub use crate::secret::Secret;
pub use caches::CacheSettings;
pub use clerk::{ClerkSettings, KeySource};
pub use database::DatabaseSettings;
pub use logging::LogFormat;

use kinds::{Kind, Millis, Number, Secs};
use table::Table;

/// The defaults, compiled in so the binary runs without a `config/` folder.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Everything the service reads at start. `database`, `clerk` and `caches` are sections, read
/// from the same flat keys; every other field is a key.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub clerk: ClerkSettings,
    #[serde(deserialize_with = "ApiEnv::read")]
    pub api_env: ApiEnv,
    #[serde(deserialize_with = "http::ListenAddr::read")]
    pub listen_addr: SocketAddr,
    #[serde(deserialize_with = "LogFormat::read")]
    pub log_format: LogFormat,
    #[serde(deserialize_with = "logging::Filter::read")]
    pub rust_log: String,
    #[serde(deserialize_with = "http::Origins::read")]
    pub cors_allowed_origins: Vec<String>,
    pub caches: CacheSettings,
    /// At most 16 MiB.
    #[serde(
        rename = "request_body_limit_bytes",
        deserialize_with = "Number::<1_024, 16_777_216, usize>::read"
    )]
    pub request_body_limit: usize,
    #[serde(
        rename = "request_timeout_ms",
        deserialize_with = "Millis::<100, 600_000>::read"
    )]
    pub request_timeout: Duration,
    #[serde(
        rename = "shutdown_grace_secs",
        deserialize_with = "Secs::<0, 600>::read"
    )]
    pub shutdown_grace: Duration,
}

/// The settings of `clerk-users migrate`: the database and logging keys, nothing of Clerk.
#[derive(Debug, Clone, Deserialize)]
pub struct MigrateSettings {
    pub database: DatabaseSettings,
    #[serde(deserialize_with = "LogFormat::read")]
    pub log_format: LogFormat,
    #[serde(deserialize_with = "logging::Filter::read")]
    pub rust_log: String,
}

impl Settings {
    /// The binary's settings: every layer of [`layers`].
    pub fn load() -> Result<Self, SettingsError> {
        Self::from_figment(layers(&[]))
    }

    /// What `clerk-users migrate` needs.
    pub fn load_database_only() -> Result<MigrateSettings, SettingsError> {
        let mut settings: MigrateSettings = read(&layers(&[]))?;
        settings.database.resolve();
        Ok(settings)
    }

    /// What `clerk-users sync` needs: the database and the Backend API settings. `CLERK_ISSUER`
    /// may be unset, since no token is verified and no key fetched (the Backend API's URL stands
    /// in for it); the rest is checked as for `serve`.
    pub fn load_for_sync() -> Result<Self, SettingsError> {
        let mut figment = layers(&[]);
        if !is_set(&figment, "clerk_issuer")
            && let Ok(api_url) = figment.extract_inner::<String>("clerk_api_url")
        {
            figment = figment.merge(Serialized::default("clerk_issuer", api_url));
        }
        Self::from_figment(figment)
    }

    /// Read whatever figment holds.
    pub fn from_figment(figment: Figment) -> Result<Self, SettingsError> {
        let mut settings: Self = read(&figment)?;
        settings.database.resolve();
        settings.clerk.check()?;
        Ok(settings)
    }

    /// The compiled-in defaults with `overrides` on top: the tests and the tools build their
    /// settings this way, read as the binary reads its own.
    pub fn from_overrides(overrides: &[(&str, &str)]) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        for (k, v) in overrides {
            figment = figment.merge(Serialized::default(k, v));
        }
        Self::from_figment(figment)
    }
}

/// The layers, later wins: the compiled-in `config/default.toml`, the file itself when present,
/// then `local_defaults` (the local run's own: empty for the binary), `config/{API_ENV}.toml`,
/// and the environment. A `.env` file is loaded into the environment first, never overriding a
/// variable that is already set.
pub fn layers(local_defaults: &[(&str, &str)]) -> Figment {
    let _ = dotenvy::dotenv();
    let env_name = std::env::var("API_ENV").unwrap_or_else(|_| "development".into());
    let mut figment =
        Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::file("config/default.toml"));
    for (key, value) in local_defaults {
        figment = figment.merge(Serialized::default(key, value));
    }
    figment
        .merge(Toml::file(format!(
            "config/{}.toml",
            env_name.to_lowercase()
        )))
        .merge(Env::raw().only(keys()))
}

/// Whether `key` has a value, not blank, in `figment`'s layers.
pub fn is_set(figment: &Figment, key: &str) -> bool {
    figment
        .find_value(key)
        .is_ok_and(|v| kinds::text(&v).ok().flatten().is_some())
}

/// Every key, in the order the structs declare them: the environment is read for these alone,
/// so `PATH` and friends never reach the settings.
pub fn keys() -> &'static [&'static str] {
    static KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        // Each struct that reads keys, and the field that holds it in another: that field is a
        // section, not a key. (A new section joins this list; until it does, the test that
        // compares the keys with config/default.toml fails.)
        let readers = [
            (None, table::fields::<Settings>()),
            (Some("database"), table::fields::<DatabaseSettings>()),
            (Some("clerk"), table::fields::<ClerkSettings>()),
            (Some("keys"), table::fields::<clerk::KeySourceKeys>()),
            (Some("caches"), table::fields::<CacheSettings>()),
        ];
        let sections: Vec<&str> = readers.iter().filter_map(|(field, _)| *field).collect();
        let mut keys: Vec<&'static str> = Vec::new();
        for name in readers.iter().flat_map(|(_, names)| names.iter()) {
            if !sections.contains(name) && !keys.contains(name) {
                keys.push(name);
            }
        }
        keys
    });
    &KEYS
}

/// The table of `figment`'s layers, with the defaults that depend on other keys, read as `T`.
fn read<T: DeserializeOwned>(figment: &Figment) -> Result<T, SettingsError> {
    let mut table = Table::from_layers(figment)?;
    clerk::dependent_defaults(&mut table);
    table.read()
}

/// A start-up error: one line naming the variable and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct SettingsError {
    pub variable: String,
    pub problem: String,
}

impl SettingsError {
    fn new(key: &str, problem: impl Into<String>) -> Self {
        Self {
            variable: key.to_uppercase(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiEnv {
    Development,
    Production,
}

impl Kind for ApiEnv {
    type Value = Self;

    fn parse(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "development" => Ok(Self::Development),
            "production" => Ok(Self::Production),
            other => Err(format!("expected development or production, got {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests;
