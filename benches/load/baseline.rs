//! The load benchmark's yardstick: bare poem on the same runtime as the service, answering
//! `GET /users/me` with a JSON body of the same size as the service's `User` (a real response of
//! the service, read from a file and serialized again on every request). No auth, no database, no
//! logging: what the framework alone costs on this machine.
//!
//! ```text
//! load-baseline LISTEN_ADDR BODY_FILE
//! ```
//!
//! Also answers `GET /readyz` with 200. Runs until SIGTERM or SIGINT.

use std::{process::ExitCode, sync::Arc};

use poem::{
    EndpointExt, Route, Server, get, handler,
    listener::TcpListener,
    web::{Data, Json},
};
use serde_json::Value;

#[handler]
fn me(body: Data<&Arc<Value>>) -> Json<Value> {
    Json(Value::clone(&body))
}

#[handler]
fn ready() -> &'static str {
    "ok"
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, body_file] = args.as_slice() else {
        eprintln!("usage: load-baseline LISTEN_ADDR BODY_FILE");
        return ExitCode::from(2);
    };
    let body: Value = match std::fs::read(body_file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("load-baseline: {body_file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The service's runtime: tokio's multi-threaded scheduler with one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let app = Route::new()
        .at("/users/me", get(me))
        .at("/readyz", get(ready))
        .data(Arc::new(body));
    let result = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        Server::new(TcpListener::bind(addr.as_str()))
            .run_with_graceful_shutdown(app, stop, Some(std::time::Duration::from_secs(2)))
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load-baseline: {e}");
            ExitCode::FAILURE
        }
    }
}
