//! Token parsing and verification (the README's token rules) on arbitrary input, against a real RS256 key set.
//!
//! The first byte of the input picks the mode (bit 0) and the policy (bit 1):
//! - bit 0 clear: the rest, as UTF-8, is the token exactly as a client would send it; this
//!   reaches the shape and header checks, the key lookup and the signature;
//! - bit 0 set: the rest is `header JSON 0xFF payload JSON`, which the harness base64url-encodes
//!   and signs with the key the key set holds, so that the checks after the signature (time,
//!   issuer, subject, audience, authorized parties, pending sessions, organizations) see fuzzed
//!   claims.
//!
//! Beyond "no panic", an accepted token must satisfy what the rules promise.
#![no_main]

use std::sync::LazyLock;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use clerk_users::{
    auth::{
        keys::KeySet,
        token::{self, MAX_TOKEN_BYTES, Policy},
    },
    testkit::SigningKey,
};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::{ISSUER, KID, NOW};

struct Fixture {
    key: SigningKey,
    keys: KeySet,
    policies: [Policy; 2],
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = SigningKey::generate_with_kid(KID);
    let jwks = serde_json::json!({ "keys": [key.jwk()] }).to_string();
    let keys = KeySet::from_jwks(ISSUER, jwks.as_bytes(), 1).expect("the JWK loads");
    Fixture {
        key,
        keys,
        policies: common::policies(),
    }
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = &*FIXTURE;
    let token = if mode & 1 == 0 {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_string(),
            Err(_) => return,
        }
    } else {
        let split = rest.iter().position(|b| *b == 0xFF).unwrap_or(rest.len());
        let (header, payload) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        f.key.sign_input(&input)
    };
    let policy = &f.policies[usize::from(mode >> 1 & 1)];
    match token::verify(&token, &f.keys, NOW, policy) {
        Ok(claims) => {
            let skew = policy.clock_skew_secs as f64;
            assert!(token.len() <= MAX_TOKEN_BYTES);
            assert!(claims.user_id.starts_with("user_") && claims.user_id.len() > 5);
            assert!(!claims.session_id.is_empty());
            assert!(claims.expires_at > NOW - skew, "expired token accepted");
            assert!(claims.issued_at <= NOW + skew, "future iat accepted");
            if !policy.authorized_parties.is_empty() {
                let azp = claims.authorized_party.as_deref().expect("azp checked");
                assert!(policy.authorized_parties.iter().any(|p| p == azp));
            }
            // Accepted tokens are the harness's own: raw input cannot forge a signature.
            assert!(
                mode & 1 == 1,
                "a raw token verified without being signed here"
            );
        }
        Err(e) => {
            // The description goes into WWW-Authenticate as a quoted string: it must stay safe.
            let d = e.description();
            assert!(!d.is_empty() && !d.contains('"') && !d.contains('\\'));
            assert!(!e.code().is_empty());
        }
    }
});
