//! Stale-if-error: a real cluster stopped for 20 seconds and started again. Known users whose rows
//! are cached keep getting 200, fast; everything that needs the database gets a fast 503; no entry
//! older than the stale limit is served; after the restart the instances are coherent again.

use std::time::{Duration, Instant};

use clerk_users::{
    api::users::User,
    testkit::{TestApp, clerk::now_secs},
};
use futures::future::join_all;
use serde_json::json;

use crate::helpers::{
    WEBHOOK_SECRET, deliver_webhook, metrics, own_cluster, start_cluster, stop_cluster, unavailable,
};

/// Until the instance's user cache listens (it serves, and keeps, nothing before).
async fn listening(app: &TestApp) {
    let started = Instant::now();
    while !metrics(app)
        .await
        .contains("clerk_users_user_cache_bypassed 0")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "cache listening"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// First sight of each user, then (once the instance has heard its own change notifications,
/// which drop the entry) a read from the database that caches the row.
async fn warm(app: &TestApp, users: &[String]) -> Vec<User> {
    for user in users {
        assert_eq!(app.get_me(&app.token_for(user)).await.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut rows = Vec::new();
    for user in users {
        let token = app.token_for(user);
        assert_eq!(app.get_me(&token).await.status(), 200);
        rows.push(app.get_me(&token).await.json().await.unwrap());
    }
    rows
}

async fn patch(app: &TestApp, user: &str, metadata: serde_json::Value) -> reqwest::Response {
    app.http
        .patch(format!("{}/users/me", app.url))
        .bearer_auth(app.token_for(user))
        .json(&json!({ "metadata": metadata }))
        .send()
        .await
        .unwrap()
}

async fn webhook(app: &TestApp, user: &str) -> reqwest::Response {
    let body = json!({"type": "user.deleted", "object": "event", "timestamp": now_secs() * 1000,
        "data": {"id": user, "object": "user", "deleted": true}});
    deliver_webhook(app, &format!("msg_outage_{user}"), &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_users_are_served_through_a_20_second_outage() {
    let cluster = own_cluster("stale").await;
    let a = TestApp::builder()
        .cluster(&cluster.url("postgres"))
        .with("clerk_webhook_secret", WEBHOOK_SECRET)
        .spawn()
        .await;
    // A second instance on the same database whose cache serves stale entries for 2 s only.
    let short = TestApp::builder()
        .database(a.db.clone())
        .with("user_cache_stale_if_error_secs", "2")
        .spawn()
        .await;

    listening(&a).await;
    listening(&short).await;
    let users: Vec<String> = (0..20).map(|_| a.clerk.new_user()).collect();
    let before = warm(&a, &users).await;
    let shared = users[0].clone();
    short.clerk.add_user(a.clerk.user_json(&shared).unwrap());
    let short_before = warm(&short, std::slice::from_ref(&shared)).await.remove(0);
    // Stored, but never read back: not in the cache.
    let cold = a.clerk.new_user();
    assert_eq!(a.get_me(&a.token_for(&cold)).await.status(), 200);

    let cluster = stop_cluster(cluster).await;
    let stopped = Instant::now();

    // Within its 2 s, the short instance still answers; every write and every user the cache
    // does not hold get a 503 within the pool's bound (2 s), the first included.
    assert_eq!(short.get_me(&short.token_for(&shared)).await.status(), 200);
    for resp in [
        a.get_me(&a.token_for(&cold)).await,
        a.get_me(&a.token_for(&a.clerk.new_user())).await,
        patch(&a, &users[1], json!({"k": 1})).await,
        a.http
            .delete(format!("{}/users/me", a.url))
            .bearer_auth(a.token_for(&users[2]))
            .send()
            .await
            .unwrap(),
        webhook(&a, &users[3]).await,
    ] {
        let started = Instant::now();
        unavailable(resp, "database-unavailable").await;
        assert!(started.elapsed() < Duration::from_millis(2500));
    }

    // 20 seconds of known users, each answer under 50 ms and equal to what it was.
    let (mut answers, mut slowest) = (0, Duration::ZERO);
    let mut short_expired = false;
    while stopped.elapsed() < Duration::from_secs(20) {
        let rounds = join_all(users.iter().zip(&before).map(|(user, expected)| {
            let token = a.token_for(user);
            let a = &a;
            async move {
                let started = Instant::now();
                let resp = a.get_me(&token).await;
                let took = started.elapsed();
                let status = resp.status();
                if status != 200 {
                    panic!(
                        "{user}: {status} {:?} into the outage: {}",
                        stopped.elapsed(),
                        resp.text().await.unwrap()
                    );
                }
                assert_eq!(&resp.json::<User>().await.unwrap(), expected);
                took
            }
        }))
        .await;
        answers += rounds.len();
        slowest = slowest.max(rounds.into_iter().max().unwrap());
        // Past its limit the short instance no longer serves what it holds.
        if stopped.elapsed() > Duration::from_millis(2500) && !short_expired {
            unavailable(
                short.get_me(&short.token_for(&shared)).await,
                "database-unavailable",
            )
            .await;
            short_expired = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(short_expired);
    assert!(slowest < Duration::from_millis(50), "slowest {slowest:?}");
    assert!(answers >= 20 * 50, "{answers} answers");
    let text = metrics(&a).await;
    assert!(text.contains("clerk_users_db_reachable 0"), "{text}");
    let stale: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("clerk_users_user_stale_age_seconds_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stale >= answers as u64,
        "{stale} stale answers of {answers}"
    );
    eprintln!("outage: {answers} known-user answers in 20 s, slowest {slowest:?}");

    let cluster = start_cluster(cluster).await;
    let back = Instant::now();
    while a.get("/readyz").send().await.unwrap().status() != 200 {
        assert!(back.elapsed() < Duration::from_secs(10), "database back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metrics(&a).await.contains("clerk_users_db_reachable 1"));

    // Coherent again: a PATCH through one instance is seen through the other within 100 ms.
    let again = warm(&short, std::slice::from_ref(&shared)).await.remove(0);
    assert_eq!(again.metadata, short_before.metadata);
    assert_eq!(
        patch(&a, &shared, json!({"after": "outage"}))
            .await
            .status(),
        200
    );
    let token = short.token_for(&shared);
    let patched = Instant::now();
    loop {
        let user: User = short.get_me(&token).await.json().await.unwrap();
        if serde_json::to_value(&user.metadata).unwrap() == json!({"after": "outage"}) {
            break;
        }
        assert!(
            patched.elapsed() < Duration::from_millis(100),
            "not seen within 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!(
        "after the restart: seen through the other instance in {:?}",
        patched.elapsed()
    );

    drop(a);
    drop(short);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
