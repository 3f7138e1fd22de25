//! The outermost layer of every request: the request id, the request scope every log line of
//! the request carries (`telemetry::RequestScope`), the app state in the request's data, the body
//! and time limits, the metrics, and the last conversion of any error into problem+json. Nothing
//! leaves the service without passing here.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use poem::{
    Body, Endpoint, IntoResponse, Middleware, Request, Response,
    http::{HeaderName, HeaderValue, StatusCode, header},
};

use super::{
    error::{ApiError, problem_for, unreadable_body},
    state::AppState,
};
use crate::{
    metrics::Route,
    telemetry::{RequestId, RequestScope, in_request},
};

/// A constant name: a `&str` name is parsed again on every lookup and insert.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// 1–64 characters of `[A-Za-z0-9._-]`; anything else is replaced by a fresh id.
pub fn valid_request_id(v: &str) -> bool {
    (1..=RequestId::MAX).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A fresh UUIDv7, as 32 hex digits written into `buf`. The random part comes from a per-thread
/// generator seeded once from the system's randomness: uuid's own `now_v7` asks the kernel on
/// every id, a system call on the hot path, and a request id must be unique, not secret.
fn new_request_id(buf: &mut [u8; 32]) -> &str {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(uuid::Uuid::now_v7().as_u64_pair().1);
    }
    // SplitMix64: a full-period sequence per thread, well mixed.
    let next = || {
        let s = STATE.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        STATE.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&next().to_le_bytes());
    random[8..].copy_from_slice(&next().to_le_bytes()[..2]);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .simple()
        .encode_lower(buf)
}

/// The metrics route of a request: its path when it is one of the API's, else a fixed label.
fn route_label(path: &str, status: StatusCode) -> Route {
    if status == StatusCode::NOT_FOUND && !path.starts_with("/users/me") {
        return Route::Unmatched;
    }
    if path == "/docs" || path.starts_with("/docs/") {
        return Route::Docs;
    }
    Route::of_path(path).unwrap_or(Route::Other)
}

/// Bytes of an over-long chunked body read and thrown away before its 413 goes out.
const DRAIN: usize = 1024 * 1024;

fn too_large(limit: usize) -> ApiError {
    ApiError::client(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        format!("the request body is larger than {limit} bytes"),
    )
}

/// 413 for a declared length over `limit`; a chunked body is read up to the limit here so that no
/// handler ever sees more.
pub async fn limit_body(req: Request, limit: usize) -> Result<Request, ApiError> {
    if has_unread_body(&req, limit)? {
        read_body_within(req, limit).await
    } else {
        Ok(req)
    }
}

/// Whether the body must still be read against the limit (a chunked one); a declared length over
/// the limit, or one that is not a number, fails here, before any byte is read.
fn has_unread_body(req: &Request, limit: usize) -> Result<bool, ApiError> {
    let Some(len) = req.headers().get(header::CONTENT_LENGTH) else {
        return Ok(req.headers().contains_key(header::TRANSFER_ENCODING));
    };
    let len: u64 = len
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ApiError::client(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "invalid Content-Length",
            )
        })?;
    if len > limit as u64 {
        return Err(too_large(limit));
    }
    Ok(false)
}

/// The request with its chunked body read, up to `limit`. Boxed: the reader's future would
/// otherwise be part of every request's, chunked or not.
fn read_body_within(
    mut req: Request,
    limit: usize,
) -> Pin<Box<dyn Future<Output = Result<Request, ApiError>> + Send>> {
    Box::pin(async move {
        let bytes = read_chunked(req.take_body(), limit).await?;
        req.set_body(Body::from(bytes));
        Ok(req)
    })
}

/// A body of undeclared length, up to `limit` bytes. Past the limit the rest is read and dropped
/// (up to [`DRAIN`]) before the 413: a server that closes a connection with bytes still unread
/// makes the kernel reset it, and the client may lose the answer with it.
async fn read_chunked(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    use tokio::io::AsyncReadExt;
    let mut reader = body.into_async_read();
    let mut data = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut read = 0;
    loop {
        let n = reader.read(&mut buf).await.map_err(|_| unreadable_body())?;
        if n == 0 {
            break;
        }
        read += n;
        if read > limit {
            if read > limit + DRAIN {
                break;
            }
            continue;
        }
        data.extend_from_slice(&buf[..n]);
    }
    if read > limit {
        return Err(too_large(limit));
    }
    Ok(data)
}

/// A tighter body limit for one operation (poem-openapi `transform`).
pub struct BodyLimit<E> {
    inner: E,
    limit: usize,
}

impl<E: Endpoint> Endpoint for BodyLimit<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let req = limit_body(req, self.limit).await?;
        Ok(self.inner.call(req).await?.into_response())
    }
}

/// For `#[oai(transform = "...")]`: at most 16 KiB of body.
pub fn limit_16k(inner: impl Endpoint) -> impl Endpoint {
    BodyLimit {
        inner,
        limit: 16 * 1024,
    }
}

