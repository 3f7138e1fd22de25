//! Network plumbing under the domain: deadlines on the server's connections, the outgoing HTTP
//! client with its bounded reads, and PostgreSQL's connection URLs and TLS. Knows nothing of
//! Clerk, tokens or users.

/// The outgoing HTTP client and the helpers that read its answers within a bound.
mod client;
/// Per-connection deadlines for the server's listener (poem keeps none of its own).
mod deadline;
/// PostgreSQL connection URLs as libpq reads them, and the TLS they ask for.
pub mod postgres;

pub use self::{
    client::{describe, http_client, read_limited},
    deadline::{DeadlineAcceptor, Limits},
};
