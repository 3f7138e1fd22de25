//! Network plumbing under the domain: deadlines on the server's connections, and the outgoing HTTP
//! client with its bounded reads. Knows nothing of Clerk, tokens or users.

/// The outgoing HTTP client and the helpers that read its answers within a bound.
mod client;
/// Per-connection deadlines for the server's listener (poem keeps none of its own).
mod deadline;

pub use self::{
    client::{describe, http_client, read_limited},
    deadline::{DeadlineAcceptor, Limits},
};
