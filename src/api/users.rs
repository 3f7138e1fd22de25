//! `/users/me`: the signed-in user's record, created on first sight (§2, §5).

use std::collections::BTreeMap;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    ApiTags,
    error::{ApiError, Problem, operation_errors},
};
use crate::{app::AppState, auth::Session, db::users::UserRow};

/// The service's record of a Clerk user. Every key is always present; `null` where Clerk has no
/// value.
#[derive(Debug, Clone, PartialEq, Object, serde::Deserialize)]
#[oai(rename = "User")]
pub struct User {
    /// The service's own id for this user (UUIDv7).
    pub id: Uuid,
    /// Clerk's user id, `user_…`.
    pub clerk_id: String,
    /// The user's primary email address at Clerk.
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    /// The application's own JSON object for this user; never sent to Clerk.
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// When the service first stored this user (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the service last changed this record (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            clerk_id: row.clerk_id,
            email: row.email,
            first_name: row.first_name,
            last_name: row.last_name,
            username: row.username,
            image_url: row.image_url,
            metadata: match row.metadata {
                serde_json::Value::Object(map) => map.into_iter().collect(),
                // The schema's check constraint keeps metadata an object.
                _ => BTreeMap::new(),
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The failures of the `/users/me` operations that read or delete.
#[derive(ApiResponse, Debug)]
pub enum MeError {
    /// No token, or the token was rejected (`code` says which check failed), or Clerk has no such
    /// user (`user-not-found`).
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
    /// A dependency is unavailable (`database-unavailable`, `clerk-unavailable`,
    /// `clerk-misconfigured`, `signing-keys-unavailable`, `request-timeout`); retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// An internal error; its cause is logged, not returned.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}
operation_errors!(MeError {
    Unauthorized,
    Unavailable,
    Internal
});

pub struct UsersApi;

#[OpenApi(tag = "ApiTags::Users")]
impl UsersApi {
    /// The signed-in user
    ///
    /// Returns the record of the user the session token belongs to. On the first request of a
    /// user the service has never seen, it fetches the user from Clerk once and stores them.
    #[oai(path = "/users/me", method = "get", operation_id = "getMe")]
    async fn get_me(
        &self,
        state: poem::web::Data<&AppState>,
        session: Session,
    ) -> Result<Json<User>, MeError> {
        let row = state
            .users
            .get_or_create(&session.claims.user_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Json(row.into()))
    }
}
