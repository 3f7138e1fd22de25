//! The load benchmark's yardsticks, on the same runtime as the service, answering `GET /users/me`
//! with a JSON body of the same size as the service's `User` (a real response of the service, read
//! from a file and serialized again on every request). No database, no logging:
//!
//! - bare poem (the default): a plain handler, no auth; what the HTTP framework alone costs;
//! - `--openapi`: a poem-openapi service with that one operation behind a bearer security scheme
//!   that accepts any token; what the OpenAPI layer adds, the service's own limit.
//!
//! ```text
//! load-baseline [--openapi] LISTEN_ADDR BODY_FILE
//! ```
//!
//! Also answers `GET /readyz` with 200. Runs until SIGTERM or SIGINT.

use std::{process::ExitCode, sync::Arc};

use poem::{
    EndpointExt, IntoEndpoint, Route, Server, get, handler,
    listener::TcpListener,
    web::{Data, Json},
};
use poem_openapi::{
    OpenApi, OpenApiService, SecurityScheme, auth::Bearer, payload::Json as OaJson,
};
use serde_json::Value;

/// Any bearer token: the extractor runs, no check does.
#[derive(SecurityScheme)]
#[oai(ty = "bearer")]
struct AnyBearer(#[allow(dead_code)] Bearer);

struct Api;

#[OpenApi]
impl Api {
    #[oai(path = "/users/me", method = "get")]
    async fn me(&self, _auth: AnyBearer, body: Data<&Arc<Value>>) -> OaJson<Value> {
        OaJson(Value::clone(&body))
    }
}

#[handler]
fn me(body: Data<&Arc<Value>>) -> Json<Value> {
    Json(Value::clone(&body))
}

#[handler]
fn ready() -> &'static str {
    "ok"
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let openapi = args.first().is_some_and(|a| a == "--openapi");
    if openapi {
        args.remove(0);
    }
    let [addr, body_file] = args.as_slice() else {
        eprintln!("usage: load-baseline [--openapi] LISTEN_ADDR BODY_FILE");
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
    let body = Arc::new(body);
    let app = if openapi {
        let api = OpenApiService::new(Api, "baseline", "1").into_endpoint();
        Route::new()
            .at("/readyz", get(ready))
            .at("/users/me", api)
            .data(body)
            .boxed()
    } else {
        Route::new()
            .at("/users/me", get(me))
            .at("/readyz", get(ready))
            .data(body)
            .boxed()
    };
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
