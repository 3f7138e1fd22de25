//! `POST /webhooks/clerk`: Svix-signed Clerk events keep stored users in step with Clerk.

use std::{
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use poem::http::StatusCode;
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, Object, OpenApi,
    payload::Json,
    registry::{MetaMediaType, MetaRequest, Registry},
    types::Type,
};

use super::{
    ApiTags, AppState,
    error::{ApiError, Problem, operation_errors, read_body},
};
use crate::webhooks::{self, Action};

/// A Clerk event as Svix delivers it. `data` is Clerk's User object for `user.created` and
/// `user.updated`, and `{"id", "object", "deleted"}` for `user.deleted`.
#[derive(Debug, Object)]
#[oai(rename = "ClerkWebhookEvent")]
pub struct ClerkWebhookEvent {
    /// `user.created`, `user.updated`, `user.deleted`; other types are acknowledged and ignored.
    #[oai(rename = "type")]
    pub kind: String,
    /// `event`
    pub object: Option<String>,
    /// When Clerk emitted the event, Unix milliseconds.
    pub timestamp: Option<i64>,
    /// The event's subject.
    pub data: BTreeMap<String, serde_json::Value>,
}

/// A delivery whose Svix signature and timestamp have been checked.
pub struct VerifiedEvent {
    svix_id: String,
    kind: String,
    action: Action,
}

fn header<'a>(req: &'a poem::Request, name: &str) -> &'a str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn bad(e: webhooks::WebhookError) -> poem::Error {
    ApiError::client(StatusCode::BAD_REQUEST, e.code(), e.to_string()).into()
}

impl<'a> ApiExtractor<'a> for VerifiedEvent {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <ClerkWebhookEvent as Type>::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some(
                "The raw event, signed by Svix (see the `svix-id`, `svix-timestamp` and \
                 `svix-signature` headers); the signature covers these exact bytes.",
            ),
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: <ClerkWebhookEvent as Type>::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        req: &'a poem::Request,
        body: &mut poem::RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let Some(state) = req.data::<AppState>() else {
            return Err(ApiError::internal("AppState missing from the request").into());
        };
        let Some(verifier) = &state.webhooks else {
            let detail = "webhooks are not enabled (CLERK_WEBHOOK_SECRET is unset)";
            return Err(ApiError::client(StatusCode::NOT_FOUND, "not-found", detail).into());
        };
        let bytes = read_body(body).await?;
        let svix_id = header(req, "svix-id");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        verifier
            .verify(
                svix_id,
                header(req, "svix-timestamp"),
                header(req, "svix-signature"),
                &bytes,
                now,
            )
            .map_err(bad)?;
        let (kind, action) = webhooks::parse_event(&bytes).map_err(bad)?;
        Ok(Self {
            svix_id: svix_id.to_string(),
            kind,
            action,
        })
    }
}

#[derive(ApiResponse)]
pub enum Acknowledged {
    /// Processed, ignored (another event type) or already processed (a replayed `svix-id`).
    #[oai(status = 204)]
    NoContent,
}

/// The failures of `POST /webhooks/clerk`.
#[derive(ApiResponse, Debug)]
pub enum WebhookError {
    /// A missing Svix header, a bad signature, a timestamp more than 5 minutes from now, or a
    /// body that is not a Clerk event (`webhook-headers-missing`, `webhook-signature-invalid`,
    /// `webhook-timestamp-stale`, `webhook-body-invalid`).
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// Webhooks are not enabled (`CLERK_WEBHOOK_SECRET` is unset).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The body is larger than the request body limit (`payload-too-large`; 64 KiB by default).
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The database is unavailable; Svix retries the delivery later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// An internal error; its cause is logged, not returned.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}
operation_errors!(WebhookError {
    BadRequest,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    Internal
});

pub struct WebhooksApi;

#[OpenApi(
    tag = "ApiTags::Webhooks",
    response_header(
        name = "X-Request-Id",
        ty = "String",
        description = "The request's id: the caller's `X-Request-Id` when it is 1–64 characters of `[A-Za-z0-9._-]`, else a fresh one."
    )
)]
impl WebhooksApi {
    /// Receive a Clerk webhook
    ///
    /// Point a Clerk webhook endpoint at this URL. `user.created` and `user.updated` store the
    /// user (never replacing a newer version with an older one); `user.deleted` deletes the
    /// record. Each `svix-id` is processed once. Enabled by `CLERK_WEBHOOK_SECRET`.
    #[oai(
        path = "/webhooks/clerk",
        method = "post",
        operation_id = "receiveClerkWebhook",
        request_header(
            name = "svix-id",
            ty = "String",
            description = "The message id (`msg_…`); a delivery with an id already processed changes nothing."
        ),
        request_header(
            name = "svix-timestamp",
            ty = "String",
            description = "When Svix sent the delivery, Unix seconds; more than 5 minutes from now is refused."
        ),
        request_header(
            name = "svix-signature",
            ty = "String",
            description = "Space-separated `v1,<base64>` entries: HMAC-SHA256 of `{svix-id}.{svix-timestamp}.{body}` under the endpoint's signing secret."
        )
    )]
    async fn receive(
        &self,
        state: poem::web::Data<&AppState>,
        event: VerifiedEvent,
    ) -> Result<Acknowledged, WebhookError> {
        let users = &state.users;
        let fresh = users
            .apply_webhook(&event.svix_id, &event.kind, &event.action)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(kind = %event.kind, replay = !fresh, "webhook processed");
        Ok(Acknowledged::NoContent)
    }
}
