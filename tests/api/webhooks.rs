//! Webhooks: Svix-signed Clerk events.

use clerk_users::{
    api::users::User,
    testkit::{
        TestApp,
        clerk::{clerk_user_json, now_secs},
    },
};
use serde_json::{Value, json};

use crate::helpers::{WEBHOOK_SECRET, deliver_webhook_at as deliver, problem};

async fn app() -> TestApp {
    TestApp::builder()
        .with("clerk_webhook_secret", WEBHOOK_SECRET)
        .spawn()
        .await
}

fn event(kind: &str, data: Value) -> Value {
    json!({"type": kind, "object": "event", "timestamp": now_secs() * 1000, "data": data})
}

async fn stored(app: &TestApp, clerk_id: &str) -> Option<(Option<String>, Value)> {
    let client = app.db.connect().await;
    client
        .query_opt(
            "select first_name, metadata from users where clerk_id = $1",
            &[&clerk_id],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

fn user_at(id: &str, first: &str, updated_at_ms: i64) -> Value {
    let mut u = clerk_user_json(id, Some(first), Some("Lovelace"), Some("ada@example.org"));
    u["updated_at"] = json!(updated_at_ms);
    u
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_updated_deleted() {
    let app = app().await;
    let id = "user_2webhookCreatedUpdatedDel1";
    let t = (now_secs() * 1000) as i64;
    let resp = deliver(
        &app,
        "msg_1",
        now_secs(),
        &event("user.created", user_at(id, "Ada", t)),
    )
    .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(stored(&app, id).await.unwrap().0.as_deref(), Some("Ada"));

    let resp = deliver(
        &app,
        "msg_2",
        now_secs(),
        &event("user.updated", user_at(id, "Augusta", t + 1000)),
    )
    .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        stored(&app, id).await.unwrap().0.as_deref(),
        Some("Augusta")
    );

    // The row the webhook made serves /users/me without asking Clerk.
    let me: User = app.get_me(&app.token_for(id)).await.json().await.unwrap();
    assert_eq!(me.first_name.as_deref(), Some("Augusta"));
    assert_eq!(app.clerk.user_calls(), 0);

    let deleted = event(
        "user.deleted",
        json!({"id": id, "object": "user", "deleted": true}),
    );
    assert_eq!(
        deliver(&app, "msg_3", now_secs(), &deleted).await.status(),
        204
    );
    assert!(stored(&app, id).await.is_none());

    // Other event types are acknowledged and ignored.
    let other = event(
        "session.created",
        json!({"id": "sess_1", "object": "session"}),
    );
    assert_eq!(
        deliver(&app, "msg_4", now_secs(), &other).await.status(),
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_update_after_a_newer_one_changes_nothing() {
    let app = app().await;
    let id = "user_2webhookOlderAfterNewer001";
    let t = (now_secs() * 1000) as i64;
    assert_eq!(
        deliver(
            &app,
            "msg_new",
            now_secs(),
            &event("user.updated", user_at(id, "Newer", t))
        )
        .await
        .status(),
        204
    );
    assert_eq!(
        deliver(
            &app,
            "msg_old",
            now_secs(),
            &event("user.updated", user_at(id, "Older", t - 5000))
        )
        .await
        .status(),
        204
    );
    assert_eq!(stored(&app, id).await.unwrap().0.as_deref(), Some("Newer"));

    // An update older than a deletion does not bring the user back.
    let deleted = event(
        "user.deleted",
        json!({"id": id, "object": "user", "deleted": true}),
    );
    assert_eq!(
        deliver(&app, "msg_del", now_secs(), &deleted)
            .await
            .status(),
        204
    );
    assert_eq!(
        deliver(
            &app,
            "msg_late",
            now_secs(),
            &event("user.updated", user_at(id, "Late", t - 1))
        )
        .await
        .status(),
        204
    );
    assert!(stored(&app, id).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_svix_id_changes_nothing() {
    let app = app().await;
    let id = "user_2webhookReplayedSvixId0001";
    let t = (now_secs() * 1000) as i64;
    assert_eq!(
        deliver(
            &app,
            "msg_same",
            now_secs(),
            &event("user.created", user_at(id, "Ada", t))
        )
        .await
        .status(),
        204
    );
    let client = app.db.connect().await;
    client
        .execute("delete from users where clerk_id = $1", &[&id])
        .await
        .unwrap();
    // The same delivery again: acknowledged, not applied.
    assert_eq!(
        deliver(
            &app,
            "msg_same",
            now_secs(),
            &event("user.created", user_at(id, "Ada", t))
        )
        .await
        .status(),
        204
    );
    assert!(stored(&app, id).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_stale_timestamps_and_bad_bodies_are_400() {
    let app = app().await;
    let id = "user_2webhookBadDeliveries0001";
    let body = event(
        "user.created",
        user_at(id, "Ada", (now_secs() * 1000) as i64),
    );
    problem(
        deliver(&app, "msg_a", now_secs() - 301, &body).await,
        400,
        "webhook-timestamp-stale",
    )
    .await;
    problem(
        deliver(&app, "msg_b", now_secs() + 301, &body).await,
        400,
        "webhook-timestamp-stale",
    )
    .await;

    let resp = app
        .http
        .post(format!("{}/webhooks/clerk", app.url))
        .header("content-type", "application/json")
        .header("svix-id", "msg_c")
        .header("svix-timestamp", now_secs().to_string())
        .header(
            "svix-signature",
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    problem(resp, 400, "webhook-signature-invalid").await;

    let resp = app
        .http
        .post(format!("{}/webhooks/clerk", app.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    problem(resp, 400, "webhook-headers-missing").await;

    let resp = deliver(
        &app,
        "msg_d",
        now_secs(),
        &json!({"type": "user.created", "data": {"id": 5}}),
    )
    .await;
    problem(resp, 400, "webhook-body-invalid").await;
    assert!(stored(&app, id).await.is_none(), "nothing applied");
    // A rejected id can be delivered again, correctly signed, and is applied.
    assert_eq!(
        deliver(&app, "msg_a", now_secs(), &body).await.status(),
        204
    );
    assert!(stored(&app, id).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_the_endpoint_is_404() {
    let app = TestApp::spawn().await;
    let resp = deliver(&app, "msg_1", now_secs(), &event("user.created", json!({}))).await;
    problem(resp, 404, "not-found").await;
}
