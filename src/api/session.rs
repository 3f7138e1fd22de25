//! Authentication is a type: an operation that takes [`Session`] runs only for a request whose
//! token passed every check of the README's "How tokens are checked". Obtaining a `Session` is the
//! check: its extractor finds the one token of the request (header, else the `__session` cookie),
//! hands it to [`Verifier`](crate::auth::Verifier), and turns a failure into the 401 or 503
//! problem answer before any handler code runs.

use std::sync::Arc;

use poem::{Request, RequestBody, http::HeaderMap};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    registry::{MetaSecurityScheme, Registry},
};

use super::{error::ApiError, state::AppState};
use crate::auth::{AuthError, Claims, TokenError};

/// The session cookie Clerk's SDKs set for same-origin apps.
pub const SESSION_COOKIE: &str = "__session";

/// Find the one token of a request: `Authorization: Bearer` (scheme case-insensitive) wins;
/// without that header, the `__session` cookie. Two tokens, an empty value or another scheme fail.
pub fn extract_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut auth = headers.get_all(poem::http::header::AUTHORIZATION).iter();
    if let Some(value) = auth.next() {
        if auth.next().is_some() {
            return Err(AuthError::Token(TokenError::Invalid(
                "more than one Authorization header",
            )));
        }
        // `is_ascii` goes a word at a time; `HeaderValue::to_str` a byte at a time, over a token of
        // about 800 bytes. A header value holds no control character but tab (the parser refuses
        // them), so the two agree.
        let not_ascii =
            || AuthError::Token(TokenError::Invalid("the Authorization header is not ASCII"));
        let bytes = value.as_bytes();
        if !bytes.is_ascii() {
            return Err(not_ascii());
        }
        let value = std::str::from_utf8(bytes).map_err(|_| not_ascii())?;
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
        // memchr: a vector at a time over the token (`str::contains` goes a word at a time).
        if memchr::memchr(b' ', token.as_bytes()).is_some() {
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
