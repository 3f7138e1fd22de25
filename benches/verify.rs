//! Micro-benchmarks of the token rules (README, "How tokens are checked") on one core, with a real RS256 key.
//!
//! ```text
//! cargo bench --bench verify
//! ```
//!
//! Each benchmark handles one token per iteration, so criterion's `thrpt` is tokens per second on
//! one core. What is measured:
//!
//! - `parse`: checks 1–2 (`token::parse`: base64url, JSON of header and payload, header rules).
//! - `signature/jsonwebtoken`: the RS256 check as `token::check` makes it today
//!   (`jsonwebtoken::crypto::verify` with a key from the JWK's `n`/`e`: it builds the RSA key anew
//!   on every call).
//! - `signature/aws-lc-rs-parsed`: the same check with the key parsed once
//!   (`aws_lc_rs::signature::ParsedPublicKey`), as a key set could hold it.
//! - `verify/valid`: checks 1–10 for a valid Clerk session token (`token::verify`), the whole
//!   offline verification of a request.
//! - `verify/bad-signature`: a token that fails at check 4; `verify/valid` minus this is the cost
//!   of checks 5–10 and building the claims (the claim checks cannot be called on their own).
//! - `verify/unknown-kid`: rejected at check 3, before any RSA work.
//! - `extract-token`: finding the token in the `Authorization` header.
//! - `verifier/...`: the service's own `Verifier` (key store with the key pinned, the policy, the
//!   cache of verified tokens, the metrics), as a request calls it: `cached` is a hit in the
//!   verified-token cache, `uncached` the same verifier with the cache turned off.
//! - `cache/...`: the floor of a verified-token cache hit (SHA-256 of the token, a map lookup, a
//!   clone of the claims), without the concurrent cache's own bookkeeping.

use std::{
    collections::HashMap,
    hint::black_box,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use clerk_users::{
    api::session::extract_token,
    auth::{
        Claims, Policy, Verifier,
        keys::{KeySet, KeyStore},
        token::{self, verify},
    },
    metrics::Metrics,
    settings::Settings,
    testkit::{ClerkStandIn, SigningKey},
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Value, json};

const ISSUER: &str = "https://clerk.bench.example.org";

struct Fixture {
    /// The key's public half as `CLERK_JWT_KEY` takes it.
    pem: String,
    keys: KeySet,
    policy: Policy,
    now: f64,
    token: String,
    bad_signature: String,
    unknown_kid: String,
    /// The JWK's modulus and exponent, decoded.
    n: Vec<u8>,
    e: Vec<u8>,
}

/// The claims of a Clerk session token (v2) as Clerk mints them, valid for an hour.
fn claims(now: u64) -> Value {
    json!({
        "azp": "http://localhost:5173",
        "exp": now + 3600, "iat": now, "nbf": now - 10,
        "iss": ISSUER,
        "jti": "0f3b6a1c2d4e5f6a7b8c",
        "sid": "sess_2abcDEFghiJKLmnoPQRstuVWXyz",
        "sub": "user_29w83sxmDNGwOuEthce5gg56FcC",
        "v": 2, "fva": [7, -1], "pla": "u:free", "fea": "o:dashboard"
    })
}

fn fixture() -> Fixture {
    let key = SigningKey::generate();
    let jwk = key.jwk();
    let jwks = json!({ "keys": [jwk.clone()] }).to_string();
    let keys = KeySet::from_jwks(ISSUER, jwks.as_bytes(), 1).expect("a usable key set");
    let decode = |v: &Value| URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = key.sign(&ClerkStandIn::header_for(&key), &claims(now));

    // The same token with its signature's first byte changed: fails at check 4.
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[0] ^= 0x01;
    let bad_signature = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&sig));

    let other = SigningKey::generate_with_kid("ins_not_in_the_set");
    let unknown_kid = other.sign(&ClerkStandIn::header_for(&other), &claims(now));

    let policy = Policy {
        issuer: ISSUER.to_string(),
        audience: Vec::new(),
        authorized_parties: vec!["http://localhost:5173".to_string()],
        clock_skew_secs: 5,
        accept_pending: false,
    };
    let f = Fixture {
        pem: key.public_pem(),
        keys,
        policy,
        now: now as f64,
        token,
        bad_signature,
        unknown_kid,
        n: decode(&jwk["n"]),
        e: decode(&jwk["e"]),
    };
    // The fixture is what it claims to be.
    assert!(verify(&f.token, &f.keys, f.now, &f.policy).is_ok());
    assert_eq!(
        verify(&f.bad_signature, &f.keys, f.now, &f.policy)
            .unwrap_err()
            .code(),
        "token-invalid-signature"
    );
    assert_eq!(
        verify(&f.unknown_kid, &f.keys, f.now, &f.policy)
            .unwrap_err()
            .code(),
        "jwk-kid-mismatch"
    );
    f
}

