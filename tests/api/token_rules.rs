//! The token rules: each check rejects what it should, with its `code`, the RFC 6750 challenge and a problem
//! body; a valid token passes. Plus the hostile tokens everyone tries.

use aws_lc_rs::hmac;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use clerk_users::testkit::{
    ClerkStandIn, SigningKey, TestApp,
    clerk::{clerk_user_json, now_secs},
};
use serde_json::{Value, json};

use crate::helpers::rejected;

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A token for a fresh user with one claim changed (`null` removes it).
fn with_claim(app: &TestApp, user: &str, name: &str, value: Value) -> String {
    let mut claims = app.clerk.claims_for(user);
    if value.is_null() {
        claims.as_object_mut().unwrap().remove(name);
    } else {
        claims[name] = value;
    }
    app.clerk.sign(&claims)
}

/// A token with one header parameter changed (`null` removes it), signed with the current key.
fn with_header(app: &TestApp, user: &str, name: &str, value: Value) -> String {
    let key = app.clerk.current_key();
    let mut header = ClerkStandIn::header_for(&key);
    if value.is_null() {
        header.as_object_mut().unwrap().remove(name);
    } else {
        header[name] = value;
    }
    app.clerk
        .sign_with(&key, &header, &app.clerk.claims_for(user))
}

