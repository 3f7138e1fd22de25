//! Small assertions shared by the areas.

use clerk_users::{api::error::Problem, testkit::TestApp};

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
