//! schemathesis (pinned in tests/requirements.txt, installed into .venv/ by .ci/test) against the
//! live service: every check but `use_after_free`, at least 100 examples per operation, no failure.
//! The signed-in user has a null `username` and `last_name`, and webhooks are enabled, so every
//! operation answers with what it documents. tests/schemathesis/schemathesis.toml says which
//! documented non-2xx answers a valid request may get, and why.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::helpers::{app_with_null_fields, root, venv_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let st = venv_bin("st");
    let (app, token) = app_with_null_fields().await;
    let args: Vec<String> = vec![
        "--config-file".into(),
        root()
            .join("tests/schemathesis/schemathesis.toml")
            .display()
            .to_string(),
        "--no-color".into(),
        "run".into(),
        format!("{}/openapi.json", app.url),
        "--url".into(),
        app.url.clone(),
        "--checks".into(),
        "all".into(),
        "--exclude-checks".into(),
        "use_after_free".into(),
        "--max-examples".into(),
        "100".into(),
        "--header".into(),
        format!("Authorization: Bearer {token}"),
    ];
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(st)
            .args(&args)
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("st runs");
        let started = Instant::now();
        let limit = Duration::from_secs(300);
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > limit {
                let _ = child.kill();
                panic!("schemathesis took longer than {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The token must not be kept in the output a CI log shows.
    let shown = stdout.replace(&token, "<token>");
    assert!(
        out.status.success(),
        "schemathesis failed:\n{shown}\n{stderr}"
    );
    println!("{shown}");
}
