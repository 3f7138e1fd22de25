//! Small assertions shared by the areas.

use std::path::PathBuf;

use clerk_users::{
    api::error::Problem,
    testkit::{
        PgCluster, TestApp,
        clerk::{clerk_user_json, now_secs, random_id},
    },
    webhooks::SvixVerifier,
};
use serde_json::{Value, json};

/// The `/metrics` text of `app`.
pub async fn metrics(app: &TestApp) -> String {
    app.get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Read a problem response, checking its media type and that `status` and `code` agree.
pub async fn problem(
    resp: reqwest::Response,
    status: u16,
    code: &str,
) -> (reqwest::header::HeaderMap, Problem) {
    assert_eq!(resp.status().as_u16(), status, "status");
    let headers = resp.headers().clone();
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json",
        "media type"
    );
    let text = resp.text().await.unwrap();
    let p: Problem = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not a problem document ({e}): {text}"));
    assert_eq!(p.status, status, "{text}");
    assert_eq!(p.code, code, "{text}");
    assert_eq!(p.kind, format!("urn:clerk-users:problem:{code}"));
    assert!(!p.title.is_empty() && !p.detail.is_empty());
    (headers, p)
}

/// A 401 with the expected code and the RFC 6750 challenge.
pub async fn rejected(resp: reqwest::Response, code: &str) -> Problem {
    let (headers, p) = problem(resp, 401, code).await;
    let challenge = headers
        .get("www-authenticate")
        .expect("WWW-Authenticate")
        .to_str()
        .unwrap();
    if code == "token-missing" {
        assert_eq!(challenge, "Bearer");
    } else {
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
            "{challenge}"
        );
    }
    p
}

/// A 503 with the expected code and a `Retry-After` in seconds.
pub async fn unavailable(resp: reqwest::Response, code: &str) -> Problem {
    let (headers, p) = problem(resp, 503, code).await;
    let retry: u64 = headers
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    p
}

/// The webhook secret the tests give the service (`clerk_webhook_secret`).
pub const WEBHOOK_SECRET: &str = "whsec_dGVzdGtpdC13ZWJob29rLXNlY3JldC1rZXkhIQ==";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv's program `name`, or a panic saying how to get it.
pub fn venv_bin(name: &str) -> PathBuf {
    let bin = root().join(".venv/bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: create the virtualenv with `python3 -m venv .venv && .venv/bin/pip install \
         -r tests/requirements.txt` (the README's test command, .ci/test, does)",
        bin.display()
    );
    bin
}

/// A service with webhooks enabled, and a token valid for an hour of a user whose `username` and
/// `last_name` are null at Clerk.
pub async fn app_with_null_fields() -> (TestApp, String) {
    let app = TestApp::builder()
        .with("clerk_webhook_secret", WEBHOOK_SECRET)
        .spawn()
        .await;
    let id = format!("user_{}", random_id(27));
    let email = format!("{}@example.org", id.to_lowercase());
    app.clerk
        .add_user(clerk_user_json(&id, Some("Ada"), None, Some(&email)));
    let mut claims = app.clerk.claims_for(&id);
    claims["exp"] = json!(now_secs() + 3600);
    let token = app.clerk.sign(&claims);
    (app, token)
}

/// POST `body` to `/webhooks/clerk` as Svix delivers it, signed with [`WEBHOOK_SECRET`] at
/// `timestamp` (Unix seconds). The signature header holds a non-matching entry before the right
/// one: any entry may match.
pub async fn deliver_webhook_at(
    app: &TestApp,
    svix_id: &str,
    timestamp: u64,
    body: &Value,
) -> reqwest::Response {
    let body = body.to_string();
    let ts = timestamp.to_string();
    let sig = SvixVerifier::new(WEBHOOK_SECRET)
        .unwrap()
        .sign(svix_id, &ts, body.as_bytes());
    app.http
        .post(format!("{}/webhooks/clerk", app.url))
        .header("content-type", "application/json")
        .header("svix-id", svix_id)
        .header("svix-timestamp", ts)
        .header("svix-signature", format!("v1,bm90IGl0 v1,{sig}"))
        .body(body)
        .send()
        .await
        .unwrap()
}

/// [`deliver_webhook_at`] now.
pub async fn deliver_webhook(app: &TestApp, svix_id: &str, body: &Value) -> reqwest::Response {
    deliver_webhook_at(app, svix_id, now_secs(), body).await
}

/// A PostgreSQL cluster of the test's own, which it may stop and start; removed when dropped.
pub async fn own_cluster(name: &str) -> PgCluster {
    let root = std::env::temp_dir().join(format!(
        "clerk-users-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    tokio::task::spawn_blocking(move || PgCluster::start(&root, true))
        .await
        .unwrap()
        .unwrap()
}

/// Stop `cluster`'s server, off the async worker threads.
pub async fn stop_cluster(cluster: PgCluster) -> PgCluster {
    tokio::task::spawn_blocking(move || {
        cluster.stop().unwrap();
        cluster
    })
    .await
    .unwrap()
}

/// Start `cluster`'s server again, on its port, off the async worker threads.
pub async fn start_cluster(cluster: PgCluster) -> PgCluster {
    tokio::task::spawn_blocking(move || {
        cluster.start_server().unwrap();
        cluster
    })
    .await
    .unwrap()
}
