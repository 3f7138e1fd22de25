//! Authentication is a type: an operation that takes [`Session`] runs only for a request whose
//! token passed every check of §3. The extractor reads the token (header, else `__session`
//! cookie), the verifier applies the rules against the held keys, and failures become 401 or 503
//! problem responses before any handler code runs.

pub mod keys;
pub mod token;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use poem::{Request, RequestBody, http::HeaderMap};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    registry::{MetaSecurityScheme, Registry},
};

use self::keys::{KeyStore, Unavailable};
pub use self::token::{Claims, Organization, Policy, TokenError};
use crate::{api::error::ApiError, app::AppState, metrics::Metrics};

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No bearer token at all (no header, no cookie, or another scheme): a bare challenge.
    Missing(&'static str),
    /// A token was presented and failed a check.
    Token(TokenError),
    /// Not the caller's fault: no usable signing keys (§3, last paragraph).
    KeysUnavailable(Unavailable),
}

impl AuthError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing(_) => "token-missing",
            Self::Token(e) => e.code(),
            Self::KeysUnavailable(_) => "signing-keys-unavailable",
        }
    }
}

/// The session cookie Clerk's SDKs set for same-origin apps.
pub const SESSION_COOKIE: &str = "__session";

/// Find the one token of a request (§3): `Authorization: Bearer` (scheme case-insensitive) wins;
/// without that header, the `__session` cookie. Two tokens, an empty value or another scheme fail.
pub fn extract_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut auth = headers.get_all(poem::http::header::AUTHORIZATION).iter();
    if let Some(value) = auth.next() {
        if auth.next().is_some() {
            return Err(AuthError::Token(TokenError::Invalid(
                "more than one Authorization header",
            )));
        }
        let value = value.to_str().map_err(|_| {
            AuthError::Token(TokenError::Invalid("the Authorization header is not ASCII"))
        })?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing(
                "the Authorization header does not use the Bearer scheme",
            ));
        }
        let token = rest.trim_matches(' ');
        if token.is_empty() {
            return Err(AuthError::Token(TokenError::Invalid(
                "the bearer token is empty",
            )));
        }
        if token.contains(' ') {
            return Err(AuthError::Token(TokenError::Invalid(
                "more than one token in the Authorization header",
            )));
        }
        return Ok(token);
    }

    let mut found: Option<&str> = None;
    for header in headers.get_all(poem::http::header::COOKIE) {
        let Ok(header) = header.to_str() else {
            continue;
        };
        for pair in header.split(';') {
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if name.trim() != SESSION_COOKIE {
                continue;
            }
            if found.is_some() {
                return Err(AuthError::Token(TokenError::Invalid(
                    "more than one __session cookie",
                )));
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            found = Some(value);
        }
    }
    match found {
        Some("") => Err(AuthError::Token(TokenError::Invalid(
            "the __session cookie is empty",
        ))),
        Some(token) => Ok(token),
        None => Err(AuthError::Missing(
            "no bearer token and no __session cookie",
        )),
    }
}

/// Verifies tokens against the held keys; refetches keys for an unknown `kid` within §4's limits.
#[derive(Clone)]
pub struct Verifier {
    pub keys: KeyStore,
    pub policy: Policy,
    /// Tokens that passed every check, by SHA-256 of (key set generation, token). A hit skips the
    /// RSA verification; an entry lives until the token's `exp` plus the skew, and a new key set
    /// (a new generation) misses every entry.
    cache: Option<moka::future::Cache<[u8; 32], Verified>>,
    metrics: Metrics,
}

#[derive(Clone)]
struct Verified {
    claims: Arc<Claims>,
    ttl: Duration,
}

/// Each entry expires when its token does (`exp` + skew).
struct UntilTokenExpires;