fn token_benches(c: &mut Criterion) {
    let f = fixture();
    let (signed, signature) = f.token.rsplit_once('.').unwrap();

    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Elements(1));

    g.bench_function("parse", |b| {
        b.iter(|| token::parse(black_box(&f.token)).map(|p| p.kid().len()))
    });

    let decoding_key = DecodingKey::from_rsa_raw_components(&f.n, &f.e);
    g.bench_function("signature/jsonwebtoken", |b| {
        b.iter(|| {
            jsonwebtoken::crypto::verify(
                black_box(signature),
                black_box(signed.as_bytes()),
                &decoding_key,
                Algorithm::RS256,
            )
            .unwrap()
        })
    });

    let parsed = RsaPublicKeyComponents { n: &f.n, e: &f.e }
        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        .expect("a valid RSA key");
    g.bench_function("signature/aws-lc-rs-parsed", |b| {
        b.iter(|| {
            // The base64url decoding is part of both signature variants.
            let sig = URL_SAFE_NO_PAD.decode(black_box(signature)).unwrap();
            parsed
                .verify_sig(black_box(signed.as_bytes()), &sig)
                .is_ok()
        })
    });

    g.bench_function("verify/valid", |b| {
        b.iter(|| verify(black_box(&f.token), &f.keys, f.now, &f.policy).unwrap())
    });
    g.bench_function("verify/bad-signature", |b| {
        b.iter(|| verify(black_box(&f.bad_signature), &f.keys, f.now, &f.policy).unwrap_err())
    });
    g.bench_function("verify/unknown-kid", |b| {
        b.iter(|| verify(black_box(&f.unknown_kid), &f.keys, f.now, &f.policy).unwrap_err())
    });

    let mut headers = poem::http::HeaderMap::new();
    headers.insert(
        poem::http::header::AUTHORIZATION,
        format!("Bearer {}", f.token).parse().unwrap(),
    );
    g.bench_function("extract-token", |b| {
        b.iter(|| extract_token(black_box(&headers)).unwrap().len())
    });
    g.finish();

    // The service's verifier, with the key pinned (no network), on a runtime of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = Settings::from_overrides(&[
        ("database_url", "postgres://bench@127.0.0.1:1/bench"),
        ("clerk_secret_key", "sk_test_bench"),
        ("clerk_issuer", ISSUER),
        ("clerk_jwt_key", &f.pem),
    ])
    .expect("bench settings");
    let verifier = |cache_entries: u64| {
        let _guard = runtime.enter();
        let metrics = Metrics::default();
        let keys = KeyStore::new(&settings.clerk, reqwest::Client::new(), metrics.clone());
        Verifier::new(keys, f.policy.clone(), cache_entries, metrics)
    };
    let mut g = c.benchmark_group("verifier");
    g.throughput(Throughput::Elements(1));
    let cached = verifier(1000);
    runtime.block_on(cached.verify(&f.token)).unwrap();
    g.bench_function("cached", |b| {
        b.iter(|| {
            runtime
                .block_on(cached.verify(black_box(&f.token)))
                .unwrap()
        })
    });
    let uncached = verifier(0);
    g.bench_function("uncached", |b| {
        b.iter(|| {
            runtime
                .block_on(uncached.verify(black_box(&f.token)))
                .unwrap()
        })
    });
    g.finish();

    // The floor of a cache hit: SHA-256 of the token, a map lookup, a clone of the claims.
    let mut g = c.benchmark_group("cache");
    g.throughput(Throughput::Elements(1));
    let digest = |t: &str| -> [u8; 32] {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes())
            .as_ref()
            .try_into()
            .unwrap()
    };
    g.bench_function("sha256-of-token", |b| {
        b.iter(|| digest(black_box(&f.token)))
    });
    let claims: Claims = verify(&f.token, &f.keys, f.now, &f.policy).unwrap();
    let mut cache: HashMap<[u8; 32], Claims> = HashMap::new();
    cache.insert(digest(&f.token), claims);
    g.bench_function("hit/sha256+hashmap+clone", |b| {
        b.iter(|| {
            let c = cache.get(&digest(black_box(&f.token))).cloned().unwrap();
            // A hit still has to respect the token's exp.
            assert!(c.expires_at > f.now);
            c
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Modest sample counts: the whole file runs in well under a minute.
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = token_benches
}
criterion_main!(benches);
