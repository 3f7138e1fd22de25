//! The one place that decides outward answers to failures: [`ApiError`] maps every failure to its
//! status, `code`, `WWW-Authenticate` and `Retry-After`, as an RFC 9457 problem+json body. Causes
//! go to the log; a 500 tells the caller nothing of its cause.

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::Object;

use crate::{
    auth::{AuthError, keys::Unavailable},
    clerk::ClerkError,
    db::DbError,
    users::UsersError,
};

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename = "Problem")]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:clerk-users:problem:{code}`.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for people.
    pub detail: String,
    /// A stable machine-readable reason, such as `token-expired` or `database-unavailable`.
    pub code: String,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every failure a request can meet.
#[derive(Debug)]
pub enum ApiError {
    Auth(AuthError),
    Users(UsersError),
    Db(DbError),
    /// The request took longer than `REQUEST_TIMEOUT_MS`.
    Timeout,
    /// A 4xx about the request itself (bad body, unknown route, …).
    Client {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
    /// A bug or an unexpected state: logged, never described to the caller.
    Internal(String),
}

impl ApiError {
    pub fn internal(cause: impl Into<String>) -> Self {
        Self::Internal(cause.into())
    }

    pub fn client(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            detail: detail.into(),
        }
    }
}

/// The outward answer of a failure.
pub struct Parts {
    pub problem: Problem,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<u64>,
}

fn problem(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
    Problem {
        kind: format!("urn:clerk-users:problem:{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail: detail.into(),
        code: code.to_string(),
    }
}

fn unavailable(code: &str, detail: &str, retry_after: u64) -> Parts {
    Parts {
        problem: problem(StatusCode::SERVICE_UNAVAILABLE, code, detail),
        www_authenticate: None,
        retry_after: Some(retry_after.max(1)),
    }
}

fn unauthorized(code: &str, detail: &str, presented: bool) -> Parts {
    // RFC 6750 §3: describe the error only when a token was presented.
    let challenge = if presented {
        format!("Bearer error=\"invalid_token\", error_description=\"{detail}\"")
    } else {
        "Bearer".to_string()
    };
    Parts {
        problem: problem(StatusCode::UNAUTHORIZED, code, detail),
        www_authenticate: Some(challenge),
        retry_after: None,
    }
}

fn plain(status: StatusCode, code: &str, detail: impl Into<String>) -> Parts {
    Parts {
        problem: problem(status, code, detail),
        www_authenticate: None,
        retry_after: None,
    }
}

impl ApiError {
    /// Decide the answer, and log the cause where there is one.
    pub fn into_parts(self) -> Parts {
        match self {
            Self::Auth(AuthError::Missing(why)) => unauthorized("token-missing", why, false),
            Self::Auth(AuthError::Token(e)) => unauthorized(e.code(), e.description(), true),
            Self::Auth(AuthError::KeysUnavailable(why)) => {
                let detail = match why {
                    Unavailable::NeverLoaded => "signing keys have not been loaded yet",
                    Unavailable::Stale => "signing keys could not be refreshed for too long",
                };
                tracing::warn!(detail, "token not checked: no usable signing keys");
                unavailable("signing-keys-unavailable", detail, 5)
            }
            Self::Users(UsersError::Clerk(ClerkError::NotFound)) => unauthorized(
                "user-not-found",
                "the user of this token does not exist at Clerk",
                true,
            ),
            Self::Users(UsersError::Clerk(ClerkError::Misconfigured(status))) => {
                tracing::error!(status, "Clerk Backend API rejected CLERK_SECRET_KEY");
                unavailable(
                    "clerk-misconfigured",
                    "the service cannot reach Clerk's Backend API",
                    30,
                )
            }
            Self::Users(UsersError::Clerk(ClerkError::Unavailable {
                retry_after,
                reason,
            })) => {
                tracing::warn!(%reason, "Clerk Backend API unavailable");
                unavailable(
                    "clerk-unavailable",
                    "Clerk's Backend API is unavailable",
                    retry_after.as_secs(),
                )
            }
            Self::Users(UsersError::MetadataTooLarge) => plain(
                StatusCode::UNPROCESSABLE_ENTITY,
                "metadata-too-large",
                "the merged metadata would be larger than 16 KiB",
            ),
            Self::Users(UsersError::Db(e)) | Self::Db(e) => match e {
                DbError::Unreachable(cause) | DbError::Unavailable(cause) => {
                    tracing::warn!(%cause, "database unavailable");
                    unavailable("database-unavailable", "the database is unavailable", 2)
                }
                DbError::Other(cause) => Self::Internal(cause).into_parts(),
            },
            Self::Timeout => unavailable("request-timeout", "the request took too long", 1),
            Self::Client {
                status,
                code,
                detail,
            } => plain(status, code, detail),
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "an internal error occurred",
                )
            }
        }
    }
}

impl Parts {
    pub fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.problem).unwrap_or_default();
        let mut resp = Response::builder()
            .status(status)
            .content_type(PROBLEM_JSON)
            .body(body);
        if let Some(c) = self.www_authenticate.and_then(|c| c.parse().ok()) {
            resp.headers_mut()
                .insert(poem::http::header::WWW_AUTHENTICATE, c);
        }
        if let Some(r) = self.retry_after {
            resp.headers_mut()
                .insert(poem::http::header::RETRY_AFTER, r.into());
        }
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_parts().into_response()
    }
}

impl From<ApiError> for poem::Error {
    fn from(e: ApiError) -> Self {
        poem::Error::from_response(e.into_response())
    }
}

impl From<UsersError> for ApiError {
    fn from(e: UsersError) -> Self {
        Self::Users(e)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        Self::Db(e)
    }
}

/// Build an operation's error type from an [`ApiError`]. Each operation declares, in its own
/// `ApiResponse` enum, only the statuses it can return (variants named `BadRequest`,
/// `Unauthorized`, `NotFound`, `PayloadTooLarge`, `UnsupportedMediaType`, `Unprocessable`,
/// `Unavailable`, `Internal`); anything else it meets is answered as a 500 and logged as a bug.
macro_rules! operation_errors {
    ($ty:ident { $($variant:ident),+ $(,)? }) => {
        impl From<$crate::api::error::ApiError> for $ty {
            fn from(e: $crate::api::error::ApiError) -> Self {
                let parts = e.into_parts();
                match parts.problem.status {
                    $( s if s == $crate::api::error::operation_errors!(@status $variant) => {
                        $crate::api::error::operation_errors!(@make $ty, $variant, parts)
                    } )+
                    s => {
                        ::tracing::error!(status = s, code = %parts.problem.code, "operation met an error it does not declare");
                        let parts = $crate::api::error::ApiError::internal("undeclared error").into_parts();
                        $ty::Internal(::poem_openapi::payload::Json(parts.problem))
                    }
                }
            }
        }
    };
    (@status BadRequest) => { 400 };
    (@status Unauthorized) => { 401 };
    (@status NotFound) => { 404 };
    (@status PayloadTooLarge) => { 413 };
    (@status UnsupportedMediaType) => { 415 };
    (@status Unprocessable) => { 422 };
    (@status Unavailable) => { 503 };
    (@status Internal) => { 500 };
    (@make $ty:ident, Unauthorized, $p:expr) => {
        $ty::Unauthorized(::poem_openapi::payload::Json($p.problem), $p.www_authenticate.unwrap_or_default())
    };
    (@make $ty:ident, Unavailable, $p:expr) => {
        $ty::Unavailable(::poem_openapi::payload::Json($p.problem), $p.retry_after.unwrap_or(1))
    };
    (@make $ty:ident, $variant:ident, $p:expr) => {
        $ty::$variant(::poem_openapi::payload::Json($p.problem))
    };
}
pub(crate) use operation_errors;

/// The whole body of a request whose extractor reads it itself (size already bounded by the
/// middleware); a body that cannot be read is a 400.
pub async fn read_body(body: &mut poem::RequestBody) -> poem::Result<Vec<u8>> {
    body.take()?
        .into_vec()
        .await
        .map_err(|_| unreadable_body().into())
}

/// 400 for a body the connection broke off (or otherwise could not deliver).
pub fn unreadable_body() -> ApiError {
    ApiError::client(
        StatusCode::BAD_REQUEST,
        "bad-request",
        "the body could not be read",
    )
}

/// The router's catch-all: errors that did not come from our own responses (unknown route, wrong
/// method, a body the framework could not parse, …) become problem+json too.
pub async fn problem_for(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => ("not-found", "no such resource".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            "this method is not allowed here".to_string(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload-too-large",
            "the request body is too large".to_string(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", err.to_string()),
        StatusCode::BAD_REQUEST => ("bad-request", err.to_string()),
        StatusCode::UNPROCESSABLE_ENTITY => ("unprocessable", err.to_string()),
        s if s.is_client_error() => ("bad-request", err.to_string()),
        _ => return ApiError::internal(err.to_string()).into_response(),
    };
    ApiError::client(status, code, detail).into_response()
}
