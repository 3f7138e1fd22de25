//! `/users/me`: the signed-in user's record, created on first sight.

use std::collections::BTreeMap;

use poem::http::StatusCode;
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, Object, OpenApi,
    payload::Json,
    registry::{MetaMediaType, MetaRequest, Registry},
    types::Type,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    ApiTags,
    error::{ApiError, Problem, operation_errors, read_body},
    middleware::limit_16k,
    payload::{JsonBody, Nullable},
};
use super::{AppState, Session};
use crate::db::users::UserRow;

/// The service's record of a Clerk user. Every key is always present; `null` where Clerk has no
/// value.
#[derive(Debug, Clone, PartialEq, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename = "User")]
pub struct User {
    /// The service's own id for this user (UUIDv7).
    pub id: Uuid,
    /// Clerk's user id, `user_…`.
    pub clerk_id: String,
    /// The user's primary email address at Clerk (the one `primary_email_address_id` names), or
    /// `null`.
    pub email: Nullable<String>,
    /// The first name at Clerk, or `null`.
    pub first_name: Nullable<String>,
    /// The last name at Clerk, or `null`.
    pub last_name: Nullable<String>,
    /// The username at Clerk, or `null` (the instance may not use usernames).
    pub username: Nullable<String>,
    /// The profile image at Clerk, or `null`.
    pub image_url: Nullable<String>,
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
            email: row.email.into(),
            first_name: row.first_name.into(),
            last_name: row.last_name.into(),
            username: row.username.into(),
            image_url: row.image_url.into(),
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

/// The body of `PATCH /users/me`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "UserUpdate")]
pub struct UserUpdate {
    /// A JSON Merge Patch (RFC 7396) for `metadata`: keys are merged, `null` removes a key, and
    /// nested objects merge the same way. At most 16 KiB of body, 16 KiB of merged metadata.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// The checked body of a PATCH: `{"metadata": {…}}` and nothing else. Read here rather than by the
/// framework so that each fault has its own answer: 415 for another media type, 400 for bytes
/// that are not JSON, 422 for JSON of the wrong shape.
pub struct MetadataPatch(pub serde_json::Value);

impl<'a> ApiExtractor<'a> for MetadataPatch {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <UserUpdate as Type>::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: <UserUpdate as Type>::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        req: &'a poem::Request,
        body: &mut poem::RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let json_media = req
            .content_type()
            .and_then(|c| c.parse::<mime::Mime>().ok())
            .is_some_and(|m| {
                m.type_() == mime::APPLICATION
                    && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
            });
        if !json_media {
            return Err(ApiError::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send the body as application/json",
            )
            .into());
        }
        let bytes = read_body(body).await?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::client(
                StatusCode::BAD_REQUEST,
                "invalid-json",
                format!("the body is not JSON: {e}"),
            )
        })?;
        let invalid = |detail: &str| {
            ApiError::client(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", detail)
        };
        let serde_json::Value::Object(mut fields) = value else {
            return Err(invalid("the body must be a JSON object").into());
        };
        let metadata = fields
            .remove("metadata")
            .ok_or_else(|| invalid("the body has no metadata"))?;
        if let Some(other) = fields.keys().next() {
            return Err(invalid(&format!(
                "unknown field {other:?}; only metadata can be changed"
            ))
            .into());
        }
        if !metadata.is_object() {
            return Err(invalid("metadata must be a JSON object (a merge patch)").into());
        }
        if holds_nul(&metadata) {
            return Err(invalid(
                "metadata cannot hold U+0000 in a key or a string: PostgreSQL cannot store it",
            )
            .into());
        }
        Ok(MetadataPatch(metadata))
    }
}

/// Whether U+0000 appears in any key or string of `value`, at any depth: PostgreSQL's `jsonb`
/// refuses it (`unsupported Unicode escape sequence`), so such a patch is refused before it is
/// applied, and nothing changes.
fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// The failures of `PATCH /users/me`.
#[derive(ApiResponse, Debug)]
pub enum PatchMeError {
    /// The body is not JSON (`invalid-json`).
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No token, or the token was rejected, or Clerk has no such user.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
    /// The body is larger than 16 KiB (`payload-too-large`).
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The body is not `application/json` (`unsupported-media-type`).
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// JSON of the wrong shape (`invalid-body`), or merged metadata over 16 KiB
    /// (`metadata-too-large`).
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<Problem>),
    /// A dependency is unavailable; retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// An internal error; its cause is logged, not returned.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}