pub struct RequestContext {
    /// Put into every request's data (what poem's `data` does, one layer fewer).
    pub state: AppState,
    pub timeout: Duration,
    pub body_limit: usize,
}

impl<E: Endpoint> Middleware<E> for RequestContext {
    type Output = RequestContextEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestContextEndpoint {
            inner,
            state: self.state.clone(),
            timeout: self.timeout,
            body_limit: self.body_limit,
        }
    }
}

pub struct RequestContextEndpoint<E> {
    inner: E,
    state: AppState,
    timeout: Duration,
    body_limit: usize,
}

/// `work`'s output, or `None` once `deadline` has passed. The timer is set only when a poll of the
/// work does not finish it: a known user's answer comes from the caches in the first poll, and a
/// timer costs an allocation and, when dropped, the runtime's timer lock (shared by every worker).
/// A struct rather than an `async fn`, which would hold `work` twice.
fn within<F: Future>(deadline: Instant, work: F) -> Within<F> {
    Within {
        work,
        deadline,
        timer: None,
    }
}

pin_project_lite::pin_project! {
    struct Within<F> {
        #[pin]
        work: F,
        deadline: Instant,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.work.poll(cx) {
            return Poll::Ready(Some(out));
        }
        let deadline = *this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        timer.as_mut().poll(cx).map(|()| None)
    }
}

impl<E: Endpoint> Endpoint for RequestContextEndpoint<E> {
    type Output = Response;

    /// Not an `async fn`, and the request moved once: every byte of this future is copied into
    /// the box poem puts each request's future in, and an `async fn` keeps its arguments beside
    /// what its body moves them into (a `Request` is about 470 bytes).
    fn call(&self, mut req: Request) -> impl Future<Output = poem::Result<Response>> + Send {
        let start = Instant::now();
        req.extensions_mut().insert(self.state.clone());
        let mut fresh = [0; 32];
        let request_id = match req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()) {
            Some(id) if valid_request_id(id) => id,
            _ => new_request_id(&mut fresh),
        };
        let header = HeaderValue::from_str(request_id);
        // The path is read again after the answer (route label, `Allow`): the URI shares its
        // bytes, so holding it copies nothing.
        let uri = req.uri().clone();
        let scope = RequestScope::new(request_id, req.method().as_str(), uri.path().to_owned());
        // Reading a chunked body counts against the request's time too.
        let work = async move {
            // `limit_body`'s two steps, inline: awaiting it would move the request through its
            // future too (tried: 457 more instructions a request, 0.7%, benches/load/instructions).
            let req = match has_unread_body(&req, self.body_limit) {
                Ok(false) => req,
                Ok(true) => match read_body_within(req, self.body_limit).await {
                    Ok(req) => req,
                    Err(e) => return e.into_response(),
                },
                Err(e) => return e.into_response(),
            };
            match self.inner.call(req).await {
                Ok(resp) => resp.into_response(),
                Err(err) => problem_for(err).await,
            }
        };
        // What follows the answer is a `map`, not an `async` block awaiting it: a future awaited
        // from inside a block is held twice in that block's future.
        let answer = within(start + self.timeout, work).map(move |answer| {
            let mut resp = answer.unwrap_or_else(|| ApiError::Timeout.into_response());
            let status = resp.status();
            // RFC 9110 §15.5.6: a 405 lists the methods the resource has. poem's router answers
            // 405 before any of our code; the methods come from the document.
            if status == StatusCode::METHOD_NOT_ALLOWED
                && !resp.headers().contains_key(header::ALLOW)
                && let Some(allow) = super::allowed_methods(uri.path())
            {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            let latency = start.elapsed();
            if let Ok(v) = header {
                resp.headers_mut().insert(REQUEST_ID, v);
            }
            self.state
                .metrics
                .request(route_label(uri.path(), status), status.as_u16(), latency);
            let latency_ms = (latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
            let status = status.as_u16();
            if status >= 500 {
                tracing::warn!(status, latency_ms, "request finished");
            } else {
                tracing::info!(status, latency_ms, "request finished");
            }
            Ok(resp)
        });
        in_request(scope, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        assert!(valid_request_id("abc-DEF_1.2"));
        assert!(valid_request_id(&"a".repeat(64)));
        assert!(!valid_request_id(&"a".repeat(65)));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id("a\"b"));
        assert!(!valid_request_id("ä"));
    }

    #[test]
    fn the_body_limit_future_carries_no_buffer() {
        // Every request's future holds this one: an 8 KiB read buffer in it was copied and
        // boxed on every request.
        let future = limit_body(Request::default(), 1024);
        assert!(
            std::mem::size_of_val(&future) < 4096,
            "{} bytes",
            std::mem::size_of_val(&future)
        );
    }

    #[test]
    fn generated_request_ids_are_valid_distinct_uuid_v7() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| new_request_id(&mut [0; 32]).to_owned())
            .collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            assert!(valid_request_id(id), "{id}");
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version_num(), 7, "{id}");
        }
    }
}