async fn expect_code(app: &TestApp, token: &str, code: &str) {
    rejected(app.get_me(token).await, code).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_passes_with_header_or_cookie_and_the_header_wins() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let token = app.token_for(&user);
    assert_eq!(app.get_me(&token).await.status(), 200);

    let by_cookie = app
        .get("/users/me")
        .header("cookie", format!("theme=dark; __session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), 200);

    // A valid header beside a bad cookie: the header is read, the cookie ignored.
    let resp = app
        .get("/users/me")
        .bearer_auth(&token)
        .header("cookie", "__session=garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A bad header beside a valid cookie: the header still wins.
    let resp = app
        .get("/users/me")
        .header("authorization", "Bearer garbage")
        .header("cookie", format!("__session={token}"))
        .send()
        .await
        .unwrap();
    rejected(resp, "token-invalid").await;
    // The scheme is case-insensitive.
    let resp = app
        .get("/users/me")
        .header("authorization", format!("bEARer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_another_scheme_two_tokens_or_empty_are_401() {
    let app = TestApp::spawn().await;
    let token = app.token_for(&app.clerk.new_user());
    rejected(app.get("/users/me").send().await.unwrap(), "token-missing").await;
    let basic = app
        .get("/users/me")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    rejected(basic, "token-missing").await;
    let empty = app
        .get("/users/me")
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    rejected(empty, "token-invalid").await;
    let two = app
        .get("/users/me")
        .header("authorization", format!("Bearer {token} {token}"))
        .send()
        .await
        .unwrap();
    rejected(two, "token-invalid").await;
    let two_headers = app
        .get("/users/me")
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    rejected(two_headers, "token-invalid").await;
    let two_cookies = app
        .get("/users/me")
        .header("cookie", format!("__session={token}; __session={token}"))
        .send()
        .await
        .unwrap();
    rejected(two_cookies, "token-invalid").await;
    let empty_cookie = app
        .get("/users/me")
        .header("cookie", "__session=")
        .send()
        .await
        .unwrap();
    rejected(empty_cookie, "token-invalid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_1_shape_and_size() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let good = app.token_for(&user);
    let parts: Vec<&str> = good.split('.').collect();
    let cases = [
        "abc".to_string(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.{}", parts[2]),
        format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            b64(&json!(["not", "an", "object"])),
            parts[1],
            parts[2]
        ),
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode("not json"),
            parts[1],
            parts[2]
        ),
        format!("{}.{}.{}", parts[0], b64(&json!([1, 2])), parts[2]),
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
    ];
    for token in cases {
        expect_code(&app, &app.clerk.remember(token), "token-invalid").await;
    }
    // Over 8 KiB, even with a valid signature: rejected before anything else.
    let mut claims = app.clerk.claims_for(&user);
    claims["padding"] = json!("x".repeat(9 * 1024));
    let big = app.clerk.sign(&claims);
    assert!(big.len() > 8 * 1024);
    expect_code(&app, &big, "token-invalid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_2_header() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    expect_code(
        &app,
        &with_header(&app, &user, "alg", json!("RS384")),
        "token-invalid-algorithm",
    )
    .await;
    expect_code(
        &app,
        &with_header(&app, &user, "alg", json!("PS256")),
        "token-invalid-algorithm",
    )
    .await;
    expect_code(
        &app,
        &with_header(&app, &user, "alg", Value::Null),
        "token-invalid-algorithm",
    )
    .await;
    expect_code(
        &app,
        &with_header(&app, &user, "typ", json!("at+jwt")),
        "token-invalid",
    )
    .await;
    expect_code(
        &app,
        &with_header(&app, &user, "kid", Value::Null),
        "token-invalid",
    )
    .await;
    expect_code(
        &app,
        &with_header(&app, &user, "kid", json!("")),
        "token-invalid",
    )
    .await;
    expect_code(
        &app,
        &with_header(&app, &user, "crit", json!(["exp"])),
        "token-invalid",
    )
    .await;
    // typ absent is fine, and unknown header parameters are ignored.
    assert_eq!(
        app.get_me(&with_header(&app, &user, "typ", Value::Null))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get_me(&with_header(&app, &user, "cat", json!("cl_B7d4PD111AAA")))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_alg_none_and_hs256_with_the_public_key_as_secret() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let key = app.clerk.current_key();
    let claims = app.clerk.claims_for(&user);

    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": key.kid, "typ": "JWT"})),
        b64(&claims)
    );
    expect_code(
        &app,
        &app.clerk.remember(none.clone()),
        "token-invalid-algorithm",
    )
    .await;
    let none_sig = format!("{none}{}", URL_SAFE_NO_PAD.encode("x"));
    expect_code(
        &app,
        &app.clerk.remember(none_sig),
        "token-invalid-algorithm",
    )
    .await;

    // The classic confusion attack: HMAC keyed with the published public key.
    for secret in [
        key.public_pem().into_bytes(),
        serde_json::to_vec(&key.jwk()).unwrap(),
    ] {
        let input = format!(
            "{}.{}",
            b64(&json!({"alg": "HS256", "kid": key.kid, "typ": "JWT"})),
            b64(&claims)
        );
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
        );
        let token = app
            .clerk
            .remember(format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())));
        expect_code(&app, &token, "token-invalid-algorithm").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_jku_is_never_fetched() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let attacker = ClerkStandIn::start("sk_attacker").await;
    let attacker_key = attacker.current_key();
    let claims = app.clerk.claims_for(&user);
    for (kid, param) in [
        (attacker_key.kid.clone(), "jku"),
        (app.clerk.current_key().kid.clone(), "jku"),
        (attacker_key.kid.clone(), "x5u"),
    ] {
        let header = json!({"alg": "RS256", "kid": kid, "typ": "JWT",
                            param: format!("{}/.well-known/jwks.json", attacker.url())});
        let token = app.clerk.remember(attacker_key.sign(&header, &claims));
        let resp = app.get_me(&token).await;
        let code = if kid == attacker_key.kid {
            "jwk-kid-mismatch"
        } else {
            "token-invalid-signature"
        };
        rejected(resp, code).await;
    }
    // An embedded key is ignored too.
    let header = json!({"alg": "RS256", "kid": attacker_key.kid, "jwk": attacker_key.jwk()});
    rejected(
        app.get_me(&app.clerk.remember(attacker_key.sign(&header, &claims)))
            .await,
        "jwk-kid-mismatch",
    )
    .await;
    assert_eq!(
        attacker.all_calls(),
        0,
        "nothing is fetched from a URL a token names"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_3_unknown_kid() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let stranger = SigningKey::generate();
    let token = app.clerk.sign_with(
        &stranger,
        &ClerkStandIn::header_for(&stranger),
        &app.clerk.claims_for(&user),
    );
    expect_code(&app, &token, "jwk-kid-mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_4_signature() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let good = app.token_for(&user);
    let (input, sig) = good.rsplit_once('.').unwrap();

    // One flipped bit in the signature.
    let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    bytes[10] ^= 1;
    let tampered = app
        .clerk
        .remember(format!("{input}.{}", URL_SAFE_NO_PAD.encode(&bytes)));
    expect_code(&app, &tampered, "token-invalid-signature").await;

    // Another subject under the original signature.
    let mut claims = app.clerk.claims_for(&user);
    claims["sub"] = json!(app.clerk.new_user());
    let header = good.split('.').next().unwrap();
    let forged = app
        .clerk
        .remember(format!("{header}.{}.{sig}", b64(&claims)));
    expect_code(&app, &forged, "token-invalid-signature").await;

    // The right kid, the wrong key.
    let impostor = SigningKey::generate_with_kid(&app.clerk.current_key().kid);
    let token = app.clerk.sign_with(
        &impostor,
        &ClerkStandIn::header_for(&impostor),
        &app.clerk.claims_for(&user),
    );
    expect_code(&app, &token, "token-invalid-signature").await;

    // No signature at all.
    let unsigned = app.clerk.remember(format!("{input}."));
    expect_code(&app, &unsigned, "token-invalid-signature").await;

    // A signature of the wrong length.
    let short = app
        .clerk
        .remember(format!("{input}.{}", URL_SAFE_NO_PAD.encode([1u8; 16])));
    expect_code(&app, &short, "token-invalid-signature").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_5_time() {
    let app = TestApp::spawn().await; // skew 5 s
    let user = app.clerk.new_user();
    let now = now_secs();
    expect_code(
        &app,
        &with_claim(&app, &user, "exp", Value::Null),
        "token-invalid",
    )
    .await;
    expect_code(
        &app,
        &with_claim(&app, &user, "iat", Value::Null),
        "token-invalid",
    )
    .await;
    expect_code(
        &app,
        &with_claim(&app, &user, "exp", json!("soon")),
        "token-invalid",
    )
    .await;
    expect_code(
        &app,
        &with_claim(&app, &user, "exp", json!(now - 6)),
        "token-expired",
    )
    .await;
    expect_code(
        &app,
        &with_claim(&app, &user, "nbf", json!(now + 30)),
        "token-not-active-yet",
    )
    .await;
    expect_code(
        &app,
        &with_claim(&app, &user, "iat", json!(now + 30)),
        "token-iat-in-the-future",
    )
    .await;
    // Inside the leeway all pass.
    assert_eq!(
        app.get_me(&with_claim(&app, &user, "exp", json!(now - 2)))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get_me(&with_claim(&app, &user, "nbf", json!(now + 2)))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get_me(&with_claim(&app, &user, "iat", json!(now + 2)))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_6_issuer() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let iss = app.clerk.issuer();
    for other in [
        json!("https://clerk.other.example"),
        json!(format!("{iss}/")),
        json!(iss.to_uppercase()),
        Value::Null,
    ] {
        expect_code(
            &app,
            &with_claim(&app, &user, "iss", other),
            "token-invalid-issuer",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_7_subject_and_session() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    // Anything but `user_` and 1 to 123 of [A-Za-z0-9_-]: the id reaches SQL and Clerk's path.
    for sub in [
        json!("mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk"),
        json!(""),
        json!("user_"),
        json!("user_\u{0}x"),
        json!("user_a b"),
        json!("user_../../v1/jwks"),
        json!("user_é"),
        json!(format!("user_{}", "a".repeat(124))),
        json!(42),
        Value::Null,
    ] {
        let resp = app
            .get_me(&with_claim(&app, &user, "sub", sub.clone()))
            .await;
        let p = rejected(resp, "token-invalid").await;
        assert_eq!(p.detail, "the token subject is not a user", "{sub}");
    }
    assert_eq!(app.clerk.user_calls(), 0, "no rejected sub reached Clerk");
    // The longest id of that shape is a user like any other.
    let longest = format!("user_{}", "aZ9_-".repeat(24) + "xyz");
    app.clerk
        .add_user(clerk_user_json(&longest, Some("Long"), None, None));
    assert_eq!(app.get_me(&app.token_for(&longest)).await.status(), 200);
    expect_code(
        &app,
        &with_claim(&app, &user, "sid", Value::Null),
        "token-invalid",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_8_audience() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    expect_code(
        &app,
        &with_claim(&app, &user, "aud", json!("https://api.example.com")),
        "token-invalid-audience",
    )
    .await;

    let app = TestApp::builder()
        .with("clerk_audience", "https://api.example.com, other")
        .spawn()
        .await;
    let user = app.clerk.new_user();
    expect_code(&app, &app.token_for(&user), "token-invalid-audience").await;
    expect_code(
        &app,
        &with_claim(&app, &user, "aud", json!("https://evil.example")),
        "token-invalid-audience",
    )
    .await;
    assert_eq!(
        app.get_me(&with_claim(
            &app,
            &user,
            "aud",
            json!("https://api.example.com")
        ))
        .await
        .status(),
        200
    );
    assert_eq!(
        app.get_me(&with_claim(&app, &user, "aud", json!(["x", "other"])))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_9_authorized_parties() {
    let app = TestApp::builder()
        .with("clerk_authorized_parties", "https://app.example.com")
        .spawn()
        .await;
    let user = app.clerk.new_user();
    expect_code(
        &app,
        &app.token_for(&user),
        "token-invalid-authorized-parties",
    )
    .await; // azp of another origin
    expect_code(
        &app,
        &with_claim(&app, &user, "azp", Value::Null),
        "token-invalid-authorized-parties",
    )
    .await;
    assert_eq!(
        app.get_me(&with_claim(
            &app,
            &user,
            "azp",
            json!("https://app.example.com")
        ))
        .await
        .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_10_pending_sessions() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    expect_code(
        &app,
        &with_claim(&app, &user, "sts", json!("pending")),
        "session-pending",
    )
    .await;
    assert_eq!(
        app.get_me(&with_claim(&app, &user, "sts", json!("active")))
            .await
            .status(),
        200
    );

    let app = TestApp::builder()
        .with("clerk_accept_pending", "true")
        .spawn()
        .await;
    let user = app.clerk.new_user();
    assert_eq!(
        app.get_me(&with_claim(&app, &user, "sts", json!("pending")))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_run_in_order_and_claims_are_not_read_before_the_signature() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    // Expired, wrong issuer and a machine subject, but signed by a stranger: the signature fails first.
    let impostor = SigningKey::generate_with_kid(&app.clerk.current_key().kid);
    let claims = json!({"sub": "mch_x", "iss": "https://evil", "exp": 1, "iat": 1});
    let token = app
        .clerk
        .sign_with(&impostor, &ClerkStandIn::header_for(&impostor), &claims);
    expect_code(&app, &token, "token-invalid-signature").await;
    // Expired and of another issuer: time is checked before the issuer.
    let mut claims = app.clerk.claims_for(&user);
    claims["exp"] = json!(1);
    claims["iss"] = json!("https://evil");
    expect_code(&app, &app.clerk.sign(&claims), "token-expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_claims_and_unknown_claims() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let key = app.clerk.current_key();
    let claims = app.clerk.claims_for(&user);
    // `sub` twice: the second would name another user. Rejected rather than guessed.
    let payload =
        claims
            .to_string()
            .replacen('{', &format!("{{\"sub\":\"{}\",", app.clerk.new_user()), 1);
    let input = format!(
        "{}.{}",
        b64(&ClerkStandIn::header_for(&key)),
        URL_SAFE_NO_PAD.encode(payload)
    );
    expect_code(
        &app,
        &app.clerk.remember(key.sign_input(&input)),
        "token-invalid",
    )
    .await;
    // Unknown claims and organization claims are fine.
    let mut claims = app.clerk.claims_for(&user);
    claims["o"] = json!({"id": "org_2abc", "slg": "acme", "rol": "admin", "per": "manage,read", "fpm": "3,2"});
    claims["act"] = json!({"sub": "user_admin"});
    claims["future_claim"] = json!({"nested": [1, 2, 3]});
    assert_eq!(app.get_me(&app.clerk.sign(&claims)).await.status(), 200);
}
