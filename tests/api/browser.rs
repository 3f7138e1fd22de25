//! What an SPA team sees, checked in a real browser (Debian's Chromium, driven by playwright-core)
//! and with a generated client: the example SPA across origins (CORS), Swagger UI at /docs, and a
//! TypeScript client generated from openapi.json. The node side lives in tests/browser/; the
//! README's test command (`.ci/test`) installs Chromium and the npm packages when missing.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use clerk_users::testkit::TestApp;
use poem::{
    Route, Server, get, handler,
    http::StatusCode,
    listener::{Acceptor, TcpAcceptor},
    web::Path,
};
use serde_json::Value;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The tools these tests need, with what to do when one is missing.
/// Run `npx ARGS` in `dir`, failing the test with its output when it fails.
fn npx(dir: &std::path::Path, what: &str, args: &[&str]) {
    let out = Command::new("npx")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_tools() {
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser` \
         (the README's test command, .ci/test, does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium is missing at {chromium}: `apt-get install chromium` (.ci/test does), or set CHROMIUM"
    );
}

/// Run a program in tests/browser, at most `limit`, and parse the last line of its stdout.
fn run(program: &str, args: &[&str], limit: Duration) -> Value {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(browser_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{program} {args:?} took longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| panic!("{program}: no JSON result in:\n{stdout}"))
}

async fn run_async(program: &'static str, args: Vec<String>, limit: Duration) -> Value {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(program, &args, limit)
    })
    .await
    .unwrap()
}

#[handler]
fn spa_file(Path(name): Path<String>) -> poem::Response {
    let (body, media) = match name.as_str() {
        "index.html" => (
            include_str!("../../examples/spa/index.html"),
            "text/html; charset=utf-8",
        ),
        "app.js" => (
            include_str!("../../examples/spa/app.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => {
            return poem::Response::builder()
                .status(StatusCode::NOT_FOUND)
                .finish();
        }
    };
    poem::Response::builder().content_type(media).body(body)
}

/// Serve examples/spa on a loopback port of its own: an origin of its own.
async fn serve_spa() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new().at("/:name", get(spa_file));
    let server = tokio::spawn(async move {
        let _ = Server::new_with_acceptor(acceptor).run(app).await;
    });
    (format!("http://{addr}"), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_spa_works_from_an_allowed_origin_and_is_refused_from_another() {
    require_tools();
    let (allowed, _a) = serve_spa().await;
    let (denied, _d) = serve_spa().await;
    let app = TestApp::builder()
        .with("cors_allowed_origins", allowed.clone())
        .spawn()
        .await;
    let user = app.clerk.new_user();
    let token = app.token_for(&user);
    let result = run_async(
        "node",
        [
            "cors.mjs",
            "--api",
            &app.url,
            "--allowed",
            &allowed,
            "--denied",
            &denied,
            "--token",
            &token,
        ]
        .map(String::from)
        .to_vec(),
        Duration::from_secs(90),
    )
    .await;
    eprintln!("browser saw: {result}");
    assert_eq!(result["allowed"]["state"], "ok", "{result}");
    assert_eq!(result["allowed"]["clerkId"], user.as_str());
    assert_eq!(result["allowed"]["name"], "Ada Lovelace");
    assert_eq!(result["denied"]["state"], "blocked", "{result}");
    // The refused origin's request did reach the service (a simple preflight or the GET itself);
    // the browser, not the server, hides the answer. Either way no user data was shown.
    assert_eq!(result["denied"]["clerkId"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_lists_the_operations_authorizes_and_tries_get_me() {
    require_tools();
    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let token = app.token_for(&user);
    let result = run_async(
        "node",
        ["swagger.mjs", "--api", &app.url, "--token", &token]
            .map(String::from)
            .to_vec(),
        Duration::from_secs(90),
    )
    .await;
    eprintln!("browser saw: {result}");
    let ops: Vec<&str> = result["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for op in [
        "Users-getMe",
        "Users-patchMe",
        "Users-deleteMe",
        "Webhooks-receiveClerkWebhook",
        "Health-getHealthz",
    ] {
        assert!(ops.contains(&op), "{op} listed in {ops:?}");
    }
    assert_eq!(result["authorized"], true);
    assert_eq!(result["status"], "200");
    assert_eq!(result["body"]["clerk_id"], user.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typescript_client_generated_from_openapi_json_type_checks_and_works() {
    require_tools();
    let long = Duration::from_secs(120);
    // Generate the client from the committed document, type-check the caller, compile it.
    let dir = browser_dir();
    let gen_ = tokio::task::spawn_blocking(move || {
        for (what, args) in [
            (
                "generate",
                vec![
                    "openapi-typescript",
                    "../../openapi.json",
                    "-o",
                    "client/schema.d.ts",
                ],
            ),
            ("type-check", vec!["tsc", "-p", "client"]),
        ] {
            npx(&dir, what, &args);
        }
        std::fs::metadata(dir.join("client/schema.d.ts"))
            .unwrap()
            .len()
    });
    let schema_bytes = tokio::time::timeout(long, gen_)
        .await
        .expect("generation in time")
        .unwrap();
    eprintln!("generated client/schema.d.ts: {schema_bytes} bytes");

    let app = TestApp::spawn().await;
    let user = app.clerk.new_user();
    let token = app.token_for(&user);
    let result = run_async(
        "node",
        ["client/dist/caller.js", &app.url, &token]
            .map(String::from)
            .to_vec(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(result["clerkId"], user.as_str());
    assert_eq!(result["metadata"]["client"], "typescript");
    assert_eq!(result["problemCode"], "token-invalid");
    assert_eq!(result["ready"], "ready");
}

/// A client whose every answer is checked at run time: @hey-api/openapi-ts generates a fetch client
/// and zod schemas from the committed document (tests/browser/openapi-ts.config.mjs), its SDK
/// parses each success answer with them, and the caller parses each problem answer with
/// `zProblem`, for a user whose `username` and `last_name` are null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zod_validated_typescript_client_parses_every_answer() {
    require_tools();
    let dir = browser_dir();
    let build = tokio::task::spawn_blocking(move || {
        for (what, args) in [
            ("generate", vec!["openapi-ts"]),
            ("type-check", vec!["tsc", "-p", "validated"]),
        ] {
            npx(&dir, what, &args);
        }
    });
    tokio::time::timeout(Duration::from_secs(120), build)
        .await
        .expect("generation in time")
        .unwrap();

    let (app, token) = crate::helpers::app_with_null_fields().await;
    let result = run_async(
        "node",
        ["validated/dist/caller.js", &app.url, &token]
            .map(String::from)
            .to_vec(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(result["username"], Value::Null);
    assert_eq!(result["lastName"], Value::Null);
    assert_eq!(result["metadata"]["client"], "zod");
    assert_eq!(result["codes"]["nul"], "invalid-body");
    assert_eq!(result["codes"]["badToken"], "token-invalid");
    assert_eq!(result["codes"]["noToken"], "token-missing");
    assert_eq!(result["codes"]["webhook"], "webhook-timestamp-stale");
    assert_eq!(result["ready"], "ready");
}
