//! The request a log line belongs to (the README's "Operations": `request_id`, `method`, `path`, and `clerk_id` once
//! authenticated). Held in a task-local for the life of the request's future rather than in a
//! tracing span: a span costs a registry slot, a formatted copy of its fields and a dispatch on
//! every poll, which together were a tenth of `GET /users/me` (BENCHMARKS.md). The formatters
//! (`format`) print it as the line's `span` object, as they would a span's fields.

use std::{borrow::Cow, future::Future, sync::OnceLock};

tokio::task_local! {
    static SCOPE: RequestScope;
}

/// What every line logged while serving one request carries.
#[derive(Debug)]
pub struct RequestScope {
    pub request_id: RequestId,
    pub method: Cow<'static, str>,
    pub path: String,
    clerk_id: OnceLock<String>,
}

/// The methods HTTP defines, so that the usual ones need no copy.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// A request id held inline, at most [`RequestId::MAX`] bytes (the middleware admits no longer
/// ones): a request's scope allocates nothing for it.
#[derive(Clone, Copy)]
pub struct RequestId {
    len: u8,
    bytes: [u8; RequestId::MAX],
}

impl RequestId {
    pub const MAX: usize = 64;

    /// `id`, cut to [`Self::MAX`] bytes at a character boundary.
    pub fn new(id: &str) -> Self {
        let mut len = id.len().min(Self::MAX);
        while !id.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; Self::MAX];
        bytes[..len].copy_from_slice(&id.as_bytes()[..len]);
        Self {
            len: len as u8,
            bytes,
        }
    }

    pub fn as_str(&self) -> &str {
        // Whole characters of a `str`, so always UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl RequestScope {
    pub fn new(request_id: &str, method: &str, path: String) -> Self {
        let method = match METHODS.iter().find(|m| **m == method) {
            Some(known) => Cow::Borrowed(*known),
            None => Cow::Owned(method.to_owned()),
        };
        Self {
            request_id: RequestId::new(request_id),
            method,
            path,
            clerk_id: OnceLock::new(),
        }
    }

    pub fn clerk_id(&self) -> Option<&str> {
        self.clerk_id.get().map(String::as_str)
    }
}

/// Run `f` as the request `scope`: lines logged while it runs carry the scope's fields. Not an
/// `async fn`: that would keep `f` twice in its future (the argument, and the copy it awaits), and
/// `f` is the whole request.
pub fn in_request<F: Future>(scope: RequestScope, f: F) -> impl Future<Output = F::Output> {
    SCOPE.scope(scope, f)
}

/// The authenticated user, for the rest of the request's lines; the first call wins. Outside a
/// request it does nothing.
pub fn record_clerk_id(clerk_id: &str) {
    let _ = SCOPE.try_with(|s| s.clerk_id.set(clerk_id.to_owned()));
}

/// Calls `f` with the current request's scope, if the caller runs inside one.
pub(super) fn with_current<R>(f: impl FnOnce(&RequestScope) -> R) -> Option<R> {
    SCOPE.try_with(f).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_scope_is_seen_inside_its_future_only() {
        assert!(with_current(|_| ()).is_none());
        record_clerk_id("user_outside"); // nothing to record into, and no panic
        let scope = RequestScope::new("req-1", "GET", "/users/me".into());
        in_request(scope, async {
            assert_eq!(
                with_current(|s| s.clerk_id().map(str::to_owned)),
                Some(None)
            );
            record_clerk_id("user_a");
            tokio::task::yield_now().await;
            record_clerk_id("user_b");
            let seen = with_current(|s| {
                (
                    s.request_id.as_str().to_owned(),
                    s.clerk_id().map(str::to_owned),
                )
            });
            assert_eq!(seen, Some(("req-1".into(), Some("user_a".into()))));
        })
        .await;
        assert!(with_current(|_| ()).is_none());
    }
}
