//! Through Debian's PgBouncer in transaction mode with 2 server connections (statements of
//! different clients interleave on one server connection), prepared statements off: the core of
//! the API, with and without a direct URL for migrations and notifications.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clerk_users::{
    api::users::User,
    testkit::{Pooler, TestApp, TestDatabase, clerk::now_secs},
};
use serde_json::json;

use crate::helpers::{WEBHOOK_SECRET, deliver_webhook};

/// Two instances on one empty database, started at once (both migrate), through PgBouncer.
async fn pair(how: Pooler) -> (TestApp, TestApp) {
    let db = Arc::new(TestDatabase::on_shared_cluster().await);
    let start = || {
        TestApp::builder()
            .database(db.clone())
            .through_pgbouncer(how)
            .with("clerk_webhook_secret", WEBHOOK_SECRET)
            .try_spawn()
    };
    let (a, b) = tokio::join!(start(), start());
    let (a, b) = (a.expect("A starts"), b.expect("B starts"));
    (a, b)
}

async fn bypassed(app: &TestApp) -> Option<bool> {
    let m = crate::helpers::metrics(app).await;
    if m.contains("\nclerk_users_user_cache_bypassed 1\n") {
        Some(true)
    } else if m.contains("\nclerk_users_user_cache_bypassed 0\n") {
        Some(false)
    } else {
        None
    }
}

/// Wait until the listener has decided (its probe came back, or did not).
async fn settled(app: &TestApp, expect_bypassed: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while bypassed(app).await != Some(expect_bypassed) {
        assert!(
            Instant::now() < deadline,
            "cache bypassed = {expect_bypassed}: {}",
            crate::helpers::metrics(app).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn seen_within(b: &TestApp, user: &str, limit: Duration, done: impl Fn(&User) -> bool) {
    let token = b.clerk.token_for(user);
    let started = Instant::now();
    loop {
        let resp = b.get_me(&token).await;
        if resp.status() == 200 && done(&resp.json().await.unwrap()) {
            return;
        }
        assert!(started.elapsed() < limit, "not seen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn core_api(a: &TestApp, b: &TestApp) {
    // Concurrent first sight of one user through both instances: one row.
    let user = a.clerk.new_user();
    b.clerk.add_user(a.clerk.user_json(&user).unwrap());
    let (ta, tb) = (a.token_for(&user), b.clerk.token_for(&user));
    let gets = (0..8).map(|i| {
        let (app, token) = if i % 2 == 0 { (a, &ta) } else { (b, &tb) };
        async move { app.get_me(token).await.status() }
    });
    for status in futures::future::join_all(gets).await {
        assert_eq!(status, 200);
    }
    assert_eq!(a.user_rows(Some(&user)).await, 1);
    // Both cached (when they may) the user; B served twice.
    assert_eq!(b.get_me(&tb).await.status(), 200);

    // PATCH through A, seen through B within 100 ms.
    let resp = a
        .http
        .patch(format!("{}/users/me", a.url))
        .bearer_auth(&ta)
        .json(&json!({"metadata": {"plan": "pro"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    seen_within(b, &user, Duration::from_millis(100), |u| {
        u.metadata.get("plan") == Some(&json!("pro"))
    })
    .await;

    // A webhook through B changes what A serves.
    let mut data = a.clerk.user_json(&user).unwrap();
    data["first_name"] = json!("Webhooked");
    data["updated_at"] = json!(now_secs() as i64 * 1000 + 60_000);
    let body = json!({"type": "user.updated", "object": "event", "timestamp": now_secs() * 1000, "data": data});
    let resp = deliver_webhook(b, "msg_pooler", &body).await;
    assert_eq!(resp.status(), 204);
    seen_within(a, &user, Duration::from_millis(100), |u| {
        u.first_name.as_deref() == Some("Webhooked")
    })
    .await;

    // DELETE through B: A serves a new record (a first sight) within 100 ms.
    let before: User = a.get_me(&ta).await.json().await.unwrap();
    let resp = b
        .http
        .delete(format!("{}/users/me", b.url))
        .bearer_auth(&tb)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    seen_within(a, &user, Duration::from_millis(100), |u| u.id != before.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooler_with_a_direct_url_the_api_works_and_the_cache_is_used() {
    let (a, b) = pair(Pooler::WithDirectUrl).await;
    settled(&a, false).await;
    settled(&b, false).await;
    core_api(&a, &b).await;
    // A user read twice once the notifications of its first sight have come and gone: the
    // second read is a cache hit.
    let user = b.clerk.new_user();
    let token = b.token_for(&user);
    assert_eq!(b.get_me(&token).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        assert_eq!(b.get_me(&token).await.status(), 200);
    }
    let m = crate::helpers::metrics(&b).await;
    assert!(
        m.contains("clerk_users_user_cache_total{result=\"hit\"}"),
        "B used its cache: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooler_without_a_direct_url_migrations_work_and_the_cache_is_bypassed() {
    let (a, b) = pair(Pooler::Only).await;
    // LISTEN through a transaction pooler hears nothing: the probe finds out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.log().contains("did not arrive on the LISTEN connection") {
        assert!(
            Instant::now() < deadline,
            "the log says why the cache is bypassed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settled(&a, true).await;
    settled(&b, true).await;
    core_api(&a, &b).await;
    let m = crate::helpers::metrics(&b).await;
    assert!(
        !m.contains("clerk_users_user_cache_total{result=\"hit\"}"),
        "no cache hit"
    );
}

/// `DB_STATEMENT_TIMEOUT_MS` ends a statement that runs through PgBouncer (no `options`
/// startup parameter, which PgBouncer refuses), inside and outside a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooler_statement_timeout_still_ends_statements() {
    use clerk_users::db::query::{self, Conn};
    let db = TestDatabase::on_shared_cluster().await;
    let url = db.url_through_pgbouncer().await;
    let settings = clerk_users::settings::Settings::from_overrides(&[
        ("database_url", &url),
        ("database_prepared_statements", "false"),
        ("db_statement_timeout_ms", "300"),
        ("clerk_secret_key", "sk_test_x"),
        ("clerk_issuer", "http://127.0.0.1:1"),
    ])
    .unwrap();
    let pool = clerk_users::db::create_pool(&settings.database);
    let mut client = query::Client::new(
        pool.get().await.unwrap(),
        query::Mode::of(&settings.database),
    );
    let started = Instant::now();
    let e = query::query(&client, "select pg_sleep(3)", &[], &[])
        .await
        .expect_err("ended by the timeout");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let tx = client.transaction().await.unwrap();
    let e = query::query(&tx, "select pg_sleep(3)", &[], &[])
        .await
        .expect_err("ended by the timeout");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
    drop(tx);
    // Nothing stays behind on the server connections (SET LOCAL ends with its transaction).
    let shown = client
        .pg()
        .simple_query("show statement_timeout")
        .await
        .unwrap();
    let value = shown.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("0"));
}
