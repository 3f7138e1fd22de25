//! The token rules as properties, on `auth::token::verify` with a real RS256 key set: the time rules (check 5)
//! exactly at their edges, and keys that appear twice in a token's JSON.

use std::sync::LazyLock;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use clerk_users::{
    auth::{
        keys::KeySet,
        token::{Policy, TokenError, verify},
    },
    testkit::{ClerkStandIn, SigningKey},
};
use proptest::prelude::*;
use serde_json::{Value, json};

const ISSUER: &str = "https://clerk.example.com";
const USER: &str = "user_2abcdefghijklmnopqrstuvwxyz";

/// One key per test binary: RSA key generation is slow in a debug build.
static KEY: LazyLock<SigningKey> = LazyLock::new(SigningKey::generate);
static KEYS: LazyLock<KeySet> = LazyLock::new(|| {
    let jwks = json!({ "keys": [KEY.jwk()] }).to_string();
    KeySet::from_jwks(ISSUER, jwks.as_bytes(), 1).expect("the stand-in's JWK loads")
});

fn policy(skew: u64) -> Policy {
    Policy {
        issuer: ISSUER.into(),
        audience: Vec::new(),
        authorized_parties: Vec::new(),
        clock_skew_secs: skew,
        accept_pending: false,
    }
}

/// A JSON number as Clerk writes it: an integer when whole, else a float.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

fn claims(exp: f64, iat: f64, nbf: Option<f64>) -> Value {
    let mut c = json!({
        "iss": ISSUER, "sub": USER, "sid": "sess_2abc", "azp": "https://app.example.com",
        "exp": number(exp), "iat": number(iat), "v": 2,
    });
    if let Some(nbf) = nbf {
        c["nbf"] = number(nbf);
    }
    c
}

fn signed(claims: &Value) -> String {
    KEY.sign(&ClerkStandIn::header_for(&KEY), claims)
}

fn check(exp: f64, iat: f64, nbf: Option<f64>, now: f64, skew: u64) -> Result<(), TokenError> {
    verify(&signed(&claims(exp, iat, nbf)), &KEYS, now, &policy(skew)).map(|c| {
        assert_eq!(c.user_id, USER);
    })
}

/// A clock reading: whole seconds from 2001 to 2096 plus a fraction in 1/1024 steps, so that
/// `now ± skew ± offset` is exact in an f64 and the edges are the edges.
fn now() -> impl Strategy<Value = f64> {
    (1_000_000_000u64..4_000_000_000, 0u32..1024)
        .prop_map(|(secs, frac)| secs as f64 + f64::from(frac) / 1024.0)
}

/// An offset from an edge, in seconds: often exactly on it or one step either side.
fn offset() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => Just(0.0),
        2 => Just(1.0 / 1024.0),
        2 => Just(-1.0 / 1024.0),
        1 => Just(1.0),
        1 => Just(-1.0),
        4 => (-10_240i32..=10_240).prop_map(|n| f64::from(n) / 1024.0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// `exp > now − skew`: on the edge the token has expired.
    #[test]
    fn exp_is_compared_with_now_minus_skew(now in now(), skew in 0u64..=60, d in offset()) {
        let exp = now - skew as f64 + d;
        let result = check(exp, now - 30.0, None, now, skew);
        if d > 0.0 {
            prop_assert_eq!(result, Ok(()));
        } else {
            prop_assert_eq!(result, Err(TokenError::Expired));
        }
    }

    /// `nbf ≤ now + skew`: on the edge the token is active.
    #[test]
    fn nbf_is_compared_with_now_plus_skew(now in now(), skew in 0u64..=60, d in offset()) {
        let nbf = now + skew as f64 + d;
        let result = check(now + 3600.0, now - 30.0, Some(nbf), now, skew);
        if d <= 0.0 {
            prop_assert_eq!(result, Ok(()));
        } else {
            prop_assert_eq!(result, Err(TokenError::NotActiveYet));
        }
    }

    /// `iat ≤ now + skew`: on the edge the token is accepted.
    #[test]
    fn iat_is_compared_with_now_plus_skew(now in now(), skew in 0u64..=60, d in offset()) {
        let iat = now + skew as f64 + d;
        let result = check(now + 3600.0, iat, None, now, skew);
        if d <= 0.0 {
            prop_assert_eq!(result, Ok(()));
        } else {
            prop_assert_eq!(result, Err(TokenError::IatInFuture));
        }
    }

    /// All three at once: the first rule broken, in the rules' order (exp, nbf, iat), decides.
    #[test]
    fn the_first_broken_time_rule_decides(
        now in now(),
        skew in 0u64..=60,
        exp_d in offset(),
        nbf_d in proptest::option::of(offset()),
        iat_d in offset(),
    ) {
        let s = skew as f64;
        let (exp, nbf, iat) = (now - s + exp_d, nbf_d.map(|d| now + s + d), now + s + iat_d);
        let expected = if exp <= now - s {
            Err(TokenError::Expired)
        } else if nbf.is_some_and(|nbf| nbf > now + s) {
            Err(TokenError::NotActiveYet)
        } else if iat > now + s {
            Err(TokenError::IatInFuture)
        } else {
            Ok(())
        };
        prop_assert_eq!(check(exp, iat, nbf, now, skew), expected);
    }
}

