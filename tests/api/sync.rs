//! `clerk-users sync`: the real binary against a real database and the Clerk stand-in's list.
//! Also the pace of first sights under Clerk's rate limit.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use clerk_users::{
    api::users::User,
    sync::Summary,
    testkit::{ClerkStandIn, Fault, TestApp, clerk::now_secs},
};
use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{WEBHOOK_SECRET, deliver_webhook, metrics, problem};

/// What one run of the binary gave.
struct Run {
    ok: bool,
    code: Option<i32>,
    summary: Summary,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Run `clerk-users sync ARGS` against the app's database and stand-in, with only the settings
/// it needs (no `CLERK_ISSUER`), from an empty folder (no `.env`, no `config/`).
async fn sync(app: &TestApp, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clerk-users"));
    cmd.arg("sync")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &app.db.url)
        .env("CLERK_SECRET_KEY", &app.secret_key)
        .env("CLERK_API_URL", app.clerk.url())
        .env("CLERK_API_BACKOFF_MS", "20")
        .env("LOG_FORMAT", "json")
        .current_dir(std::env::temp_dir());
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stdout.lines().last().unwrap_or_default();
    let summary: Summary = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last line is not the summary ({e}): {stdout}\n{stderr}"));
    let keys: Value = serde_json::from_str(last).unwrap();
    let mut names: Vec<&str> = keys
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "created",
            "deleted",
            "listed",
            "seconds",
            "unchanged",
            "updated"
        ]
    );
    Run {
        ok: out.status.success(),
        code: out.status.code(),
        summary,
        stdout,
        stderr,
        took: started.elapsed(),
    }
}

fn counts(listed: u64, created: u64, updated: u64, unchanged: u64, deleted: u64) -> Summary {
    Summary {
        listed,
        created,
        updated,
        unchanged,
        deleted,
        seconds: 0,
    }
}

fn without_time(s: Summary) -> Summary {
    Summary { seconds: 0, ..s }
}

