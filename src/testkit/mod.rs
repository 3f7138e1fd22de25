//! Real parts for tests, benchmarks and the local run (feature `testkit`, never in the production
//! binary: this is the only code that signs tokens): a Clerk stand-in over loopback HTTP, a
//! throwaway PostgreSQL, and the service started on port 0 with both.

pub mod app;
pub mod clerk;
pub mod postgres;

pub use app::{Pooler, TestApp, TestAppBuilder, logs};
pub use clerk::{ClerkStandIn, Fault, SigningKey};
pub use postgres::{PgCluster, TestDatabase, TlsCluster, TlsFiles};
