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

use std::{collections::HashMap, sync::OnceLock};

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

/// The OpenAPI document: poem-openapi's, with header names spelled as they are sent. poem-openapi
/// writes the names of extra headers in upper case (`SVIX-ID`); the Svix headers are named in
/// lower case, as Svix sends them, and the response headers as RFC 9110 and their RFCs spell them,
/// so that a generated client which reads headers from a `Headers` map (lower-cased) finds them.
/// Served at `/openapi.json`, printed by `clerk-users openapi`, committed as `openapi.json`.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut text = openapi_service().spec();
        for (written, spelled) in [
            ("SVIX-ID", "svix-id"),
            ("SVIX-TIMESTAMP", "svix-timestamp"),
            ("SVIX-SIGNATURE", "svix-signature"),
            ("X-REQUEST-ID", "X-Request-Id"),
            ("WWW-AUTHENTICATE", "WWW-Authenticate"),
            ("RETRY-AFTER", "Retry-After"),
        ] {
            // Whole JSON strings only: a name, never a word inside a description.
            text = text.replace(&format!("\"{written}\""), &format!("\"{spelled}\""));
        }
        with_links(&text).unwrap_or(text)
    })
}

/// The document with OpenAPI links (3.0, Link Object) between the `/users/me` operations, which
/// poem-openapi does not write: what a client, or schemathesis's stateful phase, may do next with
/// the same session. No parameter passes along: the token names the user.
fn with_links(text: &str) -> Option<String> {
    let mut spec: serde_json::Value = serde_json::from_str(text).ok()?;
    let me = spec.get_mut("paths")?.get_mut("/users/me")?;
    for (method, status, links) in [
        (
            "get",
            "200",
            [
                ("patchMe", "Change this user's metadata."),
                ("deleteMe", "Delete this user's local record."),
            ],
        ),
        (
            "patch",
            "200",
            [
                ("getMe", "Read the record with the changed metadata."),
                ("deleteMe", "Delete this user's local record."),
            ],
        ),
        (
            "delete",
            "204",
            [
                (
                    "getMe",
                    "Create the record again from Clerk, with empty metadata.",
                ),
                (
                    "patchMe",
                    "Create the record again from Clerk, then change its metadata.",
                ),
            ],
        ),
    ] {
        let response = me.get_mut(method)?.get_mut("responses")?.get_mut(status)?;
        let links: serde_json::Map<String, serde_json::Value> = links
            .into_iter()
            .map(|(op, description)| {
                (
                    op.to_string(),
                    serde_json::json!({"operationId": op, "description": description}),
                )
            })
            .collect();
        response
            .as_object_mut()?
            .insert("links".into(), links.into());
    }
    serde_json::to_string_pretty(&spec).ok()
}

/// The `Allow` header of a 405 for `path` (RFC 9110 §15.5.6): the methods the document declares
/// for it, with `HEAD` wherever `GET` is served (poem answers `HEAD` with the `GET` operation).
/// `None` for a path the service does not have. Read from the document itself, so the header and
/// the document cannot disagree.
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    static ALLOW: OnceLock<HashMap<String, String>> = OnceLock::new();
    let table = ALLOW.get_or_init(|| {
        let spec: serde_json::Value = serde_json::from_str(document()).unwrap_or_default();
        let mut table = HashMap::new();
        if let Some(paths) = spec["paths"].as_object() {
            for (path, ops) in paths {
                let mut methods: Vec<String> = Vec::new();
                for method in ["get", "head", "post", "put", "patch", "delete"] {
                    if ops.get(method).is_some() || (method == "head" && ops.get("get").is_some()) {
                        methods.push(method.to_ascii_uppercase());
                    }
                }
                table.insert(path.clone(), methods.join(", "));
            }
        }
        table
    });
    if let Some(allow) = table.get(path) {
        return Some(allow.as_str());
    }
    is_document_path(path).then_some(DOCUMENT_METHODS)
}

/// The methods of the document and Swagger UI.
pub const DOCUMENT_METHODS: &str = "GET, HEAD";

/// `/openapi.json` and Swagger UI's `/docs…`: served beside the operations, for `GET` only.
pub fn is_document_path(path: &str) -> bool {
    path == "/openapi.json" || path == "/docs" || path.starts_with("/docs/")
}