/// (first_name, email, metadata, id, updated_at) of a stored user.
async fn row(
    app: &TestApp,
    clerk_id: &str,
) -> Option<(Option<String>, Option<String>, Value, String, String)> {
    app.db
        .connect()
        .await
        .query_opt(
            "select first_name, email, metadata, id::text, updated_at::text from users where clerk_id = $1",
            &[&clerk_id],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_1234_users_in_three_pages_and_a_second_run_changes_nothing() {
    let app = TestApp::spawn().await;
    let ids = app.clerk.generate_users(1234);

    let first = sync(&app, &[]).await;
    assert!(first.ok, "{}\n{}", first.stdout, first.stderr);
    assert_eq!(without_time(first.summary), counts(1234, 1234, 0, 0, 0));
    assert_eq!(app.clerk.list_calls(), 3, "500 + 500 + 234");
    assert_eq!(app.clerk.count_calls(), 1);
    assert_eq!(app.user_rows(None).await, 1234);
    // Not a terminal: a log line per page.
    assert_eq!(first.stdout.matches("sync: page stored").count(), 3);
    let clerk_json = app.clerk.user_json(&ids[700]).unwrap();
    let (first_name, email, metadata, _, updated_at) = row(&app, &ids[700]).await.unwrap();
    assert_eq!(first_name.as_deref(), Some("Test"));
    assert_eq!(
        email.as_deref(),
        clerk_json["email_addresses"][1]["email_address"].as_str(),
        "the primary address, chosen by id"
    );
    assert_eq!(metadata, json!({}));

    let second = sync(&app, &[]).await;
    assert!(second.ok, "{}", second.stderr);
    assert_eq!(without_time(second.summary), counts(1234, 0, 0, 1234, 0));
    assert_eq!(
        row(&app, &ids[700]).await.unwrap().4,
        updated_at,
        "not even touched"
    );
}

async fn deliver(app: &TestApp, id: &str, body: &Value) {
    assert_eq!(deliver_webhook(app, id, body).await.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_users_keep_newer_webhook_data_and_their_metadata() {
    let app = TestApp::builder()
        .with("clerk_webhook_secret", WEBHOOK_SECRET)
        .spawn()
        .await;
    let ids = app.clerk.generate_users(10);
    // One user seen before, with metadata of the application's own.
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    assert_eq!(app.get_me(&app.token_for(a)).await.status(), 200);
    let patched = app
        .http
        .patch(format!("{}/users/me", app.url))
        .bearer_auth(app.token_for(a))
        .json(&json!({"metadata": {"plan": "pro"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let (_, _, _, a_id, _) = row(&app, a).await.unwrap();
    // Another whose webhook brought newer data than the list will show.
    let mut newer = app.clerk.user_json(b).unwrap();
    newer["first_name"] = json!("Newer");
    newer["updated_at"] = json!(newer["updated_at"].as_i64().unwrap() + 60_000);
    deliver(
        &app,
        "msg_sync_newer",
        &json!({"type": "user.updated", "object": "event", "timestamp": now_secs() * 1000, "data": newer}),
    )
    .await;
    // A third deleted by a webhook after the version the list still shows.
    deliver(
        &app,
        "msg_sync_deleted",
        &json!({"type": "user.deleted", "object": "event", "timestamp": now_secs() * 1000 + 60_000,
                "data": {"id": c, "object": "user", "deleted": true}}),
    )
    .await;

    let run = sync(&app, &[]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(without_time(run.summary), counts(10, 7, 0, 3, 0));
    let (_, _, metadata, id, _) = row(&app, a).await.unwrap();
    assert_eq!(metadata, json!({"plan": "pro"}), "metadata untouched");
    assert_eq!(id, a_id, "id untouched");
    assert_eq!(row(&app, b).await.unwrap().0.as_deref(), Some("Newer"));
    assert!(row(&app, c).await.is_none(), "the remembered deletion wins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_user_changed_at_clerk_is_served_changed_after_the_sync() {
    let app = TestApp::spawn().await;
    let id = app.clerk.new_user();
    for _ in 0..2 {
        let user: User = app.get_me(&app.token_for(&id)).await.json().await.unwrap();
        assert_eq!(user.first_name.as_deref(), Some("Ada"));
    }
    app.clerk
        .update_user(&id, |u| u["first_name"] = json!("Augusta"));

    let run = sync(&app, &[]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(without_time(run.summary), counts(1, 0, 1, 0, 0));
    // The notification reaches the running instance's cache within milliseconds.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let user: User = app.get_me(&app.token_for(&id)).await.json().await.unwrap();
        if user.first_name.as_deref() == Some("Augusta") {
            break;
        }
        assert!(Instant::now() < deadline, "still served from the cache");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.clerk.user_calls(),
        1,
        "the user was fetched only on first sight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing() {
    let app = TestApp::spawn().await;
    let ids = app.clerk.generate_users(20);
    assert_eq!(app.get_me(&app.token_for(&ids[3])).await.status(), 200);
    app.clerk
        .update_user(&ids[3], |u| u["last_name"] = json!("Changed"));
    let before = row(&app, &ids[3]).await.unwrap();

    let run = sync(&app, &["--dry-run", "--prune"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(without_time(run.summary), counts(20, 19, 1, 0, 0));
    assert_eq!(app.user_rows(None).await, 1);
    assert_eq!(row(&app, &ids[3]).await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_exactly_the_users_clerk_no_longer_has() {
    let app = TestApp::builder()
        .with("clerk_webhook_secret", WEBHOOK_SECRET)
        .spawn()
        .await;
    let ids = app.clerk.generate_users(30);
    assert!(sync(&app, &[]).await.ok);
    for gone in &ids[5..8] {
        app.clerk.remove_user(gone);
    }

    let dry = sync(&app, &["--prune", "--dry-run"]).await;
    assert_eq!(without_time(dry.summary), counts(27, 0, 0, 27, 3));
    assert_eq!(app.user_rows(None).await, 30, "a dry run deletes nothing");

    let run = sync(&app, &["--prune"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(without_time(run.summary), counts(27, 0, 0, 27, 3));
    assert_eq!(app.user_rows(None).await, 27);
    for gone in &ids[5..8] {
        assert!(row(&app, gone).await.is_none());
    }
    // Remembered as user.deleted is: an older user.updated arriving late does not bring one back.
    let client = app.db.connect().await;
    let remembered: i64 = client
        .query_one("select count(*) from clerk_deletions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(remembered, 3);
    let late = json!({"id": ids[5], "object": "user", "first_name": "Late", "last_name": null,
                          "username": null, "image_url": null, "primary_email_address_id": null,
                          "email_addresses": [], "created_at": 1, "updated_at": 2});
    deliver(
        &app,
        "msg_sync_late",
        &json!({"type": "user.updated", "object": "event", "timestamp": now_secs() * 1000, "data": late}),
    )
    .await;
    assert!(row(&app, &ids[5]).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clerk_failing_mid_walk_stops_with_an_error_and_keeps_what_was_stored() {
    let app = TestApp::spawn().await;
    app.clerk.generate_users(1234);
    // A local user Clerk does not list: --prune must not run after an incomplete walk.
    let local = app.clerk.new_user();
    assert_eq!(app.get_me(&app.token_for(&local)).await.status(), 200);
    app.clerk.remove_user(&local);
    app.clerk.queue_list_faults([Fault::Pass]);
    app.clerk.set_list_fault(Some(Fault::Status {
        status: 500,
        retry_after: None,
    }));

    let run = sync(&app, &["--prune"]).await;
    assert!(!run.ok);
    assert_eq!(run.code, Some(1));
    assert_eq!(without_time(run.summary), counts(500, 500, 0, 0, 0));
    let reason: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(reason.len(), 1, "one line: {}", run.stderr);
    assert!(
        reason[0].contains("page 2") && reason[0].contains("HTTP 500"),
        "{}",
        reason[0]
    );
    assert_eq!(
        app.clerk.list_calls(),
        1 + 3,
        "the failing page was tried three times"
    );
    assert_eq!(
        app.user_rows(None).await,
        501,
        "the first page stays, nothing pruned"
    );
    assert_eq!(app.user_rows(Some(&local)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_in_the_middle_waits_its_retry_after() {
    let app = TestApp::spawn().await;
    app.clerk.generate_users(1234);
    app.clerk.queue_list_faults([
        Fault::Pass,
        Fault::Status {
            status: 429,
            retry_after: Some(1),
        },
    ]);
    let run = sync(&app, &[]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(without_time(run.summary), counts(1234, 1234, 0, 0, 0));
    assert_eq!(
        app.clerk.list_calls(),
        4,
        "page 2 asked again after the 429"
    );
    assert!(run.took >= Duration::from_secs(1), "{:?}", run.took);
    assert_eq!(app.user_rows(None).await, 1234);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_and_missing_settings_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_clerk-users"))
        .args(["sync", "--everything"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_clerk-users"))
        .arg("sync")
        .env_clear()
        .env("DATABASE_URL", "postgres://a@127.0.0.1:1/x")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "clerk-users: CLERK_SECRET_KEY: required, not set"
    );
}

/// A launch on a development instance: 150 users signing in at once, Clerk allowing 100
/// requests per 10 s. The pace lets 100 through at once and answers the rest within their
/// budget or with a 503 and `Retry-After` right away: Clerk never answers 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pace_150_concurrent_first_sights_under_a_limit_of_100_draw_no_429() {
    let secret = format!("sk_test_{}", clerk_users::testkit::clerk::random_id(40));
    let clerk = ClerkStandIn::start(&secret).await;
    clerk.set_rate_limit(Some((100, Duration::from_secs(10))));
    let ids = clerk.generate_users(150);
    // A request may outlive the 10-second budget here, so a turn near its end is seen through.
    let app = TestApp::builder()
        .clerk(clerk)
        .with("request_timeout_ms", "15000")
        .spawn()
        .await;
    assert_eq!(app.settings.clerk.api_rate_limit, 100, "an sk_test_ key");
    let tokens: Vec<String> = ids.iter().map(|id| app.token_for(id)).collect();

    let started = Instant::now();
    let answers = join_all(tokens.iter().map(|t| async {
        let resp = app.get_me(t).await;
        (resp, started.elapsed())
    }))
    .await;
    let (mut at_once, mut later, mut refused) = (0, 0, 0);
    for (resp, took) in answers {
        match resp.status().as_u16() {
            200 if took < Duration::from_secs(5) => at_once += 1,
            200 => {
                assert!(
                    took < Duration::from_secs(12),
                    "within the budget: {took:?}"
                );
                later += 1;
            }
            503 => {
                // At once, when the turn would come too late (nearly always); a wait estimated
                // to fit that ran into the budget's end is still bounded by it.
                assert!(
                    took < Duration::from_secs(11),
                    "within the budget: {took:?}"
                );
                let (headers, _) = problem(resp, 503, "clerk-unavailable").await;
                let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=11).contains(&retry), "Retry-After {retry}");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(app.clerk.rate_limited_calls(), 0, "no 429 from Clerk");
    assert!(
        at_once >= 100,
        "{at_once} at once, {later} later, {refused} refused"
    );
    assert_eq!(at_once + later + refused, 150);
    assert_eq!(app.clerk.user_calls(), at_once + later);
    let text = metrics(&app).await;
    assert!(
        text.contains("clerk_users_clerk_api_pace_waiting 0"),
        "{text}"
    );
    assert!(text.contains("clerk_users_clerk_api_pace_wait_seconds_total "));
    assert!(text.contains("clerk_users_clerk_api_rate_limit 100"));
    if refused > 0 {
        assert!(text.contains(&format!(
            "clerk_users_clerk_api_calls_total{{outcome=\"paced_out\"}} {refused}"
        )));
    }
    assert!(
        text.contains("clerk_users_clerk_breaker_state 0"),
        "waiting for a turn is not Clerk failing"
    );
}
