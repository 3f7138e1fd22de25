//! The Clerk Backend API client: `GET /v1/users/{id}` with bounded retries that honour
//! `Retry-After`, and the user list and count that `clerk-users sync` walks. The secret key goes
//! only to the Backend API's origin. A circuit breaker ([`breaker`]) makes first sights fail fast
//! while the Backend API is down; every request waits its turn under the process's one pace
//! ([`pace`]), so that Clerk's rate limit is never crossed.

pub mod breaker;
pub mod pace;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{StatusCode, Url};
use serde::{Deserialize, de::DeserializeOwned};

use self::{
    breaker::{Breaker, Permit},
    pace::Pace,
};
use crate::{
    metrics::Metrics,
    net::{describe, read_limited},
    settings::{ClerkSettings, Secret},
};

/// The largest Backend API or JWKS body read; Clerk's User object is a few KiB.
const MAX_BODY_BYTES: usize = 1 << 20;
/// The largest page of the user list read: 500 users of a few KiB each, with room to spare.
const MAX_PAGE_BYTES: usize = 64 << 20;
/// `Retry-After` given to callers when Clerk named none.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The largest page of Clerk's user list, and the one `sync` asks for.
pub const PAGE_LIMIT: usize = 500;
/// 429s in a row after which a list request gives up (each waits its `Retry-After`).
const MAX_RATE_LIMITED: u32 = 20;

