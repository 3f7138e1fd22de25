//! First sight: a user never seen is fetched from Clerk once and stored; after that Clerk is not asked.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use clerk_users::{
    api::users::User,
    testkit::{Fault, TestApp},
};
use futures::future::join_all;

use crate::helpers::{problem, rejected, unavailable};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_request_fetches_once_then_serves_from_the_database() {
    let app = TestApp::spawn().await;
    let user_id = app.clerk.new_user();
    let clerk_json = app.clerk.user_json(&user_id).unwrap();

    let resp = app.get_me(&app.token_for(&user_id)).await;
    assert_eq!(resp.status(), 200);
    let user: User = resp.json().await.unwrap();
    assert_eq!(user.clerk_id, user_id);
    assert_eq!(user.first_name.as_deref(), Some("Ada"));
    assert_eq!(user.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(user.image_url.as_deref(), clerk_json["image_url"].as_str());
    // The primary address is the second entry; it is chosen by id.
    assert_eq!(
        user.email.as_deref(),
        clerk_json["email_addresses"][1]["email_address"].as_str()
    );
    assert_eq!(user.username, None);
    assert!(user.metadata.is_empty());
    assert_eq!(app.clerk.user_calls_for(&user_id), 1);
    assert_eq!(app.user_rows(Some(&user_id)).await, 1);

    for _ in 0..5 {
        let again: User = app
            .get_me(&app.token_for(&user_id))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(again, user);
    }
    assert_eq!(
        app.clerk.user_calls(),
        1,
        "known users never reach the Backend API"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_requests_make_one_call_and_one_row() {
    let app = TestApp::spawn().await;
    let user_id = app.clerk.new_user();
    // Clerk answers slowly, so all fifty are in flight together.
    app.clerk
        .queue_user_faults([Fault::Delay(Duration::from_millis(400))]);
    let tokens: Vec<String> = (0..50).map(|_| app.token_for(&user_id)).collect();
    let responses = join_all(tokens.iter().map(|t| app.get_me(t))).await;
    let mut ids = HashSet::new();
    for resp in responses {
        assert_eq!(resp.status(), 200);
        ids.insert(resp.json::<User>().await.unwrap().id);
    }
    assert_eq!(ids.len(), 1, "one id for everyone");
    assert_eq!(app.clerk.user_calls_for(&user_id), 1);
    assert_eq!(app.user_rows(Some(&user_id)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_database_still_make_one_row() {
    let a = TestApp::spawn().await;
    let b = TestApp::builder().database(a.db.clone()).spawn().await;
    // The same user exists at both stand-ins (two Clerk connections, one Clerk instance).
    let user_id = a.clerk.new_user();
    b.clerk.add_user(a.clerk.user_json(&user_id).unwrap());
    a.clerk
        .queue_user_faults([Fault::Delay(Duration::from_millis(200))]);
    b.clerk
        .queue_user_faults([Fault::Delay(Duration::from_millis(200))]);
    let (ta, tb) = (a.token_for(&user_id), b.clerk.token_for(&user_id));
    let (ra, rb) = tokio::join!(a.get_me(&ta), b.get_me(&tb));
    let ua: User = ra.json().await.unwrap();
    let ub: User = rb.json().await.unwrap();
    assert_eq!(ua.id, ub.id);
    assert_eq!(a.user_rows(Some(&user_id)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_clerk_does_not_know_is_401_user_not_found() {
    let app = TestApp::spawn().await;
    let resp = app
        .get_me(&app.token_for("user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr"))
        .await;
    rejected(resp, "user-not-found").await;
    assert_eq!(app.clerk.user_calls(), 1, "a 404 is not retried");
    assert_eq!(app.user_rows(None).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried_within_the_budget() {
    let app = TestApp::spawn().await;
    let user_id = app.clerk.new_user();
    app.clerk.queue_user_faults([
        Fault::Status {
            status: 429,
            retry_after: Some(1),
        },
        Fault::Status {
            status: 502,
            retry_after: None,
        },
    ]);
    let started = Instant::now();
    assert_eq!(app.get_me(&app.token_for(&user_id)).await.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_eq!(app.clerk.user_calls_for(&user_id), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_gives_503_with_retry_after_while_known_users_keep_working() {
    let app = TestApp::spawn().await;
    let known = app.clerk.new_user();
    assert_eq!(app.get_me(&app.token_for(&known)).await.status(), 200);

    app.clerk.set_user_fault(Some(Fault::Status {
        status: 503,
        retry_after: None,
    }));
    let new = app.clerk.new_user();
    unavailable(app.get_me(&app.token_for(&new)).await, "clerk-unavailable").await;
    assert_eq!(app.clerk.user_calls_for(&new), 3, "three tries in all");

    app.clerk.set_user_fault(Some(Fault::Status {
        status: 429,
        retry_after: Some(7),
    }));
    let (headers, _) = problem(
        app.get_me(&app.token_for(&new)).await,
        503,
        "clerk-unavailable",
    )
    .await;
    assert_eq!(
        headers.get("retry-after").unwrap(),
        "7",
        "Clerk's Retry-After is passed on"
    );

    assert_eq!(app.get_me(&app.token_for(&known)).await.status(), 200);
    app.clerk.set_user_fault(None);
    assert_eq!(
        app.get_me(&app.token_for(&new)).await.status(),
        200,
        "recovers with Clerk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_slow_answers() {
    let app = TestApp::builder()
        .with("clerk_http_timeout_ms", "300")
        .with("clerk_api_retry_budget_ms", "1000")
        .spawn()
        .await;
    let user_id = app.clerk.new_user();
    app.clerk
        .set_user_fault(Some(Fault::Delay(Duration::from_secs(5))));
    let started = Instant::now();
    unavailable(
        app.get_me(&app.token_for(&user_id)).await,
        "clerk-unavailable",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_secret_key_is_503_clerk_misconfigured() {
    let app = TestApp::spawn().await;
    let user_id = app.clerk.new_user();
    app.clerk.set_user_fault(Some(Fault::Status {
        status: 401,
        retry_after: None,
    }));
    unavailable(
        app.get_me(&app.token_for(&user_id)).await,
        "clerk-misconfigured",
    )
    .await;
    assert_eq!(app.clerk.user_calls_for(&user_id), 1, "not retried");
    assert!(
        app.log().contains("CLERK_SECRET_KEY"),
        "logged at error, naming the setting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_clerk_data_is_kept_and_metadata_is_never_overwritten() {
    let app = TestApp::spawn().await;
    let user_id = app.clerk.new_user();
    let first: User = app
        .get_me(&app.token_for(&user_id))
        .await
        .json()
        .await
        .unwrap();
    let client = app.db.connect().await;
    client
        .execute(
            "update users set metadata = '{\"plan\":\"pro\"}' where clerk_id = $1",
            &[&user_id],
        )
        .await
        .unwrap();
    let again: User = app
        .get_me(&app.token_for(&user_id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(
        again.metadata.get("plan").and_then(|v| v.as_str()),
        Some("pro")
    );
}
