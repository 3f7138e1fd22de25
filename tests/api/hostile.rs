//! Hostile input over HTTP: `kid` values that are huge or hold path and SQL characters,
//! header floods, oversized cookies, and a client that sends its request a byte at a time.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use clerk_users::{
    app::{app_state, build_app},
    metrics::Metrics,
    net::{DeadlineAcceptor, Limits, http_client},
    testkit::{ClerkStandIn, TestApp, TestDatabase, clerk::random_id},
};
use futures::future::join_all;
use poem::{Server, listener::TcpAcceptor};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::rejected;

/// Send `request` as it is on a fresh connection; the status line of the answer, or `None` when
/// the server closed the connection without one.
async fn raw(addr: SocketAddr, request: &[u8]) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before it has read everything: ignore a failed write.
    let _ = s.write_all(request).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => panic!("no answer and no close within 10 s"),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().map(String::from)
}

fn get_with_headers(path: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// The service still answers promptly: a known user's `/users/me`.
async fn still_serving(app: &TestApp, token: &str) {
    let started = Instant::now();
    assert_eq!(app.get_me(token).await.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_kids_are_unknown_keys_and_reach_neither_the_network_nor_the_database() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let good = app.token_for(&user);
    still_serving(&app, &good).await;
    let rows = app.user_rows(None).await;
    let key = app.clerk.current_key();
    let claims = app.clerk.claims_for(&user);
    let (jwks_before, users_before, all_before) = (
        app.clerk.jwks_calls(),
        app.clerk.user_calls(),
        app.clerk.all_calls(),
    );

    let kids = [
        "../../../../etc/passwd".to_string(),
        "..%2f..%2f..%2fv1%2fusers".to_string(),
        "/v1/users/user_x?x=".to_string(),
        "'; drop table users; --".to_string(),
        "\" or 1=1 --".to_string(),
        "kid\r\nX-Injected: 1".to_string(),
        "\u{0}".to_string(),
        "ins_😀\u{202e}".to_string(),
        format!("{}{}", key.kid, "'"),
        // Huge, but the token stays under 8 KiB.
        "k".repeat(5_000),
    ];
    for kid in &kids {
        let mut header = ClerkStandIn::header_for(&key);
        header["kid"] = json!(kid);
        let token = app.clerk.sign_with(&key, &header, &claims);
        assert!(token.len() <= 8 * 1024);
        rejected(app.get_me(&token).await, "jwk-kid-mismatch").await;
    }
    // Larger than 8 KiB in all: rejected before anything else.
    let mut header = ClerkStandIn::header_for(&key);
    header["kid"] = json!("k".repeat(7_000));
    let token = app.clerk.sign_with(&key, &header, &claims);
    rejected(app.get_me(&token).await, "token-invalid").await;
    // Not a string.
    for kid in [
        json!(1),
        json!(["a"]),
        json!({"$ne": ""}),
        json!(null),
        json!(""),
    ] {
        let mut header = ClerkStandIn::header_for(&key);
        header["kid"] = kid;
        let token = app.clerk.sign_with(&key, &header, &claims);
        rejected(app.get_me(&token).await, "token-invalid").await;
    }

    // One refetch of the configured JWKS URL for all of them together (the unknown-kid limit),
    // no request to any other path, no Backend API call, and the table is as it was.
    let jwks = app.clerk.jwks_calls() - jwks_before;
    assert!(jwks <= 1, "{jwks} JWKS fetches");
    assert_eq!(app.clerk.user_calls(), users_before);
    assert_eq!(app.clerk.all_calls() - all_before, jwks, "no other path");
    assert_eq!(app.user_rows(None).await, rows);
    still_serving(&app, &good).await;
    // The log shows none of them (nor anything of the token).
    let log = app.log();
    for kid in kids.iter().filter(|k| k.len() > 3) {
        assert!(!log.contains(kid.as_str()), "the log holds kid {kid:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_get_431_and_the_service_keeps_serving() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let good = app.token_for(&user);
    still_serving(&app, &good).await;

    // More header fields than hyper parses (100).
    let many: Vec<(String, String)> = (0..150)
        .map(|i| (format!("x-flood-{i}"), "v".into()))
        .collect();
    let status = raw(app.addr, &get_with_headers("/users/me", &many)).await;
    assert_eq!(
        status.as_deref(),
        Some("HTTP/1.1 431 Request Header Fields Too Large")
    );
    // A head larger than hyper's read buffer (about 400 KiB), in one header or in the cookie.
    for name in ["x-big", "cookie", "authorization"] {
        let big = vec![(name.to_string(), format!("Bearer {}", "a".repeat(1 << 20)))];
        let status = raw(app.addr, &get_with_headers("/users/me", &big)).await;
        assert_eq!(
            status.as_deref(),
            Some("HTTP/1.1 431 Request Header Fields Too Large"),
            "{name}"
        );
    }
    // Twenty such floods at once, beside normal traffic.
    let flood = get_with_headers("/users/me", &[("x-big".to_string(), "a".repeat(300_000))]);
    let floods = join_all((0..20).map(|_| raw(app.addr, &flood)));
    let normal = async {
        for _ in 0..10 {
            still_serving(&app, &good).await;
        }
    };
    let (answers, ()) = tokio::join!(floods, normal);
    for status in answers {
        // Under the buffer: parsed, and /users/me without a token is a 401.
        assert_eq!(status.as_deref(), Some("HTTP/1.1 401 Unauthorized"));
    }
    still_serving(&app, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_crowded_cookies() {
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let good = app.token_for(&user);

    // A __session over 8 KiB: token-invalid, whatever it holds.
    for value in ["a".repeat(9_000), format!("{good}{}", ".".repeat(9_000))] {
        let resp = app
            .get("/users/me")
            .header("cookie", format!("__session={value}"))
            .send()
            .await
            .unwrap();
        rejected(resp, "token-invalid").await;
    }
    // 100 KiB of other cookies around a valid session: found and accepted.
    let crowd: Vec<String> = (0..2_000)
        .map(|i| format!("c{i}={}", random_id(40)))
        .collect();
    let cookie = format!(
        "{}; __session={good}; {}",
        crowd[..1_000].join("; "),
        crowd[1_000..].join("; ")
    );
    let resp = app
        .get("/users/me")
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The same crowd with two sessions in it: ambiguous, rejected.
    let cookie = format!("{}; __session={good}; __session={good}", crowd.join("; "));
    let resp = app
        .get("/users/me")
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    rejected(resp, "token-invalid").await;
    // Many Cookie header fields (up to hyper's 100): read like one.
    let mut headers: Vec<(String, String)> = (0..90)
        .map(|i| ("cookie".to_string(), format!("c{i}=x")))
        .collect();
    headers.push(("cookie".to_string(), format!("__session={good}")));
    let status = raw(app.addr, &get_with_headers("/users/me", &headers)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    still_serving(&app, &good).await;
}

/// Bytes of a request sent one at a time, `every` apart; resolves when the server closes the
/// connection (with the time from the first byte and whatever it answered) or after `give_up`.
async fn trickle(
    addr: SocketAddr,
    request: Vec<u8>,
    every: Duration,
    give_up: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    let writer = async move {
        for b in request.iter().cycle() {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(every).await;
        }
        std::future::pending::<()>().await;
    };
    let reader = async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return (started.elapsed(), got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(give_up, async {
        tokio::select! {
            () = writer => unreachable!(),
            closed = reader => closed,
        }
    })
    .await
    .ok()
}

fn slow_request() -> Vec<u8> {
    // Long enough that a byte every 50 ms takes far longer than the limits used here.
    format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(400)
    )
    .into_bytes()
}

/// The service as `Application::run_until_stopped` serves it, with the listener wrapped in
/// `net::DeadlineAcceptor`, as `Application::run_until_stopped` does, and a shorter time limit.
struct Guarded {
    addr: SocketAddr,
    clerk: ClerkStandIn,
    _db: Arc<TestDatabase>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn spawn_guarded(request_timeout_ms: u64) -> Guarded {
    let clerk = ClerkStandIn::start(&format!("sk_test_{}", random_id(30))).await;
    let db = Arc::new(TestDatabase::on_shared_cluster().await);
    let settings = TestApp::builder()
        .with("request_timeout_ms", request_timeout_ms.to_string())
        .settings(&clerk, &db.url, clerk.secret_key());
    let pool = clerk_users::db::create_pool(&settings.database);
    clerk_users::db::migrate(&settings.database, &pool)
        .await
        .unwrap();
    let state = app_state(&settings, pool, http_client(), Metrics::default());
    state.verifier.keys.refresh().await.unwrap();
    let app = build_app(state, &settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = DeadlineAcceptor::new(
        TcpAcceptor::from_tokio(listener).unwrap(),
        Limits::for_request_timeout(settings.request_timeout),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
            app,
            async {
                let _ = rx.await;
            },
            Some(Duration::from_secs(1)),
        ),
    );
    Guarded {
        addr,
        clerk,
        _db: db,
        stop: Some(tx),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_at_a_time_client_does_not_hold_up_anyone_else() {
    let app = TestApp::builder()
        .with("request_timeout_ms", "1000")
        .spawn()
        .await;
    let user = app.clerk.new_user();
    let good = app.token_for(&user);
    let slow = join_all((0..5).map(|_| {
        trickle(
            app.addr,
            slow_request(),
            Duration::from_millis(50),
            Duration::from_secs(4),
        )
    }));
    let others = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..10 {
            still_serving(&app, &good).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let (_slow, ()) = tokio::join!(slow, others);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_deadline_acceptor_a_byte_at_a_time_client_is_dropped_at_the_time_limit() {
    let app = spawn_guarded(1000).await;
    let limit = Limits::for_request_timeout(Duration::from_millis(1000)).request;
    let user = app.clerk.new_user();
    let token = app.clerk.token_for(&user);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/users/me", app.addr);

    let slow = join_all((0..5).map(|_| {
        trickle(
            app.addr,
            slow_request(),
            Duration::from_millis(50),
            Duration::from_secs(10),
        )
    }));
    let others = async {
        for _ in 0..10 {
            let started = Instant::now();
            let resp = http.get(&url).bearer_auth(&token).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert!(started.elapsed() < Duration::from_secs(1));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (slow, ()) = tokio::join!(slow, others);
    for closed in slow {
        let (after, answer) = closed.expect("the slow connection was closed");
        assert!(
            after >= limit - Duration::from_millis(100) && after < limit + Duration::from_secs(1),
            "closed after {after:?}"
        );
        assert!(
            answer.is_empty(),
            "no answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }

    // A slow chunked body is cut the same way (the body limit reads it outside the handler).
    let head = "PATCH /users/me HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let writer = async move {
        loop {
            if wr.write_all(b"1\r\n \r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::future::pending::<()>().await;
    };
    let reader = async move {
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            () = writer => unreachable!(),
            got = reader => got,
        }
    })
    .await
    .expect("the slow body was cut");
    let took = started.elapsed();
    assert!(took < limit + Duration::from_secs(1), "cut after {took:?}");
    // Either cut without an answer or answered by the time limit; never served to the end.
    let text = String::from_utf8_lossy(&got);
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_deadline_acceptor_keep_alive_and_slow_answers_still_work() {
    let app = spawn_guarded(1000).await;
    let user = app.clerk.new_user();
    let token = app.clerk.token_for(&user);
    // One connection reused for several requests, with pauses longer than the request limit.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let url = format!("http://{}/users/me", app.addr);
    for _ in 0..3 {
        let resp = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
    }
    // A handler slower than the time limit: the middleware's 503 request-timeout arrives before
    // the connection deadline.
    app.clerk
        .queue_user_faults([clerk_users::testkit::Fault::Delay(Duration::from_secs(3))]);
    let new = app.clerk.new_user();
    let resp = http
        .get(&url)
        .bearer_auth(app.clerk.token_for(&new))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "request-timeout");
}
