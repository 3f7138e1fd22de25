//! The database keys: where PostgreSQL is, and how the pool waits for it and for its statements.

use std::time::Duration;

use serde::Deserialize;

use super::kinds::{Boolean, Kind, Millis, Number};
use crate::net::postgres::ConnectOptions;

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    #[serde(
        rename = "db_connect_timeout_ms",
        deserialize_with = "Millis::<100, 60_000>::read"
    )]
    pub connect_timeout: Duration,
    /// The connection settings and their TLS (password redacted in `Debug`).
    #[serde(rename = "database_url", deserialize_with = "ConnectionUrl::read")]
    pub url: ConnectOptions,
    /// Where migrations and `LISTEN` go, when set.
    #[serde(
        rename = "database_direct_url",
        deserialize_with = "ConnectionUrl::optional"
    )]
    pub direct_url: Option<ConnectOptions>,
    /// `false` sends every statement unnamed.
    #[serde(
        rename = "database_prepared_statements",
        deserialize_with = "Boolean::read"
    )]
    pub prepared_statements: bool,
    #[serde(
        rename = "db_pool_max_size",
        deserialize_with = "Number::<1, 1_000, usize>::read"
    )]
    pub pool_max_size: usize,
    #[serde(
        rename = "db_pool_wait_timeout_ms",
        deserialize_with = "Millis::<1, 60_000>::read"
    )]
    pub pool_wait_timeout: Duration,
    #[serde(
        rename = "db_statement_timeout_ms",
        deserialize_with = "Millis::<100, 600_000>::read"
    )]
    pub statement_timeout: Duration,
}

impl DatabaseSettings {
    /// What follows from two keys: every connection (pool, migrations, notifications) is opened
    /// with these options, so the connect timeout goes into them.
    pub(super) fn resolve(&mut self) {
        self.url = self.url.clone().for_service(self.connect_timeout);
        self.direct_url = self
            .direct_url
            .take()
            .map(|direct| direct.for_service(self.connect_timeout));
    }
}

/// A PostgreSQL connection URL (or libpq `key=value` string) that names a host.
struct ConnectionUrl;

impl Kind for ConnectionUrl {
    type Value = ConnectOptions;

    fn parse(text: &str) -> Result<ConnectOptions, String> {
        let options = ConnectOptions::from_url(text)?;
        if options.config.expose().get_hosts().is_empty() {
            return Err("names no host".into());
        }
        Ok(options)
    }
}