/// Whether `id` has the shape of a Clerk user id: `user_` followed by 1 to 123 ASCII letters,
/// digits, `_` or `-`. Session tokens (`sub`) and webhooks must name a user this way; anything else
/// could not be a user Clerk created.
pub fn is_user_id(id: &str) -> bool {
    id.strip_prefix("user_").is_some_and(|rest| {
        (1..=123).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// Clerk's Unix milliseconds as a moment, when it is one the service can store: from year 1 to
/// 9999 (the `time` crate's range, inside PostgreSQL's `timestamptz`).
pub fn time_of_millis(ms: i64) -> Option<time::OffsetDateTime> {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    (at.year() >= 1).then_some(at)
}

/// Clerk's text without U+0000, which PostgreSQL's `text` and `jsonb` cannot hold. Every string of
/// [`ClerkUser`] is read through these, so whatever stores a user from Clerk (first sight, webhooks,
/// `sync`) gets text it can store, and a user whose name holds U+0000 is stored with it removed
/// rather than refused.
pub mod text {
    use serde::{Deserialize, Deserializer};

    /// `s` with every U+0000 removed (returned as it is when there is none).
    pub fn without_nul(s: String) -> String {
        if s.contains('\0') {
            s.replace('\0', "")
        } else {
            s
        }
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        String::deserialize(d).map(without_nul)
    }

    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Option::<String>::deserialize(d).map(|s| s.map(without_nul))
    }
}

/// The parts of Clerk's User object the service keeps; every other field is ignored. Every string
/// is deserialized with U+0000 removed ([`text`]): this is the one place Clerk's text is made
/// storable, for first sight, webhooks and `sync` alike.
#[derive(Debug, Clone, Deserialize)]
pub struct ClerkUser {
    #[serde(deserialize_with = "text::string")]
    pub id: String,
    #[serde(default, deserialize_with = "text::optional")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "text::optional")]
    pub first_name: Option<String>,
    #[serde(default, deserialize_with = "text::optional")]
    pub last_name: Option<String>,
    #[serde(default, deserialize_with = "text::optional")]
    pub image_url: Option<String>,
    #[serde(default, deserialize_with = "text::optional")]
    pub primary_email_address_id: Option<String>,
    #[serde(default)]
    pub email_addresses: Vec<EmailAddress>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; decides which of two versions is newer.
    pub updated_at: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EmailAddress {
    #[serde(deserialize_with = "text::string")]
    pub id: String,
    #[serde(deserialize_with = "text::string")]
    pub email_address: String,
}

impl ClerkUser {
    /// The address whose `id` is `primary_email_address_id`, not merely the first one.
    pub fn primary_email(&self) -> Option<&str> {
        let primary = self.primary_email_address_id.as_deref()?;
        self.email_addresses
            .iter()
            .find(|e| e.id == primary)
            .map(|e| e.email_address.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClerkError {
    #[error("Clerk has no such user")]
    NotFound,
    #[error("Clerk rejected the secret key (HTTP {0})")]
    Misconfigured(u16),
    #[error("Clerk is unavailable: {reason}")]
    Unavailable {
        retry_after: Duration,
        reason: String,
    },
}

/// Clerk's `{"object": "total_count", "total_count": N}`.
#[derive(Debug, Deserialize)]
struct TotalCount {
    total_count: u64,
}

/// Clerk's error body: `{"errors": [{"message", "long_message", "code"}]}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Debug, Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    long_message: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Clone)]
pub struct ClerkApi {
    http: reqwest::Client,
    base: Url,
    secret: Secret<String>,
    timeout: Duration,
    max_attempts: u32,
    budget: Duration,
    backoff: Duration,
    /// Shared by every clone: one breaker per process.
    breaker: Arc<Breaker>,
    /// Shared by every clone: one pace per process.
    pace: Arc<Pace>,
    metrics: Metrics,
}

enum Attempt<T> {
    Done(Result<T, ClerkError>),
    Retry {
        retry_after: Option<Duration>,
        reason: String,
    },
}

impl ClerkApi {
    pub fn new(settings: &ClerkSettings, http: reqwest::Client, metrics: Metrics) -> Self {
        Self {
            http,
            base: settings.api_url.clone(),
            secret: settings.secret_key.clone(),
            timeout: settings.http_timeout,
            max_attempts: settings.api_max_attempts,
            budget: settings.api_retry_budget,
            backoff: settings.api_backoff,
            breaker: Arc::new(Breaker::new(
                settings.breaker_failures,
                settings.breaker_cooldown,
            )),
            pace: Pace::new(settings.api_rate_limit),
            metrics,
        }
    }

    /// The circuit breaker in front of the Backend API.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The pace every Backend API request of this process waits for.
    pub fn pace(&self) -> &Pace {
        &self.pace
    }

    fn user_url(&self, user_id: &str) -> Url {
        let mut url = self.base.clone();
        // Segments are percent-encoded: an id can never reach another path.
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend(["v1", "users", user_id]);
        }
        url
    }

    /// One user, retried on 429, 5xx, timeouts and connection errors with exponential backoff and
    /// full jitter, honouring `Retry-After`, within `max_attempts` and the time budget. While the
    /// circuit breaker is open this fails at once, without a network call.
    pub async fn get_user(&self, user_id: &str) -> Result<ClerkUser, ClerkError> {
        let mut permit = match self.breaker.admit() {
            Ok(permit) => permit,
            Err(rejected) => {
                self.metrics.clerk_call("short_circuited");
                return Err(ClerkError::Unavailable {
                    retry_after: rejected.retry_after,
                    reason: "circuit breaker open".into(),
                });
            }
        };
        match self.lookup(user_id, &mut permit).await {
            Ok(answered) => {
                permit.succeeded();
                answered
            }
            // No turn within the budget: not Clerk's failure, so the breaker is not told (the
            // permit is dropped unsettled; a probe's slot is freed).
            Err(Failure::Paced(wait)) => {
                self.metrics.clerk_call("paced_out");
                drop(permit);
                Err(ClerkError::Unavailable {
                    retry_after: whole_seconds(wait),
                    reason: "no turn under CLERK_API_RATE_LIMIT within the retry budget".into(),
                })
            }
            Err(Failure::Clerk(retry_after, reason)) => {
                permit.failed(retry_after);
                Err(ClerkError::Unavailable {
                    retry_after: retry_after
                        .unwrap_or(DEFAULT_RETRY_AFTER)
                        .max(Duration::from_secs(1)),
                    reason,
                })
            }
        }
    }

    /// The tries of one lookup. `Ok` when Clerk answered (whatever it said), `Err` with Clerk's
    /// last `Retry-After` and the reason when every try failed in a retryable way. A probe of the
    /// half-open breaker makes one try; a lookup stops retrying once the breaker has opened.
    async fn lookup(
        &self,
        user_id: &str,
        permit: &mut Permit<'_>,
    ) -> Result<Result<ClerkUser, ClerkError>, Failure> {
        let deadline = Instant::now() + self.budget;
        let url = self.user_url(user_id);
        let max_attempts = if permit.is_probe() {
            1
        } else {
            self.max_attempts
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let turn = self
                .pace
                .turn_before(deadline)
                .await
                .map_err(|late| Failure::Paced(late.wait))?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let answer = self
                .try_once::<ClerkUser>(&url, remaining.min(self.timeout), MAX_BODY_BYTES)
                .await;
            drop(turn);
            let (retry_after, reason) = match answer {
                Attempt::Done(result) => return Ok(result),
                Attempt::Retry {
                    retry_after,
                    reason,
                } => (retry_after, reason),
            };
            permit.try_failed();
            let backoff = self.backoff.saturating_mul(1 << (attempt - 1).min(16));
            let jittered = backoff.mul_f64(fastrand::f64());
            let wait = retry_after.map_or(jittered, |r| r.max(jittered));
            let remaining = deadline.saturating_duration_since(Instant::now());
            if attempt >= max_attempts || wait >= remaining || self.breaker.is_refusing() {
                tracing::warn!(attempts = attempt, %reason, "Clerk Backend API unavailable; giving up");
                return Err(Failure::Clerk(retry_after, reason));
            }
            tracing::info!(attempt, wait_ms = wait.as_millis() as u64, %reason, "retrying Clerk Backend API");
            tokio::time::sleep(wait).await;
            if self.breaker.is_refusing() {
                return Err(Failure::Clerk(retry_after, reason));
            }
        }
    }

    fn list_url(&self, path: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().push("v1").extend(path);
        }
        url
    }

    /// One page of Clerk's user list in ascending `created_at` order: the first page, or the
    /// page after the user `starting_after` (the last id of the previous page). At most
    /// [`PAGE_LIMIT`] users; fewer means the list is done.
    pub async fn list_users(
        &self,
        starting_after: Option<&str>,
    ) -> Result<Vec<ClerkUser>, ClerkError> {
        let mut url = self.list_url(&["users"]);
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("limit", &PAGE_LIMIT.to_string())
                .append_pair("order_by", "+created_at");
            if let Some(after) = starting_after {
                query.append_pair("starting_after", after);
            }
        }
        self.patient(&url, MAX_PAGE_BYTES).await
    }

    /// How many users Clerk has (`GET /v1/users/count`).
    pub async fn count_users(&self) -> Result<u64, ClerkError> {
        let url = self.list_url(&["users", "count"]);
        let count: TotalCount = self.patient(&url, MAX_BODY_BYTES).await?;
        Ok(count.total_count)
    }

    /// A request that can wait (the sync's): a turn without deadline; each 429 waits its
    /// `Retry-After` (at most [`MAX_RATE_LIMITED`] in a row); 5xx, timeouts and connection errors
    /// are retried `max_attempts` times in all with exponential backoff and full jitter. The
    /// breaker of first sights is neither asked nor told.
    async fn patient<T: DeserializeOwned>(
        &self,
        url: &Url,
        max_bytes: usize,
    ) -> Result<T, ClerkError> {
        let (mut failed, mut limited) = (0u32, 0u32);
        loop {
            let turn = self.pace.turn().await;
            let answer = self.try_once::<T>(url, self.timeout, max_bytes).await;
            drop(turn);
            let (retry_after, reason) = match answer {
                Attempt::Done(result) => return result,
                Attempt::Retry {
                    retry_after,
                    reason,
                } => (retry_after, reason),
            };
            let wait = if reason == RATE_LIMITED {
                limited += 1;
                if limited > MAX_RATE_LIMITED {
                    return Err(unavailable(
                        retry_after,
                        format!("{reason}, {limited} times in a row"),
                    ));
                }
                retry_after.unwrap_or(Duration::from_secs(1))
            } else {
                failed += 1;
                limited = 0;
                if failed >= self.max_attempts {
                    return Err(unavailable(
                        retry_after,
                        format!("{reason} after {failed} tries"),
                    ));
                }
                let backoff = self.backoff.saturating_mul(1 << (failed - 1).min(16));
                let jittered = backoff.mul_f64(fastrand::f64());
                retry_after.map_or(jittered, |r| r.max(jittered))
            };
            tracing::info!(wait_ms = wait.as_millis() as u64, %reason, "retrying Clerk Backend API");
            tokio::time::sleep(wait).await;
        }
    }

    async fn try_once<T: DeserializeOwned>(
        &self,
        url: &Url,
        timeout: Duration,
        max_bytes: usize,
    ) -> Attempt<T> {
        let sent = self
            .http
            .get(url.clone())
            .bearer_auth(self.secret.expose())
            .timeout(timeout)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                self.metrics.clerk_call("error");
                return Attempt::Retry {
                    retry_after: None,
                    reason: describe(&e),
                };
            }
        };
        let status = resp.status();
        self.metrics.clerk_call(outcome(status));
        match status {
            s if s.is_success() => match read_limited(resp, max_bytes).await {
                Ok(body) => match serde_json::from_slice::<T>(&body) {
                    Ok(parsed) => Attempt::Done(Ok(parsed)),
                    Err(e) => {
                        tracing::error!(error = %e, "Clerk Backend API sent JSON that does not parse");
                        Attempt::Done(Err(ClerkError::Unavailable {
                            retry_after: DEFAULT_RETRY_AFTER,
                            reason: format!("unparseable answer ({e})"),
                        }))
                    }
                },
                Err(e) => Attempt::Retry {
                    retry_after: None,
                    reason: e.map_or_else(|| "body too large".into(), |e| describe(&e)),
                },
            },
            StatusCode::NOT_FOUND => Attempt::Done(Err(ClerkError::NotFound)),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                tracing::error!(
                    status = status.as_u16(),
                    "Clerk Backend API rejected CLERK_SECRET_KEY"
                );
                Attempt::Done(Err(ClerkError::Misconfigured(status.as_u16())))
            }
            StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                retry_after: retry_after(resp.headers()),
                reason: RATE_LIMITED.into(),
            },
            s if s.is_server_error() => Attempt::Retry {
                retry_after: retry_after(resp.headers()),
                reason: format!("HTTP {}", s.as_u16()),
            },
            s if s.is_client_error() => {
                let message = match read_limited(resp, MAX_BODY_BYTES).await {
                    Ok(body) => clerk_message(&body),
                    Err(_) => String::new(),
                };
                tracing::error!(
                    status = s.as_u16(),
                    %message,
                    "Clerk Backend API refused the request"
                );
                // Not retried: the same request would be refused again.
                Attempt::Done(Err(ClerkError::Unavailable {
                    retry_after: DEFAULT_RETRY_AFTER,
                    reason: format!("HTTP {} {message}", s.as_u16())
                        .trim_end()
                        .to_string(),
                }))
            }
            s => {
                tracing::error!(
                    status = s.as_u16(),
                    "unexpected answer from Clerk Backend API"
                );
                Attempt::Done(Err(ClerkError::Unavailable {
                    retry_after: DEFAULT_RETRY_AFTER,
                    reason: format!("HTTP {}", s.as_u16()),
                }))
            }
        }
    }
}