#[test]
fn the_edges_themselves() {
    let now = 1_800_000_000.0;
    for skew in [0u64, 5, 60] {
        let s = skew as f64;
        assert_eq!(
            check(now - s, now, None, now, skew),
            Err(TokenError::Expired)
        );
        assert_eq!(check(now - s + 1.0, now - s, None, now, skew), Ok(()));
        assert_eq!(check(now + 60.0, now, Some(now + s), now, skew), Ok(()));
        assert_eq!(
            check(now + 60.0, now, Some(now + s + 1.0), now, skew),
            Err(TokenError::NotActiveYet)
        );
        assert_eq!(check(now + 60.0, now + s, None, now, skew), Ok(()));
        assert_eq!(
            check(now + 60.0, now + s + 1.0, None, now, skew),
            Err(TokenError::IatInFuture)
        );
    }
}

#[test]
fn time_claims_that_are_not_numbers_are_invalid() {
    let now = 1_800_000_000.0;
    for (name, value) in [
        ("exp", json!("1800000060")),
        ("exp", json!(null)),
        ("iat", json!(true)),
        ("iat", json!([1])),
        ("nbf", json!("0")),
        ("nbf", json!({})),
    ] {
        let mut c = claims(now + 60.0, now, None);
        c[name] = value.clone();
        assert_eq!(
            verify(&signed(&c), &KEYS, now, &policy(5)).map(|_| ()),
            Err(TokenError::Invalid(match name {
                "nbf" => "the token nbf is not a number",
                _ => "the token lacks a numeric exp or iat",
            })),
            "{name}: {value}"
        );
    }
    // JSON null for nbf counts as absent (the README's decision).
    let mut c = claims(now + 60.0, now, None);
    c["nbf"] = json!(null);
    assert!(verify(&signed(&c), &KEYS, now, &policy(5)).is_ok());
}

/// Sign a hand-written header and payload (JSON text, so that keys can repeat).
fn signed_raw(header: &str, payload: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    KEY.sign_input(&input)
}

#[test]
fn a_key_repeated_in_the_header_or_among_the_claims_is_rejected() {
    let now = 1_800_000_000.0;
    let kid = &KEY.kid;
    let good_header = format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT"}}"#);
    let good_claims = claims(now + 60.0, now, None).to_string();
    assert!(
        verify(
            &signed_raw(&good_header, &good_claims),
            &KEYS,
            now,
            &policy(5)
        )
        .is_ok()
    );

    let headers = [
        format!(r#"{{"alg":"RS256","alg":"none","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"none","alg":"RS256","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"RS256","kid":"other","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"RS256","kid":"{kid}","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT","typ":"JWT"}}"#),
    ];
    for header in headers {
        assert_eq!(
            verify(&signed_raw(&header, &good_claims), &KEYS, now, &policy(5)).map(|_| ()),
            Err(TokenError::Invalid(
                "the token header is not base64url JSON"
            )),
            "{header}"
        );
    }

    let claims_body = good_claims.trim_start_matches('{');
    for repeated in [
        r#""exp":1"#.to_string(),
        format!(r#""exp":{}"#, now as i64 + 60),
        r#""iat":1"#.to_string(),
        r#""nbf":1"#.to_string(),
        r#""iss":"https://evil.example.com""#.to_string(),
        r#""sub":"user_someone_else""#.to_string(),
        r#""sid":"sess_other""#.to_string(),
        r#""azp":"https://evil.example.com""#.to_string(),
        r#""aud":"x""#.to_string(),
        r#""sts":"active""#.to_string(),
        r#""o":{"id":"org_other"}"#.to_string(),
        r#""org_id":"org_other""#.to_string(),
    ] {
        // Before and after the original: neither the first nor the last one wins.
        for payload in [
            format!("{{{repeated},{claims_body}"),
            format!("{},{repeated}}}", good_claims.trim_end_matches('}')),
        ] {
            let payload_with_dup = if repeated.starts_with(r#""nbf""#)
                || repeated.starts_with(r#""aud""#)
                || repeated.starts_with(r#""sts""#)
                || repeated.starts_with(r#""o""#)
                || repeated.starts_with(r#""org_id""#)
            {
                // These are not in the base claims: put them in twice.
                format!("{{{repeated},{repeated},{claims_body}")
            } else {
                payload
            };
            assert_eq!(
                verify(
                    &signed_raw(&good_header, &payload_with_dup),
                    &KEYS,
                    now,
                    &policy(5)
                )
                .map(|_| ()),
                Err(TokenError::Invalid(
                    "the token payload is not base64url JSON"
                )),
                "{payload_with_dup}"
            );
        }
    }

    // A repeated claim the service does not read is ignored, like any unknown claim.
    let payload = format!(r#"{{"jti":"a","jti":"b",{claims_body}"#);
    assert!(verify(&signed_raw(&good_header, &payload), &KEYS, now, &policy(5)).is_ok());
}
