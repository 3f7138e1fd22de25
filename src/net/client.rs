//! The outgoing side: the one HTTP client of the process and the bounded reads every caller of an
//! outside service (Clerk's JWKS, its Backend API) shares.

use std::time::Duration;

/// The one HTTP client of the process: rustls, no redirects (a redirect could carry the secret
/// key elsewhere), no proxy lookup from the environment.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("clerk-users/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client settings are static and valid")
}

/// A transport error in words, without the URL (which could name a host the logs need not keep).
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "broken body"
    } else {
        "request failed"
    };
    kind.to_string()
}

/// Read a body up to `limit` bytes. `Err(None)` when it is longer.
pub async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, Option<reqwest::Error>> {
    if resp.content_length().is_some_and(|n| n as usize > limit) {
        return Err(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Some)? {
        if body.len() + chunk.len() > limit {
            return Err(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
