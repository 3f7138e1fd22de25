//! The HTTP layer: everything that knows poem's request and response types. The domain below
//! (`auth`, `users`, `webhooks`, `clerk`, `db`) is called from here and never calls back.

/// The one mapping of every failure to its status, problem+json body and headers.
pub mod error;
/// Liveness, readiness, the database check and `/metrics`.
pub mod health;
/// Around every request: request id, log scope, time and body limits, the plain 401/404/405 rewritten.
pub mod middleware;
/// Response bodies serialized once by serde while the document still describes their schema.
pub mod payload;
/// The `Session` extractor: holding one means the request's token passed every check.
pub mod session;
/// What handlers reach through request data.
pub mod state;
/// `/users/me`: read, patch, delete.
pub mod users;
/// `POST /webhooks/clerk`: Svix-signed events from Clerk.
pub mod webhooks;

pub use self::{session::Session, state::AppState};

use poem_openapi::{OpenApiService, Tags};

#[derive(Tags)]
pub enum ApiTags {
    /// The signed-in user's record.
    Users,
    /// Liveness, readiness, dependency checks and metrics.
    Health,
    /// Events from Clerk.
    Webhooks,
}

pub type Apis = (users::UsersApi, webhooks::WebhooksApi, health::HealthApi);

/// The OpenAPI service: shared by the router, the `openapi` subcommand and the tests. It needs no
/// settings, so the document can be printed anywhere.
pub fn openapi_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (users::UsersApi, webhooks::WebhooksApi, health::HealthApi),
        "clerk-users",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Verifies Clerk session tokens offline against Clerk's signing keys and serves the \
             signed-in user's record, created from Clerk's Backend API on first sight. Every error \
             is `application/problem+json` with a stable `code`.",
    )
    .server("/")
}
