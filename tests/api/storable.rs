//! Every string the service stores or looks up, as a property: the token's claims (`sub` reaches
//! SQL and the Backend API's path), metadata keys and values, and every Clerk-owned field through
//! first sight and through webhooks. None gives a 5xx, and what was stored reads back: Clerk's text
//! without U+0000 (PostgreSQL's `text` cannot hold it), metadata as sent or refused whole with 422.
//!
//! Strings mix U+0000, ASCII, quotes and backslashes, and any Unicode scalar. Few cases per
//! property (each is a few real HTTP requests), one service for all of them.

use std::sync::Arc;

use clerk_users::{
    api::users::User,
    testkit::{
        TestApp,
        clerk::{clerk_user_json, now_secs, random_id},
    },
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};
use serde_json::{Value, json};

use crate::helpers::{WEBHOOK_SECRET, deliver_webhook as deliver};

const CASES: u32 = 24;

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Text as hostile as JSON allows: U+0000 often, the JSON escapes, line separators, a BOM,
/// astral characters, any scalar value.
fn text() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        3 => Just('\0'),
        4 => proptest::char::range(' ', '~'),
        1 => prop::sample::select(vec!['"', '\\', '\n', '\u{7f}', '\u{2028}', '\u{feff}', '\u{1f600}']),
        3 => any::<char>(),
    ];
    prop::collection::vec(ch, 0..48).prop_map(|c| c.into_iter().collect())
}

