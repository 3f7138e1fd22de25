//! The HTTP interface (§2): the OpenAPI operations, their tags, and the document itself.

pub mod error;
pub mod health;
pub mod middleware;
pub mod payload;
pub mod users;
pub mod webhooks;

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