operation_errors!(PatchMeError {
    BadRequest,
    Unauthorized,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    Unavailable,
    Internal
});

#[derive(ApiResponse)]
pub enum UserResponse {
    /// The user's record.
    #[oai(status = 200)]
    Ok(JsonBody<User>),
}

#[derive(ApiResponse)]
pub enum Deleted {
    /// The local record is gone (or there was none); the next `GET` creates it again from Clerk.
    #[oai(status = 204)]
    NoContent,
}

pub struct UsersApi;

#[OpenApi(
    tag = "ApiTags::Users",
    response_header(
        name = "X-Request-Id",
        ty = "String",
        description = "The request's id: the caller's `X-Request-Id` when it is 1–64 characters of `[A-Za-z0-9._-]`, else a fresh one. Every log line of the request carries it."
    )
)]
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
    ) -> Result<UserResponse, MeError> {
        let known = state
            .users
            .get_or_create(&session.claims.user_id)
            .await
            .map_err(ApiError::from)?;
        let body = JsonBody::encode_once(&known.rendered, || User::from(known.row.clone()))?;
        Ok(UserResponse::Ok(body))
    }

    /// Change the user's metadata
    ///
    /// Applies `metadata` as a JSON Merge Patch (RFC 7396) to the user's `metadata`: keys are
    /// merged, `null` removes a key. Returns the updated record. Nothing is sent to Clerk.
    #[oai(
        path = "/users/me",
        method = "patch",
        operation_id = "patchMe",
        transform = "limit_16k"
    )]
    async fn patch_me(
        &self,
        state: poem::web::Data<&AppState>,
        session: Session,
        body: MetadataPatch,
    ) -> Result<UserResponse, PatchMeError> {
        let users = &state.users;
        let row = users
            .patch_metadata(&session.claims.user_id, &body.0)
            .await
            .map_err(ApiError::from)?;
        Ok(UserResponse::Ok(JsonBody::encode(&row.into())?))
    }

    /// Delete the local record
    ///
    /// Deletes the service's record of the user (not the user at Clerk). The next `GET
    /// /users/me` creates it again from Clerk, with empty metadata.
    #[oai(path = "/users/me", method = "delete", operation_id = "deleteMe")]
    async fn delete_me(
        &self,
        state: poem::web::Data<&AppState>,
        session: Session,
    ) -> Result<Deleted, MeError> {
        let users = &state.users;
        users
            .delete(&session.claims.user_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Deleted::NoContent)
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON;

    use super::*;

    /// The response is written with serde ([`JsonBody`]); the document describes `ToJSON`.
    #[test]
    fn serde_writes_what_the_openapi_type_describes() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_795_000_000_123_456_000).unwrap();
        let full = User {
            id: Uuid::now_v7(),
            clerk_id: "user_2abc".into(),
            email: Some("ada@example.org".to_string()).into(),
            first_name: Some("Ada \"the first\"".to_string()).into(),
            last_name: Some("Lovelace".to_string()).into(),
            username: Some("ada".to_string()).into(),
            image_url: Some("https://img.clerk.com/x".to_string()).into(),
            metadata: serde_json::from_str(r#"{"theme":"dark","n":[1,2.5,null],"o":{"a":true}}"#)
                .unwrap(),
            created_at: at,
            updated_at: OffsetDateTime::from_unix_timestamp(1_795_000_001).unwrap(),
        };
        let empty = User {
            email: None.into(),
            first_name: None.into(),
            last_name: None.into(),
            username: None.into(),
            image_url: None.into(),
            metadata: BTreeMap::new(),
            ..full.clone()
        };
        for user in [full, empty] {
            let serde = serde_json::to_value(&user).unwrap();
            assert_eq!(serde, user.to_json().unwrap());
            assert_eq!(serde.as_object().unwrap().len(), 10, "{serde}");
        }
    }
}
