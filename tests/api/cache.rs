//! The caches: a user cache kept coherent across instances through LISTEN/NOTIFY, and the
//! verified-token cache, which never outlives a token nor a key set.

use std::time::{Duration, Instant};

use clerk_users::{api::users::User, testkit::TestApp};
use serde_json::json;

use crate::helpers::rejected;

/// Two instances on one database, each with its own Clerk connection to the same user.
async fn pair() -> (TestApp, TestApp, String) {
    let a = TestApp::spawn().await;
    let b = TestApp::builder().database(a.db.clone()).spawn().await;
    let user = a.clerk.new_user();
    b.clerk.add_user(a.clerk.user_json(&user).unwrap());
    // Both read (and cache) the user, once the notification of its first sight has reached B
    // (arriving later, it would drop B's entry and the cache-hit checks below would race it).
    let ua: User = a.get_me(&a.token_for(&user)).await.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ub: User = b
        .get_me(&b.clerk.token_for(&user))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ua.id, ub.id);
    let ub2: User = b
        .get_me(&b.clerk.token_for(&user))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ub2, ub);
    (a, b, user)
}

/// Poll `b` until `done(user)` holds; the time it took.
async fn seen_within(
    b: &TestApp,
    user: &str,
    limit: Duration,
    done: impl Fn(&User) -> bool,
) -> Duration {
    let token = b.clerk.token_for(user);
    let started = Instant::now();
    loop {
        let resp = b.get_me(&token).await;
        if resp.status() == 200 && done(&resp.json().await.unwrap()) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not seen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_is_seen_through_the_other_within_100ms() {
    let (a, b, user) = pair().await;
    let resp = a
        .http
        .patch(format!("{}/users/me", a.url))
        .bearer_auth(a.token_for(&user))
        .json(&json!({"metadata": {"plan": "pro"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let took = seen_within(&b, &user, Duration::from_millis(100), |u| {
        u.metadata.get("plan") == Some(&json!("pro"))
    })
    .await;
    eprintln!("PATCH through A seen through B after {took:?}");
    let metrics = crate::helpers::metrics(&b).await;
    assert!(
        metrics.contains("clerk_users_user_cache_total{result=\"hit\"}"),
        "B served from its cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deleted_through_one_instance_is_gone_from_the_other() {
    let (a, b, user) = pair().await;
    let before: User = b
        .get_me(&b.clerk.token_for(&user))
        .await
        .json()
        .await
        .unwrap();
    let resp = a
        .http
        .delete(format!("{}/users/me", a.url))
        .bearer_auth(a.token_for(&user))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    // B no longer serves the deleted record: its next GET is a first sight (a new id, from Clerk).
    let took = seen_within(&b, &user, Duration::from_millis(100), |u| u.id != before.id).await;
    eprintln!("DELETE through A seen through B after {took:?}");
    // A made the first sight; B's stand-in is asked only now, after the deletion.
    assert_eq!(b.clerk.user_calls_for(&user), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_bounds_staleness_when_a_change_bypasses_the_service() {
    let app = TestApp::builder()
        .with("user_cache_ttl_secs", "1")
        .spawn()
        .await;
    let user = app.clerk.new_user();
    let token = app.token_for(&user);
    assert_eq!(app.get_me(&token).await.status(), 200);
    assert_eq!(app.get_me(&token).await.status(), 200);
    // A change made behind the service's back, without a notification.
    let client = app.db.connect().await;
    client
        .execute(
            "update users set first_name = 'Changed' where clerk_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    let took = seen_within(&app, &user, Duration::from_millis(2500), |u| {
        u.first_name.as_deref() == Some("Changed")
    })
    .await;
    assert!(took <= Duration::from_millis(1500), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_never_outlives_its_expiry() {
    let app = TestApp::builder()
        .with("clerk_clock_skew_secs", "0")
        .spawn()
        .await;
    let user = app.clerk.new_user();
    let mut claims = app.clerk.claims_for(&user);
    let now = clerk_users::testkit::clerk::now_secs();
    claims["exp"] = json!(now + 2);
    let token = app.clerk.sign(&claims);
    assert_eq!(app.get_me(&token).await.status(), 200);
    assert_eq!(app.get_me(&token).await.status(), 200);
    let metrics = crate::helpers::metrics(&app).await;
    assert!(
        metrics.contains("clerk_users_token_cache_total{result=\"hit\"} 1"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(2600)).await;
    rejected(app.get_me(&token).await, "token-expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_checked_again_against_a_new_key_set() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let old = app.token_for(&user);
    assert_eq!(app.get_me(&old).await.status(), 200);
    assert_eq!(app.get_me(&old).await.status(), 200);
    // The old key is withdrawn; a token under the new key makes the service load the new set.
    app.clerk.rotate_key(false);
    assert_eq!(app.get_me(&app.token_for(&user)).await.status(), 200);
    rejected(app.get_me(&old).await, "jwk-kid-mismatch").await;
}
