//! clerk-users: verifies Clerk session tokens offline against Clerk's signing keys and serves the
//! signed-in user's record from PostgreSQL, fetching a user from Clerk once, on first sight.
//!
//! A request flows one way: `api::middleware` → `auth` (the `Session` extractor, `auth::token`
//! rules, `auth::keys`) → `api` handlers → `users` → `db` / `clerk`. See the README's layout.

pub mod api;
pub mod app;
pub mod auth;
pub mod clerk;
pub mod db;
pub mod memory;
pub mod merge_patch;
pub mod metrics;
pub mod net;
pub mod settings;
pub mod telemetry;
pub mod users;
pub mod webhooks;

#[cfg(feature = "testkit")]
pub mod testkit;
