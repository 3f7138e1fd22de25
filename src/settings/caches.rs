//! The cache keys: how many users and verified tokens each process holds in memory, and for how
//! long (the README's "Caches" section says what each costs). A size or TTL of 0 turns a cache off.

use std::time::Duration;

use serde::Deserialize;

use super::kinds::{Kind, Number, Secs};

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct CacheSettings {
    #[serde(
        rename = "user_cache_max_entries",
        deserialize_with = "Number::<0, 10_000_000>::read"
    )]
    pub user_max_entries: u64,
    #[serde(
        rename = "user_cache_ttl_secs",
        deserialize_with = "Secs::<0, 86_400>::read"
    )]
    pub user_ttl: Duration,
    /// How long after its last confirmation a cached user is still served while the database
    /// cannot be reached; 0: never.
    #[serde(
        rename = "user_cache_stale_if_error_secs",
        deserialize_with = "Secs::<0, 86_400>::read"
    )]
    pub user_stale_if_error: Duration,
    #[serde(
        rename = "token_cache_max_entries",
        deserialize_with = "Number::<0, 10_000_000>::read"
    )]
    pub token_max_entries: u64,
}
