//! `api::session::extract_token` (the Authorization header, else the `__session` cookie) over a header map
//! built from arbitrary input: lines of `name:value`, names and values as raw bytes (invalid ones
//! are skipped, as the HTTP server would refuse them).
#![no_main]

use clerk_users::api::session::extract_token;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        headers.append(name, value);
    }
    let first = extract_token(&headers);
    assert_eq!(first, extract_token(&headers), "deterministic");
    if let Ok(token) = first {
        assert!(!token.is_empty(), "an empty token is never returned");
        // The token is a piece of exactly one header the client sent.
        let from_auth = headers.contains_key(http::header::AUTHORIZATION);
        let source = if from_auth {
            assert_eq!(
                headers.get_all(http::header::AUTHORIZATION).iter().count(),
                1
            );
            assert!(
                !token.contains(' '),
                "one token in the Authorization header"
            );
            http::header::AUTHORIZATION
        } else {
            http::header::COOKIE
        };
        assert!(
            headers
                .get_all(&source)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains(token))),
            "the token comes from the {source} header"
        );
    }
});