fn without_nul(s: &str) -> String {
    s.replace('\0', "")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn app() -> Arc<TestApp> {
    Arc::new(
        TestApp::builder()
            .with("clerk_webhook_secret", WEBHOOK_SECRET)
            .spawn()
            .await,
    )
}

fn assert_not_5xx(resp: &reqwest::Response, what: &str) {
    assert!(
        !resp.status().is_server_error(),
        "{what}: answered {}",
        resp.status()
    );
}

async fn me(app: &TestApp, id: &str) -> User {
    let resp = app.get_me(&app.token_for(id)).await;
    assert_eq!(resp.status(), 200, "GET /users/me of {id}");
    resp.json().await.unwrap()
}

#[test]
fn token_claims_that_reach_sql_never_give_a_5xx() {
    let rt = rt();
    let app = rt.block_on(app());
    let known = app.clerk.new_user();
    let sub = prop_oneof![
        2 => text(),
        1 => text().prop_map(|t| format!("user_{t}")),
        1 => "user_[A-Za-z0-9_-]{1,123}",
        1 => "user_[A-Za-z0-9_-]{120,130}",
    ];
    runner()
        .run(&(sub, text(), text()), |(sub, sid, azp)| {
            rt.block_on(async {
                let mut claims = app.clerk.claims_for(&known);
                claims["sub"] = json!(sub);
                claims["sid"] = json!(format!("sess_{sid}"));
                claims["azp"] = json!(azp);
                claims["o"] = json!({"id": format!("org_{sid}"), "slg": azp, "rol": sub});
                let resp = app.get_me(&app.clerk.sign(&claims)).await;
                assert_not_5xx(&resp, &format!("sub {sub:?}"));
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap();
                if clerk_users::clerk::is_user_id(&sub) {
                    // Not a user at the stand-in: looked up (SQL, then Clerk) and not found.
                    assert_eq!(
                        (status, body["code"].as_str()),
                        (401, Some("user-not-found"))
                    );
                } else {
                    assert_eq!(
                        (status, body["code"].as_str()),
                        (401, Some("token-invalid"))
                    );
                }
            });
            Ok(())
        })
        .unwrap();
}

/// A metadata object of hostile keys and values, nested once.
fn metadata() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    let leaf = prop_oneof![
        4 => text().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => prop::collection::vec(text().prop_map(Value::from), 0..3).prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(2, 12, 4, |inner| {
        prop::collection::btree_map(text(), inner, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    });
    prop::collection::btree_map(text(), value, 0..5).prop_map(|m| m.into_iter().collect())
}

fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

#[test]
fn metadata_reads_back_as_sent_or_is_refused_whole() {
    let rt = rt();
    let app = rt.block_on(app());
    runner()
        .run(&metadata(), |patch| {
            rt.block_on(async {
                // A fresh user each time: the merge of the patch into `{}` is the patch itself.
                let id = app.clerk.new_user();
                let token = app.token_for(&id);
                let patch = Value::Object(patch);
                let resp = app
                    .http
                    .patch(format!("{}/users/me", app.url))
                    .bearer_auth(&token)
                    .json(&json!({ "metadata": patch }))
                    .send()
                    .await
                    .unwrap();
                assert_not_5xx(&resp, &format!("PATCH {patch}"));
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap();
                let read = me(&app, &id).await;
                if holds_nul(&patch) {
                    assert_eq!((status, body["code"].as_str()), (422, Some("invalid-body")));
                    assert!(read.metadata.is_empty(), "nothing changed");
                } else {
                    assert_eq!(status, 200, "{body}");
                    assert_eq!(body["metadata"], patch);
                    assert_eq!(Value::Object(read.metadata.into_iter().collect()), patch);
                }
            });
            Ok(())
        })
        .unwrap();
}

/// Clerk's User object with hostile text in every field the service keeps, and any timestamps.
#[derive(Debug, Clone)]
struct ClerkText {
    first: Option<String>,
    last: Option<String>,
    username: Option<String>,
    image: Option<String>,
    email: Option<String>,
    email_id: String,
    created_at: i64,
}

fn clerk_text() -> impl Strategy<Value = ClerkText> {
    (
        (
            prop::option::of(text()),
            prop::option::of(text()),
            prop::option::of(text()),
            prop::option::of(text()),
        ),
        (prop::option::of(text()), text(), any::<i64>()),
    )
        .prop_map(
            |((first, last, username, image), (email, email_id, created_at))| ClerkText {
                first,
                last,
                username,
                image,
                email,
                email_id,
                created_at,
            },
        )
}

impl ClerkText {
    fn user_json(&self, id: &str, updated_at: i64) -> Value {
        let mut u = clerk_user_json(id, self.first.as_deref(), self.last.as_deref(), None);
        u["username"] = json!(self.username);
        u["image_url"] = json!(self.image);
        u["created_at"] = json!(self.created_at);
        u["updated_at"] = json!(updated_at);
        if let Some(email) = &self.email {
            let id = format!("idn_{}", self.email_id);
            u["email_addresses"]
                .as_array_mut()
                .unwrap()
                .push(json!({"id": id, "object": "email_address", "email_address": email}));
            u["primary_email_address_id"] = json!(id);
        }
        u
    }

    fn assert_read_back(&self, user: &User) {
        let clean = |s: &Option<String>| s.as_deref().map(without_nul);
        assert_eq!(*user.first_name, clean(&self.first), "first_name");
        assert_eq!(*user.last_name, clean(&self.last), "last_name");
        assert_eq!(*user.username, clean(&self.username), "username");
        assert_eq!(*user.image_url, clean(&self.image), "image_url");
        assert_eq!(*user.email, clean(&self.email), "email");
    }
}

#[test]
fn clerk_text_is_stored_without_nul_at_first_sight() {
    let rt = rt();
    let app = rt.block_on(app());
    runner()
        .run(&clerk_text(), |fields| {
            rt.block_on(async {
                let id = format!("user_{}", random_id(27));
                let now_ms = (now_secs() * 1000) as i64;
                app.clerk.add_user(fields.user_json(&id, now_ms));
                fields.assert_read_back(&me(&app, &id).await);
            });
            Ok(())
        })
        .unwrap();
}

#[test]
fn clerk_text_is_stored_without_nul_from_webhooks() {
    let rt = rt();
    let app = rt.block_on(app());
    let updated_at = prop_oneof![
        3 => Just(None),
        1 => any::<i64>().prop_map(Some),
    ];
    let svix_id = prop_oneof![
        4 => "msg_[A-Za-z0-9]{27}",
        1 => "[!-~]{1,300}",
    ];
    let strategy = (clerk_text(), updated_at, svix_id, text(), text());
    runner()
        .run(
            &strategy,
            |(fields, updated_at, svix_id, kind, deleted_id)| {
                rt.block_on(async {
                    let id = format!("user_{}", random_id(27));
                    let now_ms = (now_secs() * 1000) as i64;
                    let updated_at = updated_at.unwrap_or(now_ms);
                    let event = json!({
                        "type": "user.updated", "object": "event", "timestamp": now_ms,
                        "data": fields.user_json(&id, updated_at),
                    });
                    let resp = deliver(&app, &svix_id, &event).await;
                    assert_not_5xx(&resp, "user.updated");
                    let storable = clerk_users::clerk::time_of_millis(updated_at).is_some();
                    if svix_id.len() > clerk_users::webhooks::MAX_SVIX_ID_BYTES || !storable {
                        assert_eq!(resp.status(), 400);
                        assert_eq!(app.user_rows(Some(&id)).await, 0);
                    } else {
                        assert_eq!(resp.status(), 204);
                        // The stored row answers; Clerk (which has no such user) is not asked.
                        fields.assert_read_back(&me(&app, &id).await);
                    }

                    // Any event type is stored with its Svix id; any id in a deletion is looked up.
                    let other =
                        json!({"type": kind, "object": "event", "timestamp": now_ms, "data": {}});
                    let resp = deliver(&app, &format!("msg_{}", random_id(27)), &other).await;
                    assert_not_5xx(&resp, &format!("type {kind:?}"));
                    let deleted = json!({
                        "type": "user.deleted", "object": "event", "timestamp": now_ms,
                        "data": {"id": deleted_id, "object": "user", "deleted": true},
                    });
                    let resp = deliver(&app, &format!("msg_{}", random_id(27)), &deleted).await;
                    assert_not_5xx(&resp, &format!("deleted id {deleted_id:?}"));
                });
                Ok(())
            },
        )
        .unwrap();
}
