//! A strict Python client: pydantic models generated from the committed openapi.json by
//! datamodel-code-generator (pinned in tests/requirements.txt, in .venv/), and a caller
//! (tests/python/caller.py) that parses every success and problem answer of the live service with
//! them, for a user whose `username` and `last_name` are null. (The TypeScript clients are in
//! `browser`, beside the other node checks.)

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::helpers::{app_with_null_fields, root, venv_bin};

/// The command of the README's "OpenAPI and generated clients", run from the repository root.
pub const DATAMODEL_CODEGEN_ARGS: &[&str] = &[
    "--input",
    "openapi.json",
    "--input-file-type",
    "openapi",
    "--output-model-type",
    "pydantic_v2.BaseModel",
    "--strict-nullable",
    "--extra-fields",
    "forbid",
    "--use-annotated",
    "--disable-timestamp",
    "--output",
    "tests/python/client/models.py",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_python_client_parses_every_answer() {
    let codegen = venv_bin("datamodel-codegen");
    let python = venv_bin("python");
    std::fs::create_dir_all(root().join("tests/python/client")).unwrap();
    let out = Command::new(codegen)
        .args(DATAMODEL_CODEGEN_ARGS)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "datamodel-codegen failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (app, token) = app_with_null_fields().await;
    let url = app.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["tests/python/caller.py", &url, &token])
            .current_dir(root())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python caller failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("no JSON result in:\n{stdout}"));
    assert_eq!(result["username"], Value::Null);
    assert_eq!(result["lastName"], Value::Null);
    assert_eq!(result["metadata"]["client"], "pydantic");
    assert_eq!(result["codes"]["nul"], "invalid-body");
    assert_eq!(result["codes"]["badToken"], "token-invalid");
    assert_eq!(result["codes"]["noToken"], "token-missing");
    assert_eq!(result["codes"]["webhook"], "webhook-timestamp-stale");
    assert_eq!(result["ready"], "ready");
}
