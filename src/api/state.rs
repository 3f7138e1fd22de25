//! What every handler reaches through request data: the parts of the domain the API layer calls.
//! Assembled once by `app`; the API layer only reads it.

use std::sync::Arc;

use crate::{auth::Verifier, db::Database, metrics::Metrics, users::Users, webhooks::SvixVerifier};

/// One shared instance: the request context copies it into every request, and a copy of the fields
/// themselves (a dozen reference counts and the token policy's strings) showed up on the hot path.
#[derive(Clone)]
pub struct AppState(Arc<State>);

impl AppState {
    pub fn new(state: State) -> Self {
        Self(Arc::new(state))
    }
}

impl std::ops::Deref for AppState {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0
    }
}

pub struct State {
    pub db: Database,
    pub verifier: Verifier,
    pub users: Users,
    pub metrics: Metrics,
    /// Set when `CLERK_WEBHOOK_SECRET` is.
    pub webhooks: Option<Arc<SvixVerifier>>,
}
