//! clerk-users: verifies Clerk session tokens offline against Clerk's signing keys and serves the
//! signed-in user's record from PostgreSQL, fetching a user from Clerk once, on first sight.
//!
//! A request flows one way, and the imports show it: a module uses only the ones listed below it
//! (`tests/api/layering.rs` checks this; `rustfmt.toml` keeps rustfmt from sorting the list).
//! `app` assembles; `api` is the HTTP layer (the `Session` extractor, the operations, the error
//! mapping); under it the domain (`sync`, `users`, `webhooks`, `auth`, `db`, `clerk`) knows nothing of
//! HTTP; at the bottom the plumbing everything may use. See the README's layout.

/// Assembly: the state, the router, the server and its shutdown. Shared by `main`, the tests and
/// the benchmarks.
pub mod app;

/// The HTTP layer: everything that knows poem.
pub mod api;

/// `clerk-users sync`: Clerk's user list walked page by page into the database.
pub mod sync;

/// Get-or-create of the signed-in user, and the user cache kept coherent across replicas.
pub mod users;

/// Svix signatures and what a Clerk event changes.
pub mod webhooks;

/// Token rules, signing keys, the verifier.
pub mod auth;

/// PostgreSQL: the pool, migrations, one function per query.
pub mod db;

/// The Backend API client: retries, the circuit breaker, the pace under Clerk's rate limit.
pub mod clerk;

/// RFC 7396 JSON Merge Patch, for the application's own metadata.
pub mod merge_patch;

/// Counters and gauges for `/metrics`, used from anywhere.
pub mod metrics;

/// Logs: the JSON line format, the request scope, the batched stdout writer.
pub mod telemetry;

/// Typed settings from the files and the environment; every error names its variable.
pub mod settings;

/// Connection deadlines of the server, and the outgoing HTTP client.
pub mod net;

/// Hands freed memory back to the system.
pub mod memory;

/// A value that never prints: secrets held anywhere.
pub mod secret;

/// The Clerk stand-in and throwaway PostgreSQL for tests, benchmarks and the local run.
#[cfg(feature = "testkit")]
pub mod testkit;
