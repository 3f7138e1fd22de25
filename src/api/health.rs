//! Liveness, readiness and the database ping: no authentication, cheap, never hanging.

use poem_openapi::{
    ApiResponse, Object, OpenApi,
    payload::{Json, PlainText},
};

use super::AppState;
use super::{
    ApiTags,
    error::{ApiError, Problem, operation_errors},
};
use crate::{clerk::breaker::BreakerState, db};

/// A one-word status.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(rename = "Status")]
pub struct Status {
    /// `ok`
    pub status: String,
}

/// Readiness by dependency.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(rename = "Readiness")]
pub struct Readiness {
    /// `ready` or `not-ready`.
    pub status: String,
    /// Whether the database answered.
    pub database: bool,
    /// Whether usable signing keys are held.
    pub signing_keys: bool,
}

#[derive(ApiResponse)]
pub enum StatusResponse {
    /// `{"status":"ok"}`
    #[oai(status = 200)]
    Ok(Json<Status>),
}

#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// The figures, in Prometheus' text format.
    #[oai(status = 200)]
    Ok(PlainText<String>),
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// The database answers and signing keys are loaded.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// Not ready; `detail` names what is missing.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u64),
}

/// The failure of the database ping.
#[derive(ApiResponse, Debug)]
pub enum PingError {
    /// `select 1` did not succeed in time (`database-unavailable`).
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// An internal error; its cause is logged, not returned.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}
operation_errors!(PingError {
    Unavailable,
    Internal
});

async fn db_ok(state: &AppState) -> Result<(), ApiError> {
    match tokio::time::timeout(db::PING_TIMEOUT, db::ping(&state.db)).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(db::DbError::Unavailable("ping timed out".into()).into()),
    }
}

pub struct HealthApi;

#[OpenApi(
    tag = "ApiTags::Health",
    response_header(
        name = "X-Request-Id",
        ty = "String",
        description = "The request's id: the caller's `X-Request-Id` when it is 1–64 characters of `[A-Za-z0-9._-]`, else a fresh one."
    )
)]
impl HealthApi {
    /// Liveness
    ///
    /// 200 while the process runs.
    #[oai(path = "/healthz", method = "get", operation_id = "getHealthz")]
    async fn healthz(&self) -> StatusResponse {
        StatusResponse::Ok(Json(Status {
            status: "ok".into(),
        }))
    }

    /// Readiness
    ///
    /// 200 when the database answers and signing keys are loaded; else 503 naming what is missing.
    #[oai(path = "/readyz", method = "get", operation_id = "getReadyz")]
    async fn readyz(&self, state: poem::web::Data<&AppState>) -> ReadyResponse {
        let database = db_ok(&state).await.is_ok();
        let signing_keys = state.verifier.keys.is_ready();
        if database && signing_keys {
            return ReadyResponse::Ready(Json(Readiness {
                status: "ready".into(),
                database,
                signing_keys,
            }));
        }
        let missing: Vec<&str> = [
            (!database).then_some("database"),
            (!signing_keys).then_some("signing keys"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let code = if database {
            "signing-keys-unavailable"
        } else {
            "database-unavailable"
        };
        let problem = Problem {
            kind: format!("urn:clerk-users:problem:{code}"),
            title: "Service Unavailable".into(),
            status: 503,
            detail: format!("not ready: {} unavailable", missing.join(" and ")),
            code: code.into(),
        };
        ReadyResponse::Unavailable(Json(problem), 5)
    }

    /// Metrics
    ///
    /// Prometheus text format: requests by route and status, latency, token verifications by
    /// outcome, key fetches and the key set's age, Backend API calls and the circuit breaker's
    /// state, the pace of Backend API requests (waiting now, time waited), user lookups, the pool.
    #[oai(path = "/metrics", method = "get", operation_id = "getMetrics")]
    async fn metrics(&self, state: poem::web::Data<&AppState>) -> MetricsResponse {
        let pool = state.db.pool().status();
        let keys = &state.verifier.keys;
        let age = keys.age().map_or(-1.0, |a| a.as_secs_f64());
        let loaded = keys.current().map_or(0.0, |s| s.len() as f64);
        let pace = state.users.clerk().pace();
        let paced = [(
            "clerk_users_clerk_api_pace_wait_seconds_total",
            "Time Backend API requests have waited for their turn under CLERK_API_RATE_LIMIT.",
            pace.waited().as_secs_f64(),
        )];
        MetricsResponse::Ok(PlainText(state.metrics.render_with(
            &[
                (
                    "clerk_users_signing_keys_age_seconds",
                    "Age of the held signing key set (-1 when none is held; 0 for a pinned key).",
                    age,
                ),
                (
                    "clerk_users_signing_keys",
                    "Usable signing keys held.",
                    loaded,
                ),
                (
                    "clerk_users_clerk_breaker_state",
                    "The Backend API circuit breaker: 0 closed, 1 half-open (one probe), 2 open.",
                    match state.users.clerk().breaker().state() {
                        BreakerState::Closed => 0.0,
                        BreakerState::HalfOpen => 1.0,
                        BreakerState::Open => 2.0,
                    },
                ),
                (
                    "clerk_users_clerk_api_pace_waiting",
                    "Backend API requests waiting for their turn under CLERK_API_RATE_LIMIT.",
                    pace.waiting() as f64,
                ),
                (
                    "clerk_users_clerk_api_rate_limit",
                    "Most Backend API requests this process sends in any 10 seconds.",
                    f64::from(pace.limit()),
                ),
                (
                    "clerk_users_user_cache_entries",
                    "Users held in the user cache (an estimate).",
                    state.users.cache().entries() as f64,
                ),
                (
                    "clerk_users_user_cache_bypassed",
                    "Whether the user cache is bypassed because change notifications are not known to \
                     arrive (see the log): every lookup reads the database.",
                    if state.users.cache().bypassed() {
                        1.0
                    } else {
                        0.0
                    },
                ),
                (
                    "clerk_users_token_cache_entries",
                    "Verified tokens held (an estimate).",
                    state.verifier.cached_tokens() as f64,
                ),
                (
                    "clerk_users_db_reachable",
                    "1 while the database can be reached, 0 while it is known to be down.",
                    if state.db.is_down() { 0.0 } else { 1.0 },
                ),
                (
                    "clerk_users_db_unreachable_seconds",
                    "How long the database has been known to be down (0 while it is reachable).",
                    state.db.down_for().map_or(0.0, |d| d.as_secs_f64()),
                ),
                (
                    "clerk_users_db_pool_max_size",
                    "Largest number of pooled connections.",
                    pool.max_size as f64,
                ),
                (
                    "clerk_users_db_pool_size",
                    "Open pooled connections.",
                    pool.size as f64,
                ),
                (
                    "clerk_users_db_pool_available",
                    "Idle pooled connections.",
                    pool.available as f64,
                ),
                (
                    "clerk_users_db_pool_waiting",
                    "Requests waiting for a connection.",
                    pool.waiting as f64,
                ),
            ],
            &paced,
        )))
    }

    /// Database ping
    ///
    /// 200 `{"status":"ok"}` when `SELECT 1` succeeds; else 503.
    #[oai(path = "/db-test/ping", method = "get", operation_id = "pingDatabase")]
    async fn db_ping(
        &self,
        state: poem::web::Data<&AppState>,
    ) -> Result<StatusResponse, PingError> {
        db_ok(&state).await?;
        Ok(StatusResponse::Ok(Json(Status {
            status: "ok".into(),
        })))
    }
}
