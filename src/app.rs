//! Assembly: [`app_state`], [`build_app`] (the one router, shared by `main`, the tests and the
//! OpenAPI export) and [`Application`], which binds, serves and shuts down gracefully.

use std::{future::Future, net::SocketAddr, sync::Arc};

use deadpool_postgres::Pool;
use poem::{
    Endpoint, EndpointExt, IntoEndpoint, Request, Response, Route, Server,
    endpoint::{BoxEndpoint, DynEndpoint},
    http::Method,
    listener::{Acceptor, TcpAcceptor},
    middleware::Cors,
};

use crate::{
    api::{self, AppState, middleware::RequestContext, state::State},
    auth::{Policy, Verifier, keys::KeyStore},
    clerk::ClerkApi,
    db::{self, Database},
    metrics::Metrics,
    net::{self, DeadlineAcceptor, Limits},
    settings::Settings,
    users::{Users, cache::UserCache},
    webhooks::SvixVerifier,
};

/// The domain parts the handlers reach, wired from the settings.
pub fn app_state(
    settings: &Settings,
    pool: Pool,
    http: reqwest::Client,
    metrics: Metrics,
) -> AppState {
    {
        let keys = KeyStore::new(&settings.clerk, http.clone(), metrics.clone());
        let policy = Policy {
            issuer: settings.clerk.issuer.clone(),
            audience: settings.clerk.audience.clone(),
            authorized_parties: settings.clerk.authorized_parties.clone(),
            clock_skew_secs: settings.clerk.clock_skew_secs,
            accept_pending: settings.clerk.accept_pending,
        };
        let verifier = Verifier::new(
            keys,
            policy,
            settings.caches.token_max_entries,
            metrics.clone(),
        );
        let clerk = ClerkApi::new(&settings.clerk, http, metrics.clone());
        let cache = UserCache::new(
            settings.caches.user_max_entries,
            settings.caches.user_ttl,
            settings.caches.user_stale_if_error,
            metrics.clone(),
        );
        let db = Database::new(pool, db::query::Mode::of(&settings.database));
        let users = Users::new(db.clone(), clerk, cache, metrics.clone());
        let webhooks = settings
            .clerk
            .webhook_secret
            .as_ref()
            .and_then(|s| SvixVerifier::new(s.expose()))
            .map(Arc::new);
        AppState::new(State {
            db,
            verifier,
            users,
            metrics,
            webhooks,
        })
    }
}

/// The whole HTTP surface: the OpenAPI operations, the document, Swagger UI, CORS, and the request
/// context around all of it.
pub fn build_app(state: AppState, settings: &Settings) -> impl Endpoint + 'static {
    let api = api::openapi_service();
    let spec = poem::endpoint::make_sync(|_| {
        Response::builder()
            .content_type("application/json")
            .body(api::document())
    });
    let docs = api.swagger_ui();
    let cors = Cors::new()
        .allow_origins(settings.cors_allowed_origins.iter().map(String::as_str))
        .allow_methods([Method::GET, Method::PATCH, Method::DELETE])
        .allow_headers(["authorization", "content-type"])
        .expose_headers(["x-request-id", "retry-after", "www-authenticate"])
        .allow_credentials(true)
        .max_age(600);
    let surface = Surface {
        document: Route::new()
            .at("/openapi.json", spec)
            .nest("/docs", docs)
            .boxed(),
        operations: api.into_endpoint(),
    };
    surface
        // poem's Cors allows every origin when given none: add it only for a configured list.
        .with_if(!settings.cors_allowed_origins.is_empty(), cors)
        .with(RequestContext {
            state,
            timeout: settings.request_timeout,
            body_limit: settings.request_body_limit,
        })
}

/// The top of the router: the OpenAPI document and Swagger UI by their paths, every other path to
/// the operations. A plain comparison rather than poem's `Route::nest("/", …)`, which rebuilt
/// each request's URI on the way in: about a twentieth of the hot path (BENCHMARKS.md). Both sides
/// are boxed endpoints, and `call` hands on the box of the side it picks instead of awaiting it:
/// the future of everything below stays one pointer in the request's.
struct Surface {
    /// `/openapi.json` and `/docs…`
    document: BoxEndpoint<'static>,
    operations: BoxEndpoint<'static>,
}

impl Endpoint for Surface {
    type Output = Response;

    fn call(&self, req: Request) -> impl Future<Output = poem::Result<Response>> + Send {
        let path = req.uri().path();
        if !api::is_document_path(path) {
            return DynEndpoint::call(&*self.operations, req);
        }
        // poem-openapi's document and UI endpoints answer any method; they are read-only.
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Box::pin(std::future::ready(Err(
                poem::error::MethodNotAllowedError.into()
            )));
        }
        DynEndpoint::call(&*self.document, req)
    }
}

/// A bound, ready-to-serve instance.
pub struct Application {
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    state: AppState,
    settings: Settings,
    /// The key refresher, the cache's invalidation listener and the memory trimmer.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Migrate, load the signing keys (a failure is logged and retried in the background: the
    /// service starts and `/readyz` says 503 until keys arrive), bind the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = Metrics::default();
        let pool = db::create_pool(&settings.database);
        let applied = db::migrate(&settings.database, &pool).await?;
        tracing::info!(applied, "database schema up to date");

        let state = app_state(&settings, pool, net::http_client(), metrics);
        if let Err(e) = state.verifier.keys.refresh().await {
            tracing::warn!(error = %e, "signing keys not loaded at start; retrying in the background");
        }
        let background = [
            state.verifier.keys.spawn_refresher(),
            state.users.cache().spawn_listener(
                db::direct_or_pooled(&settings.database).clone(),
                state.db.clone(),
            ),
            crate::memory::spawn_trimmer(),
        ]
        .into_iter()
        .flatten()
        .collect();

        let listener = std::net::TcpListener::bind(settings.listen_addr).map_err(|e| {
            anyhow::anyhow!(
                "LISTEN_ADDR: cannot listen on {}: {e}",
                settings.listen_addr
            )
        })?;
        listener.set_nonblocking(true)?;
        let acceptor = TcpAcceptor::from_tokio(tokio::net::TcpListener::from_std(listener)?)?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .ok_or_else(|| anyhow::anyhow!("the listener has no address"))?;
        Ok(Self {
            acceptor,
            addr,
            state,
            settings,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` resolves, then stop accepting, give in-flight requests up to the
    /// grace period, stop the key refresher and the cache listener, close the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let app = build_app(self.state.clone(), &self.settings);
        tracing::info!(addr = %self.addr, "listening");
        // Deadlines per connection: a client trickling its request, or idling, is cut off.
        let limits = Limits::for_request_timeout(self.settings.request_timeout);
        let result = Server::new_with_acceptor(DeadlineAcceptor::new(self.acceptor, limits))
            .run_with_graceful_shutdown(app, shutdown, Some(self.settings.shutdown_grace))
            .await;
        for task in self.background {
            task.abort();
        }
        self.state.db.pool().close();
        tracing::info!("stopped");
        result
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        _ = term => tracing::info!("SIGTERM received; shutting down"),
    }
}
