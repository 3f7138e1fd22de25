//! Signing keys: loaded at start, rotation through the unknown-kid refetch, the refetch rate limit,
//! the last good set while the JWKS endpoint fails, staleness, and the pinned-key mode.

use std::time::Duration;

use clerk_users::testkit::{ClerkStandIn, Fault, SigningKey, TestApp};
use futures::future::join_all;

use crate::helpers::{rejected, unavailable};

fn server_error() -> Option<Fault> {
    Some(Fault::Status {
        status: 500,
        retry_after: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_loaded_at_start() {
    let app = TestApp::spawn().await;
    assert_eq!(app.clerk.jwks_calls(), 1);
    let ready = app.get("/readyz").send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let user = app.clerk.new_user();
    assert_eq!(app.get_me(&app.token_for(&user)).await.status(), 200);
    assert_eq!(app.clerk.jwks_calls(), 1, "a known kid needs no fetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_picked_up_by_the_unknown_kid_refetch() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    assert_eq!(app.get_me(&app.token_for(&user)).await.status(), 200);
    let old_token = app.token_for(&user);

    app.clerk.rotate_key(false);
    assert_eq!(app.get_me(&app.token_for(&user)).await.status(), 200);
    assert_eq!(app.clerk.jwks_calls(), 2, "one refetch for the new kid");
    // The old key is gone from the new set.
    rejected(app.get_me(&old_token).await, "jwk-kid-mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_interval() {
    let app = TestApp::spawn().await; // interval 30 s
    let user = app.clerk.new_user();
    let strangers: Vec<SigningKey> = (0..4).map(|_| SigningKey::generate()).collect();
    let tokens: Vec<String> = (0..60)
        .map(|i| {
            let key = &strangers[i % strangers.len()];
            app.clerk.sign_with(
                key,
                &ClerkStandIn::header_for(key),
                &app.clerk.claims_for(&user),
            )
        })
        .collect();
    let responses = join_all(tokens.iter().map(|t| app.get_me(t))).await;
    for resp in responses {
        rejected(resp, "jwk-kid-mismatch").await;
    }
    assert_eq!(
        app.clerk.jwks_calls(),
        2,
        "start-up, then one refetch shared by the whole flood"
    );

    // Within the interval, even a genuinely new key waits for the next refetch or refresh.
    app.clerk.rotate_key(true);
    rejected(app.get_me(&app.token_for(&user)).await, "jwk-kid-mismatch").await;
    assert_eq!(app.clerk.jwks_calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refetches_resume_after_the_interval() {
    let app = TestApp::builder()
        .with("clerk_jwks_unknown_kid_interval_secs", "1")
        .spawn()
        .await;
    let user = app.clerk.new_user();
    let stranger = SigningKey::generate();
    let token = app.clerk.sign_with(
        &stranger,
        &ClerkStandIn::header_for(&stranger),
        &app.clerk.claims_for(&user),
    );
    rejected(app.get_me(&token).await, "jwk-kid-mismatch").await;
    rejected(app.get_me(&token).await, "jwk-kid-mismatch").await;
    assert_eq!(app.clerk.jwks_calls(), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.clerk.rotate_key(true);
    assert_eq!(app.get_me(&app.token_for(&user)).await.status(), 200);
    assert_eq!(app.clerk.jwks_calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_keys_keep_working_while_the_jwks_endpoint_fails() {
    let app = TestApp::builder()
        .with("clerk_jwks_refresh_secs", "1")
        .spawn()
        .await;
    let user = app.clerk.new_user();
    app.clerk.set_jwks_fault(server_error());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(app.clerk.jwks_calls() >= 2, "the refresher kept trying");
    assert_eq!(app.get_me(&app.token_for(&user)).await.status(), 200);
    assert_eq!(app.get("/readyz").send().await.unwrap().status(), 200);
    // Slow answers count as failures too, and do not hold up requests.
    app.clerk
        .set_jwks_fault(Some(Fault::Delay(Duration::from_secs(30))));
    let started = std::time::Instant::now();
    assert_eq!(app.get_me(&app.token_for(&user)).await.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_unrefreshed_past_the_limit_give_503_not_401() {
    let app = TestApp::builder()
        .with("clerk_jwks_refresh_secs", "1")
        .with("clerk_jwks_max_stale_secs", "2")
        .with("clerk_jwks_unknown_kid_interval_secs", "30")
        .spawn()
        .await;
    let user = app.clerk.new_user();
    assert_eq!(app.get_me(&app.token_for(&user)).await.status(), 200);
    app.clerk.set_jwks_fault(server_error());
    tokio::time::sleep(Duration::from_millis(2600)).await;
    unavailable(
        app.get_me(&app.token_for(&user)).await,
        "signing-keys-unavailable",
    )
    .await;
    let ready = app.get("/readyz").send().await.unwrap();
    let p = unavailable(ready, "signing-keys-unavailable").await;
    assert!(p.detail.contains("signing keys"), "{}", p.detail);
    // A malformed token is still the caller's fault.
    rejected(app.get_me("garbage").await, "token-invalid").await;

    // Clerk comes back: the refresher recovers by itself.
    app.clerk.set_jwks_fault(None);
    let mut ok = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if app.get_me(&app.token_for(&user)).await.status() == 200 {
            ok = true;
            break;
        }
    }
    assert!(ok, "keys came back without a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_starts_without_clerk_and_becomes_ready_when_keys_arrive() {
    let clerk = ClerkStandIn::start(&format!(
        "sk_test_{}",
        clerk_users::testkit::clerk::random_id(20)
    ))
    .await;
    clerk.set_jwks_fault(server_error());
    let app = TestApp::builder().clerk(clerk).spawn().await;
    let user = app.clerk.new_user();
    unavailable(
        app.get("/readyz").send().await.unwrap(),
        "signing-keys-unavailable",
    )
    .await;
    unavailable(
        app.get_me(&app.token_for(&user)).await,
        "signing-keys-unavailable",
    )
    .await;
    app.clerk.set_jwks_fault(None);
    let mut ready = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if app.get("/readyz").send().await.unwrap().status() == 200 {
            ready = true;
            break;
        }
    }
    assert!(ready, "ready by itself once keys arrive");
    assert_eq!(app.get_me(&app.token_for(&user)).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_key_makes_no_key_request_at_all() {
    let clerk = ClerkStandIn::start(&format!(
        "sk_test_{}",
        clerk_users::testkit::clerk::random_id(20)
    ))
    .await;
    let pem = clerk.current_key().public_pem();
    let app = TestApp::builder()
        .clerk(clerk)
        .with("clerk_jwt_key", pem)
        .spawn()
        .await;
    let user = app.clerk.new_user();
    assert_eq!(app.get_me(&app.token_for(&user)).await.status(), 200);
    // Any kid: the pinned key is the only key.
    let key = app.clerk.current_key();
    let header = serde_json::json!({"alg": "RS256", "kid": "ins_whatever", "typ": "JWT"});
    assert_eq!(
        app.get_me(
            &app.clerk
                .sign_with(&key, &header, &app.clerk.claims_for(&user))
        )
        .await
        .status(),
        200
    );
    // Another key with an unknown kid: a signature failure, and still no fetch.
    let stranger = SigningKey::generate();
    let token = app.clerk.sign_with(
        &stranger,
        &ClerkStandIn::header_for(&stranger),
        &app.clerk.claims_for(&user),
    );
    rejected(app.get_me(&token).await, "token-invalid-signature").await;
    assert_eq!(app.get("/readyz").send().await.unwrap().status(), 200);
    assert_eq!(app.clerk.jwks_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_key_goes_only_to_the_backend_api_origin() {
    // Issuer (and so the JWKS) on one host, the Backend API on another.
    let secret = format!("sk_test_{}", clerk_users::testkit::clerk::random_id(20));
    let issuer = ClerkStandIn::start(&secret).await;
    let api = ClerkStandIn::start(&secret).await;
    let api_url = api.url();
    let app = TestApp::builder()
        .clerk(issuer)
        .with("clerk_api_url", api_url.clone())
        .spawn()
        .await;
    assert_eq!(app.clerk.jwks_authorization_headers(), vec![None]);

    // JWKS from the Backend API's /v1/jwks: the key goes along (and is required there).
    let app2 = TestApp::builder()
        .clerk(api)
        .with("clerk_api_url", api_url.clone())
        .with("clerk_jwks_url", format!("{api_url}/v1/jwks"))
        .spawn()
        .await;
    assert_eq!(
        app2.clerk.jwks_authorization_headers(),
        vec![Some(format!("Bearer {secret}"))]
    );
    assert_eq!(app2.get("/readyz").send().await.unwrap().status(), 200);
}