/// How a first sight's lookup failed: no turn in time, or Clerk (its last `Retry-After` and why).
enum Failure {
    Paced(Duration),
    Clerk(Option<Duration>, String),
}

const RATE_LIMITED: &str = "rate limited (429)";

fn unavailable(retry_after: Option<Duration>, reason: String) -> ClerkError {
    ClerkError::Unavailable {
        retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        reason,
    }
}

/// Whole seconds, at least one: `Retry-After` is sent in seconds.
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs((d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
}

/// The first error of Clerk's error body, as `code: long message`; empty when there is none.
fn clerk_message(body: &[u8]) -> String {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return String::new();
    };
    parsed
        .errors
        .first()
        .map(|e| {
            let text = e
                .long_message
                .as_deref()
                .or(e.message.as_deref())
                .unwrap_or("");
            format!("{}: {text}", e.code)
        })
        .unwrap_or_default()
}

fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "ok",
        404 => "not_found",
        401 | 403 => "unauthorized",
        429 => "rate_limited",
        500..=599 => "server_error",
        _ => "other",
    }
}

/// `Retry-After` in seconds (Clerk sends seconds; an HTTP date is ignored), capped at an hour.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_email_is_chosen_by_id_not_position() {
        let user: ClerkUser = serde_json::from_value(serde_json::json!({
            "id": "user_1", "object": "user", "username": null, "first_name": "A", "last_name": null,
            "image_url": null, "primary_email_address_id": "idn_2",
            "email_addresses": [
                {"id": "idn_1", "email_address": "old@example.org", "verification": null},
                {"id": "idn_2", "email_address": "new@example.org"}
            ],
            "created_at": 1, "updated_at": 2, "some_future_field": {"x": 1}
        }))
        .unwrap();
        assert_eq!(user.primary_email(), Some("new@example.org"));
    }

    #[test]
    fn user_ids_have_clerks_shape() {
        for ok in [
            "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr",
            "user_a",
            "user_demo_ada",
            "user_a-b_c",
            &format!("user_{}", "x".repeat(123)),
        ] {
            assert!(is_user_id(ok), "{ok}");
        }
        for bad in [
            "",
            "user_",
            "user",
            "User_abc",
            "mch_2abc",
            "sess_abc",
            "user_\0x",
            "user_a b",
            "user_a.b",
            "user_a/b",
            "user_ä",
            " user_a",
            &format!("user_{}", "x".repeat(124)),
        ] {
            assert!(!is_user_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn clerk_text_is_read_without_nul() {
        let user: ClerkUser = serde_json::from_value(serde_json::json!({
            "id": "user_1", "username": "a\u{0}b", "first_name": "\u{0}", "last_name": null,
            "image_url": "https://img.clerk.com/\u{0}x", "primary_email_address_id": "idn_\u{0}1",
            "email_addresses": [{"id": "idn_1", "email_address": "a\u{0}@example.org"}],
            "created_at": 1, "updated_at": 2
        }))
        .unwrap();
        assert_eq!(user.username.as_deref(), Some("ab"));
        assert_eq!(user.first_name.as_deref(), Some(""));
        assert_eq!(user.last_name, None);
        assert_eq!(user.image_url.as_deref(), Some("https://img.clerk.com/x"));
        assert_eq!(user.primary_email(), Some("a@example.org"));
        // Fields Clerk leaves out are null, as before.
        let bare: ClerkUser = serde_json::from_value(serde_json::json!({
            "id": "user_1", "created_at": 1, "updated_at": 2
        }))
        .unwrap();
        assert_eq!(bare.username, None);
        assert_eq!(bare.primary_email(), None);
    }

    #[test]
    fn user_ids_cannot_escape_the_path() {
        let settings = crate::settings::Settings::from_overrides(&[
            ("database_url", "postgres://a@localhost/db"),
            ("clerk_secret_key", "sk_test"),
            ("clerk_issuer", "https://clerk.example.com"),
            ("clerk_api_url", "https://api.example.com/base"),
        ])
        .unwrap();
        let api = ClerkApi::new(
            &settings.clerk,
            crate::net::http_client(),
            Metrics::default(),
        );
        assert_eq!(
            api.user_url("user_1").as_str(),
            "https://api.example.com/base/v1/users/user_1"
        );
        assert_eq!(
            api.user_url("user_../../x?y#z").as_str(),
            "https://api.example.com/base/v1/users/user_..%2F..%2Fx%3Fy%23z"
        );
    }
}
