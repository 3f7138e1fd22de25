//! Writes: `PATCH /users/me` (JSON Merge Patch on metadata) and `DELETE /users/me`.

use clerk_users::{api::users::User, testkit::TestApp};
use serde_json::{Value, json};

use crate::helpers::{problem, rejected};

async fn patch(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.http
        .patch(format!("{}/users/me", app.url))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// RFC 7396, Appendix A: every example whose original, patch and result are objects, as
/// `metadata` always is one. (The others are covered by `merge_patch`'s unit test.)
fn rfc7396_object_examples() -> Vec<(Value, Value, Value)> {
    clerk_users::merge_patch::RFC7396_EXAMPLES
        .iter()
        .map(|(o, p, r)| {
            let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap();
            (parse(o), parse(p), parse(r))
        })
        .filter(|(o, p, r)| o.is_object() && p.is_object() && r.is_object())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_follows_every_rfc7396_example() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let token = app.token_for(&user);
    let client = app.db.connect().await;
    assert_eq!(app.get_me(&token).await.status(), 200);
    for (original, patch_doc, result) in rfc7396_object_examples() {
        client
            .execute(
                "update users set metadata = $2 where clerk_id = $1",
                &[&user, &original],
            )
            .await
            .unwrap();
        let resp = patch(&app, &token, &json!({ "metadata": patch_doc })).await;
        assert_eq!(resp.status(), 200);
        let updated: User = resp.json().await.unwrap();
        assert_eq!(
            json!(updated.metadata),
            result,
            "{original} patched with {patch_doc}"
        );
        let read: User = app.get_me(&token).await.json().await.unwrap();
        assert_eq!(json!(read.metadata), result, "stored");
    }
    assert_eq!(app.clerk.user_calls(), 1, "metadata is never sent to Clerk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_on_first_sight_creates_then_patches_and_bumps_updated_at() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let token = app.token_for(&user);
    let resp = patch(
        &app,
        &token,
        &json!({"metadata": {"theme": "dark", "n": 1}}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let first: User = resp.json().await.unwrap();
    assert_eq!(json!(first.metadata), json!({"theme": "dark", "n": 1}));
    let second: User = patch(&app, &token, &json!({"metadata": {"n": null}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json!(second.metadata), json!({"theme": "dark"}));
    assert!(second.updated_at >= first.updated_at);
    assert_eq!(second.created_at, first.created_at);
    assert_eq!(second.id, first.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_compose() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let token = app.token_for(&user);
    assert_eq!(app.get_me(&token).await.status(), 200);
    let bodies: Vec<Value> = (0..20)
        .map(|i| json!({"metadata": {format!("k{i}"): i}}))
        .collect();
    let responses = futures::future::join_all(bodies.iter().map(|b| patch(&app, &token, b))).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    let read: User = app.get_me(&token).await.json().await.unwrap();
    assert_eq!(read.metadata.len(), 20, "no patch lost another's keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_patch_bodies_get_clear_answers_and_change_nothing() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let token = app.token_for(&user);
    assert_eq!(
        patch(&app, &token, &json!({"metadata": {"keep": true}}))
            .await
            .status(),
        200
    );
    let url = format!("{}/users/me", app.url);

    // 400: not JSON.
    let resp = app
        .http
        .patch(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(resp, 400, "invalid-json").await;
    // 415: another media type, or none.
    let resp = app
        .http
        .patch(&url)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(r#"{"metadata":{}}"#)
        .send()
        .await
        .unwrap();
    problem(resp, 415, "unsupported-media-type").await;
    let resp = app
        .http
        .patch(&url)
        .bearer_auth(&token)
        .body(r#"{"metadata":{}}"#)
        .send()
        .await
        .unwrap();
    problem(resp, 415, "unsupported-media-type").await;
    // 422: JSON of the wrong shape.
    for body in [
        json!([1]),
        json!({}),
        json!({"metadata": 5}),
        json!({"metadata": null}),
        json!({"metadata": {}, "email": "x@example.org"}),
    ] {
        problem(patch(&app, &token, &body).await, 422, "invalid-body").await;
    }
    // 422: U+0000 in a key or a string, at any depth (PostgreSQL's jsonb cannot hold it).
    for body in [
        json!({"metadata": {"nul": "\u{0}"}}),
        json!({"metadata": {"a\u{0}b": 1}}),
        json!({"metadata": {"deep": {"er": [1, {"x": "y\u{0}"}]}}}),
        json!({"metadata": {"deep": {"k\u{0}": null}}}),
    ] {
        let (_, p) = problem(patch(&app, &token, &body).await, 422, "invalid-body").await;
        assert!(p.detail.contains("U+0000"), "{}", p.detail);
    }
    // The escape as the client sends it, byte for byte.
    let resp = app
        .http
        .patch(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"metadata":{"nul":"a\u0000b"}}"#)
        .send()
        .await
        .unwrap();
    problem(resp, 422, "invalid-body").await;
    // 413: over 16 KiB of body.
    let big = json!({"metadata": {"blob": "x".repeat(17 * 1024)}});
    problem(patch(&app, &token, &big).await, 413, "payload-too-large").await;
    // 422: under 16 KiB each, but the merged metadata would exceed it.
    let half = "y".repeat(9 * 1024);
    assert_eq!(
        patch(&app, &token, &json!({"metadata": {"a": half}}))
            .await
            .status(),
        200
    );
    problem(
        patch(&app, &token, &json!({"metadata": {"b": half}})).await,
        422,
        "metadata-too-large",
    )
    .await;
    // 401 before anything else.
    let resp = app
        .http
        .patch(&url)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    rejected(resp, "token-missing").await;

    let read: User = app.get_me(&token).await.json().await.unwrap();
    assert_eq!(
        read.metadata.get("keep"),
        Some(&json!(true)),
        "nothing lost"
    );
    assert!(!read.metadata.contains_key("b"));
    assert!(!read.metadata.contains_key("nul") && !read.metadata.contains_key("deep"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_get_creates_the_record_again_from_clerk() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let token = app.token_for(&user);
    let before: User = patch(&app, &token, &json!({"metadata": {"x": 1}}))
        .await
        .json()
        .await
        .unwrap();
    let resp = app
        .http
        .delete(format!("{}/users/me", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(app.user_rows(Some(&user)).await, 0);
    // Deleting again is fine.
    let resp = app
        .http
        .delete(format!("{}/users/me", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    let after: User = app.get_me(&token).await.json().await.unwrap();
    assert_ne!(after.id, before.id, "a new record");
    assert!(after.metadata.is_empty());
    assert_eq!(
        app.clerk.user_calls_for(&user),
        2,
        "fetched from Clerk again"
    );
    let resp = app
        .http
        .delete(format!("{}/users/me", app.url))
        .send()
        .await
        .unwrap();
    rejected(resp, "token-missing").await;
}