impl moka::Expiry<[u8; 32], Verified> for UntilTokenExpires {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        v: &Verified,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

fn cache_key(generation: u64, raw: &str) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&generation.to_le_bytes());
    ctx.update(raw.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Verifier {
    /// `cache_entries`: how many verified tokens to remember (0: none).
    pub fn new(keys: KeyStore, policy: Policy, cache_entries: u64, metrics: Metrics) -> Self {
        let cache = (cache_entries > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(cache_entries)
                .expire_after(UntilTokenExpires)
                .build()
        });
        Self {
            keys,
            policy,
            cache,
            metrics,
        }
    }

    /// Verified tokens held, for `/metrics`.
    pub fn cached_tokens(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.entry_count())
    }

    /// Checks 1–10 of §3, or the verified-token cache. Shared: a cache hit copies nothing.
    pub async fn verify(&self, raw: &str) -> Result<Arc<Claims>, AuthError> {
        // The cache is consulted only while the keys are usable, so stale keys still give 503.
        let key = match (&self.cache, self.keys.current()) {
            (Some(cache), Ok(set)) => {
                let key = cache_key(set.generation, raw);
                if let Some(hit) = cache.get(&key).await {
                    self.metrics.token_cache(true);
                    self.metrics.token_verification("ok");
                    return Ok(hit.claims);
                }
                self.metrics.token_cache(false);
                Some((cache, key))
            }
            _ => None,
        };
        let result = self.verify_inner(raw).await.map(Arc::new);
        if let (Some((cache, key)), Ok(claims)) = (key, &result) {
            let until = claims.expires_at + self.policy.clock_skew_secs as f64;
            let ttl = Duration::from_secs_f64((until - now()).clamp(0.0, 86_400.0));
            cache
                .insert(
                    key,
                    Verified {
                        claims: Arc::clone(claims),
                        ttl,
                    },
                )
                .await;
        }
        self.metrics.token_verification(match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        });
        result
    }

    async fn verify_inner(&self, raw: &str) -> Result<Claims, AuthError> {
        // Checks 1–2 need no keys: a malformed token is the caller's fault even while keys are out.
        let parsed = token::parse(raw).map_err(AuthError::Token)?;
        let set = match self.keys.current() {
            Ok(set) => set,
            Err(why) => {
                // Never loaded or too old (Clerk down): one rate-limited fetch before giving up.
                match self
                    .keys
                    .refetch_for_unknown_kid(self.keys.generation())
                    .await
                {
                    Some(set) => set,
                    None => return Err(AuthError::KeysUnavailable(why)),
                }
            }
        };
        if set.get(parsed.kid()).is_none() {
            let fresh = self.keys.refetch_for_unknown_kid(set.generation).await;
            let set = fresh.unwrap_or(set);
            return parsed
                .check(&set, now(), &self.policy)
                .map_err(AuthError::Token);
        }
        parsed
            .check(&set, now(), &self.policy)
            .map_err(AuthError::Token)
    }
}

/// A verified Clerk session: what protected operations take. Its extractor runs every check.
#[derive(Debug, Clone)]
pub struct Session {
    pub claims: Arc<Claims>,
}

impl<'a> ApiExtractor<'a> for Session {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            "ClerkSession",
            MetaSecurityScheme {
                ty: "http",
                description: Some(
                    "A Clerk session token (RS256 JWT) as `Authorization: Bearer <token>`. \
                     Get one in the browser with `await window.Clerk.session.getToken()`.",
                ),
                name: None,
                key_in: None,
                scheme: Some("bearer"),
                bearer_format: Some("JWT"),
                flows: None,
                openid_connect_url: None,
            },
        );
        registry.create_security_scheme(
            "ClerkSessionCookie",
            MetaSecurityScheme {
                ty: "apiKey",
                description: Some(
                    "The same token in the `__session` cookie, as Clerk sets it for same-origin apps. \
                     Read only when there is no Authorization header.",
                ),
                name: Some(SESSION_COOKIE),
                key_in: Some("cookie"),
                scheme: None,
                bearer_format: None,
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec!["ClerkSession", "ClerkSessionCookie"]
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let Some(state) = req.data::<AppState>() else {
            return Err(ApiError::internal("AppState missing from the request").into());
        };
        let token = extract_token(req.headers()).map_err(ApiError::Auth)?;
        let claims = state.verifier.verify(token).await.map_err(ApiError::Auth)?;
        crate::telemetry::record_clerk_id(&claims.user_id);
        Ok(Session { claims })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                poem::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn header_scheme_is_case_insensitive_and_wins_over_the_cookie() {
        assert_eq!(
            extract_token(&headers(&[("authorization", "bEaReR abc")])),
            Ok("abc")
        );
        assert_eq!(
            extract_token(&headers(&[
                ("authorization", "Bearer abc"),
                ("cookie", "__session=def")
            ])),
            Ok("abc")
        );
        assert_eq!(
            extract_token(&headers(&[("cookie", "a=1; __session=def; b=2")])),
            Ok("def")
        );
    }

    #[test]
    fn bad_shapes_are_rejected() {
        let code = |h: &[(&str, &str)]| extract_token(&headers(h)).unwrap_err().code();
        assert_eq!(code(&[]), "token-missing");
        assert_eq!(code(&[("authorization", "Basic abc")]), "token-missing");
        assert_eq!(
            code(&[("authorization", "Basic abc"), ("cookie", "__session=x")]),
            "token-missing"
        );
        assert_eq!(code(&[("authorization", "Bearer")]), "token-invalid");
        assert_eq!(code(&[("authorization", "Bearer   ")]), "token-invalid");
        assert_eq!(code(&[("authorization", "Bearer a b")]), "token-invalid");
        assert_eq!(
            code(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
            "token-invalid"
        );
        assert_eq!(code(&[("cookie", "__session=")]), "token-invalid");
        assert_eq!(
            code(&[("cookie", "__session=a; __session=b")]),
            "token-invalid"
        );
        assert_eq!(code(&[("cookie", "__session_other=a")]), "token-missing");
    }
}
