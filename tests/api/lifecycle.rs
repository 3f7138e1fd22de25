//! Around every request: request ids, logs, problem answers for anything unexpected,
//! limits, the documents, and graceful shutdown.

use std::time::Duration;

use clerk_users::testkit::{Fault, TestApp};
use serde_json::Value;

use crate::helpers::problem;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_generated_and_carried_by_every_log_line() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let resp = app
        .get("/users/me")
        .bearer_auth(app.token_for(&user))
        .header("x-request-id", "spa-req.42_a-b")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("x-request-id").unwrap(),
        "spa-req.42_a-b"
    );

    for bad in ["has space", "quote\"d", &"x".repeat(65)] {
        let resp = app
            .get("/healthz")
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let id = resp
            .headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_ne!(id, bad);
        assert!(clerk_users::api::middleware::valid_request_id(&id));
    }
    let resp = app.get("/nope").send().await.unwrap();
    assert!(
        resp.headers().contains_key("x-request-id"),
        "errors carry it too"
    );

    // Every line the request wrote carries its id and the request fields.
    let lines: Vec<Value> = app
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ours: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["request_id"] == "spa-req.42_a-b")
        .collect();
    let messages: Vec<&str> = ours.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(
        messages.contains(&"first sight: user stored"),
        "{messages:?}"
    );
    assert!(messages.contains(&"request finished"), "{messages:?}");
    let finished = ours
        .iter()
        .find(|l| l["message"] == "request finished")
        .unwrap();
    assert_eq!(finished["span"]["method"], "GET");
    assert_eq!(finished["span"]["path"], "/users/me");
    assert_eq!(finished["status"], 200);
    assert_eq!(finished["span"]["clerk_id"], user.as_str());
    assert!(finished["latency_ms"].is_number());
    for line in &lines {
        for key in ["timestamp", "level", "target"] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
    }
    // No line about a request lacks its id.
    for line in &lines {
        if line["message"] == "request finished" {
            assert!(line["span"]["request_id"].is_string(), "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_never_holds_tokens_or_secrets() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let token = app.token_for(&user);
    // Tokens in every place a careless log would print them: good, bad, in cookies, in headers.
    assert_eq!(app.get_me(&token).await.status(), 200);
    let _ = app.get_me(&format!("{token}x")).await;
    let _ = app
        .get("/users/me")
        .header("cookie", format!("__session={token}"))
        .send()
        .await;
    let _ = app
        .get("/users/me?token=abc")
        .header("authorization", format!("Basic {token}"))
        .send()
        .await;
    app.clerk.set_user_fault(Some(Fault::Status {
        status: 401,
        retry_after: None,
    }));
    let _ = app.get_me(&app.token_for(&app.clerk.new_user())).await;
    let settings = format!("{:?}", app.settings);
    assert!(!settings.contains(&app.secret_key));
    assert!(!settings.contains(clerk_users::testkit::postgres::TESTKIT_DB_PASSWORD));
    app.assert_log_has_no_secrets();
    assert!(
        app.log().contains("request finished"),
        "the log was captured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_wrong_methods_and_big_bodies_get_problem_answers() {
    let app = TestApp::spawn().await;
    problem(
        app.get("/no/such/route").send().await.unwrap(),
        404,
        "not-found",
    )
    .await;
    let resp = app
        .http
        .put(format!("{}/users/me", app.url))
        .send()
        .await
        .unwrap();
    problem(resp, 405, "method-not-allowed").await;
    let big = vec![b'x'; 65 * 1024];
    let resp = app
        .http
        .post(format!("{}/users/me", app.url))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    problem(resp, 413, "payload-too-large").await;
    // Chunked, with no declared length: still cut at the limit.
    let stream = futures::stream::iter((0..70).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024])));
    let resp = app
        .http
        .post(format!("{}/users/me", app.url))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    problem(resp, 413, "payload-too-large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_openapi_and_docs_are_served() {
    let app = TestApp::spawn().await;
    let health = app.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    let spec: Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/users/me", "/healthz", "/readyz", "/db-test/ping"] {
        assert!(spec["paths"].get(path).is_some(), "{path} documented");
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["ClerkSession"]["scheme"],
        "bearer"
    );
    let docs = app.get("/docs").send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap().contains("swagger"),
        "Swagger UI page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_end_at_the_request_time_limit() {
    let app = TestApp::builder()
        .with("request_timeout_ms", "500")
        .with("clerk_http_timeout_ms", "5000")
        .spawn()
        .await;
    let user = app.clerk.new_user();
    app.clerk
        .queue_user_faults([Fault::Delay(Duration::from_secs(3))]);
    let started = std::time::Instant::now();
    let (headers, _) = problem(
        app.get_me(&app.token_for(&user)).await,
        503,
        "request-timeout",
    )
    .await;
    assert!(headers.contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let mut app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    app.clerk
        .queue_user_faults([Fault::Delay(Duration::from_millis(800))]);
    let token = app.token_for(&user);
    let url = format!("{}/users/me", app.url);
    let http = app.http.clone();
    let in_flight = tokio::spawn(async move { http.get(url).bearer_auth(token).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.stop().await;
    let resp = in_flight.await.unwrap().expect("answered");
    assert_eq!(resp.status(), 200, "the in-flight request finished");
    assert!(
        app.get("/healthz").send().await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_only_configured_origins() {
    let app = TestApp::builder()
        .with(
            "cors_allowed_origins",
            "http://127.0.0.1:5173, https://app.example.com",
        )
        .spawn()
        .await;
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/users/me", app.url))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    let methods = h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_ascii_uppercase();
    for m in ["GET", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );

    let user = app.clerk.new_user();
    let resp = app
        .get("/users/me")
        .bearer_auth(app.token_for(&user))
        .header("origin", "http://127.0.0.1:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://127.0.0.1:5173"
    );

    let other = app
        .get("/healthz")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // Without the setting, no CORS headers at all.
    let plain = TestApp::spawn().await;
    let resp = plain
        .get("/healthz")
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_the_documented_families() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    assert_eq!(app.get_me(&app.token_for(&user)).await.status(), 200);
    assert_eq!(app.get_me(&app.token_for(&user)).await.status(), 200);
    let _ = app.get_me("garbage").await;
    let text = crate::helpers::metrics(&app).await;
    for needle in [
        "clerk_users_http_requests_total{route=\"/users/me\",status=\"200\"} 2",
        "clerk_users_http_requests_total{route=\"/users/me\",status=\"401\"} 1",
        "clerk_users_http_request_duration_seconds_bucket{le=\"+Inf\"}",
        "clerk_users_token_verifications_total{outcome=\"ok\"} 2",
        "clerk_users_token_verifications_total{outcome=\"token-invalid\"} 1",
        "clerk_users_key_fetches_total{outcome=\"ok\"} 1",
        "clerk_users_signing_keys_age_seconds ",
        "clerk_users_clerk_api_calls_total{outcome=\"ok\"} 1",
        "clerk_users_user_lookups_total{result=\"hit\"} 1",
        "clerk_users_user_lookups_total{result=\"miss\"} 1",
        "clerk_users_db_pool_size ",
        "clerk_users_db_pool_waiting 0",
        "clerk_users_db_reachable 1",
        "clerk_users_db_unreachable_seconds 0",
        "clerk_users_user_stale_age_seconds_count 0",
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
}
