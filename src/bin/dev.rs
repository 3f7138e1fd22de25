//! `clerk-users-dev`: the service and everything it needs on one machine, in one command:
//!
//! ```text
//! cargo run --features testkit --bin clerk-users-dev
//! ```
//!
//! - PostgreSQL: `DATABASE_URL` when it is configured; otherwise a cluster of its own under
//!   `.data/postgres` in the working directory, kept between runs (run as the `postgres` user, or
//!   `nobody`, when started as root), reused when a previous run left it running, with the
//!   database `clerk_users`. Migrations are applied at start, as always.
//! - Clerk: the real one when `CLERK_SECRET_KEY` or `CLERK_ISSUER` is configured (environment,
//!   `.env`, `config/`); otherwise the testkit's Clerk stand-in with three demo users, on
//!   `DEV_CLERK_ADDR` (default `127.0.0.1:8001`), which also hands out fresh tokens at
//!   `GET /dev/token/{user_id}`.
//! - The service on `LISTEN_ADDR`, here `127.0.0.1:8000` unless set, logging `pretty` unless
//!   `LOG_FORMAT` is set.
//!
//! Ctrl-C (or SIGTERM) stops the service gracefully, then the stand-in and the cluster.
//!
//! Needs the feature `testkit`, which the production binary `clerk-users` is never built with:
//! this binary is the only one that can sign tokens.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::ExitCode,
};

use clerk_users::{
    app::{self, Application},
    settings::{self, Settings},
    telemetry,
    testkit::{
        self, ClerkStandIn, PgCluster, SigningKey,
        clerk::{clerk_user_json, random_id},
    },
};
use figment::{Figment, providers::Serialized};
use tokio::sync::watch;

const USAGE: &str = "usage: clerk-users-dev
  Runs the service locally with PostgreSQL under .data/postgres and, when no Clerk keys are
  configured (CLERK_SECRET_KEY / CLERK_ISSUER in the environment or .env), a Clerk stand-in
  with demo users. Ctrl-C stops everything.

  environment (besides the service's own settings, see .env.example):
    DEV_CLERK_ADDR   where the Clerk stand-in listens (default 127.0.0.1:8001)";

/// The database the local run creates on its own cluster.
const DATABASE: &str = "clerk_users";
/// Where the local cluster lives, relative to the working directory.
const DATA_DIR: &str = ".data/postgres";
/// The local run's defaults: placed right after `config/default.toml`, so that every other layer
/// still wins.
const DEV_DEFAULTS: &[(&str, &str)] =
    &[("listen_addr", "127.0.0.1:8000"), ("log_format", "pretty")];
const DEV_CLERK_ADDR: &str = "127.0.0.1:8001";

/// Generated users the stand-in lists besides the demo users: enough for `clerk-users sync` to
/// show its progress bar over a dozen pages.
const GENERATED_USERS: usize = 5_000;

/// The stand-in's demo users: (id, first name, last name, email).
const DEMO_USERS: &[(&str, &str, &str, &str)] = &[
    ("user_demo_ada", "Ada", "Lovelace", "ada@example.org"),
    ("user_demo_grace", "Grace", "Hopper", "grace@example.org"),
    ("user_demo_alan", "Alan", "Turing", "alan@example.org"),
];

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("clerk-users-dev: unknown argument {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    }

    // The settings as the binary reads them, with the dev defaults; checked before anything
    // starts, so a bad setting costs no cluster start.
    let figment = settings::layers(DEV_DEFAULTS);
    let real_clerk = settings::is_set(&figment, "clerk_secret_key")
        || settings::is_set(&figment, "clerk_issuer");
    let own_database = !settings::is_set(&figment, "database_url");
    let preflight = with_overrides(
        figment.clone(),
        own_database.then_some("postgres://postgres@127.0.0.1:5432/clerk_users"),
        (!real_clerk).then_some(("http://127.0.0.1:1", "sk_test_preflight")),
    );
    let settings = match Settings::from_figment(preflight) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("clerk-users-dev: {e}");
            return ExitCode::from(78);
        }
    };
    telemetry::init(settings.log_format, &settings.rust_log, std::io::stdout);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("clerk-users-dev: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(figment, real_clerk, own_database));
    // The key refresher and other tasks end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "clerk-users-dev stopped with an error");
            eprintln!("clerk-users-dev: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The local database URL and the stand-in's (issuer, secret key) on top of the settings.
fn with_overrides(
    figment: Figment,
    database_url: Option<&str>,
    stand_in: Option<(&str, &str)>,
) -> Figment {
    let mut figment = figment;
    if let Some(url) = database_url {
        figment = figment.merge(Serialized::default("database_url", url));
    }
    if let Some((url, secret_key)) = stand_in {
        for (key, value) in [
            ("clerk_issuer", url),
            ("clerk_api_url", url),
            ("clerk_secret_key", secret_key),
            // The keys come from the stand-in's JWKS ({issuer}/.well-known/jwks.json).
            ("clerk_jwks_url", ""),
            ("clerk_jwt_key", ""),
        ] {
            figment = figment.merge(Serialized::default(key, value));
        }
    }
    figment
}

/// What was started, so that it can be stopped in the right order whatever happens.
struct Local {
    cluster: Option<PgCluster>,
    clerk: Option<ClerkStandIn>,
}

impl Local {
    async fn stop(mut self) {
        // The stand-in's server task ends when it is dropped.
        self.clerk.take();
        if let Some(cluster) = self.cluster.take() {
            let root = cluster.root().to_path_buf();
            match tokio::task::spawn_blocking(move || cluster.stop()).await {
                Ok(Ok(())) => {
                    tracing::info!(dir = %display_path(&root), "PostgreSQL stopped; its data is kept")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "could not stop PostgreSQL"),
                Err(e) => tracing::warn!(error = %e, "could not stop PostgreSQL"),
            }
        }
    }
}

async fn run(figment: Figment, real_clerk: bool, own_database: bool) -> anyhow::Result<()> {
    // Ctrl-C or SIGTERM from now on, also while things are starting.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        app::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |rx: &watch::Receiver<bool>| *rx.borrow();

    let mut local = Local {
        cluster: None,
        clerk: None,
    };
    let started = start(&mut local, figment, real_clerk, own_database, &stop_rx).await;
    let (app, banner) = match started {
        Ok(Some(ok)) => ok,
        Ok(None) => {
            local.stop().await;
            return Ok(());
        }
        Err(e) => {
            local.stop().await;
            return Err(e);
        }
    };
    if stopped(&stop_rx) {
        local.stop().await;
        return Ok(());
    }
    println!("{banner}");
    let served = app
        .run_until_stopped(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        })
        .await;
    local.stop().await;
    served.map_err(Into::into)
}

/// Start the cluster, the stand-in and the service; `None` when stopped on the way.
async fn start(
    local: &mut Local,
    figment: Figment,
    real_clerk: bool,
    own_database: bool,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<(Application, String)>> {
    let mut lines = Vec::new();

    let database_url = if own_database {
        let root = std::env::current_dir()?.join(DATA_DIR);
        let dir = root.clone();
        let (cluster, reused) =
            tokio::task::spawn_blocking(move || PgCluster::start_persistent(&dir))
                .await?
                .map_err(|e| cluster_error(&root, e))?;
        tracing::info!(
            dir = DATA_DIR,
            port = cluster.port(),
            "PostgreSQL {}",
            if reused {
                "already running; reused"
            } else {
                "started"
            }
        );
        let port = cluster.port();
        let admin_url = cluster.url("postgres");
        let url = cluster.url(DATABASE);
        local.cluster = Some(cluster);
        if *stop.borrow() {
            return Ok(None);
        }
        create_database(&admin_url).await?;
        lines.push(format!(
            "  PostgreSQL    {DATA_DIR} (kept between runs), port {port}: psql -h 127.0.0.1 -p {port} -U postgres {DATABASE}"
        ));
        Some(url)
    } else {
        lines.push("  PostgreSQL    DATABASE_URL as configured".to_string());
        None
    };

    let mut try_lines = Vec::new();
    let stand_in = if real_clerk {
        None
    } else {
        let secret_key = format!("sk_test_dev_{}", random_id(32));
        let addr = stand_in_addr()?;
        let clerk = ClerkStandIn::start_dev(&addr, &secret_key, SigningKey::generate()).await;
        for (id, first, last, email) in DEMO_USERS {
            clerk.add_user(clerk_user_json(id, Some(first), Some(last), Some(email)));
        }
        clerk.generate_users(GENERATED_USERS);
        let url = clerk.url();
        tracing::info!(url = %url, "Clerk stand-in started (no CLERK_SECRET_KEY / CLERK_ISSUER configured)");
        let overrides = (url, secret_key);
        local.clerk = Some(clerk);
        Some(overrides)
    };

    let figment = with_overrides(
        figment,
        database_url.as_deref(),
        stand_in.as_ref().map(|(u, k)| (u.as_str(), k.as_str())),
    );
    let settings = Settings::from_figment(figment)?;
    if *stop.borrow() {
        return Ok(None);
    }
    let app = Application::build(settings.clone()).await?;
    let base = format!("http://{}", printable(app.local_addr()));

    match &local.clerk {
        Some(clerk) => {
            let (demo, ..) = DEMO_USERS[0];
            let token = clerk.token_for(demo);
            let users: Vec<String> = DEMO_USERS
                .iter()
                .map(|(id, first, last, _)| format!("{id} ({first} {last})"))
                .collect();
            lines.push(format!(
                "  Clerk         stand-in at {} (set CLERK_SECRET_KEY and CLERK_ISSUER for the real one)",
                clerk.url()
            ));
            lines.push(format!(
                "  Demo users    {}, and {GENERATED_USERS} generated ones (listed for clerk-users sync)",
                users.join(", ")
            ));
            // The stand-in's key is made for this run and opens nothing but the stand-in.
            try_lines.push(format!(
                "Copy every stand-in user into the database, with a progress bar:\n  \
                 CLERK_API_URL={clerk} CLERK_SECRET_KEY={key} DATABASE_URL='{db}' cargo run --bin clerk-users -- sync",
                clerk = clerk.url(),
                key = clerk.secret_key(),
                db = database_url.as_deref().unwrap_or("$DATABASE_URL"),
            ));
            try_lines.push(format!(
                "Try it now (this token lives 60 s, as Clerk's do):\n  curl -i -H 'Authorization: Bearer {token}' {base}/users/me"
            ));
            try_lines.push(format!(
                "A fresh token at any time, for any user_… id (GET /dev/token/{{user_id}} on the stand-in):\n  \
                 curl -s {clerk}/dev/token/{demo}\n  \
                 curl -i -H \"Authorization: Bearer $(curl -s {clerk}/dev/token/{demo})\" {base}/users/me",
                clerk = clerk.url()
            ));
        }
        None => {
            lines.push(format!(
                "  Clerk         the real one: {}",
                settings.clerk.issuer
            ));
            try_lines.push(format!(
                "Try it with a session token from your signed-in frontend\n\
                 (in its browser console: await window.Clerk.session.getToken()):\n  \
                 curl -i -H \"Authorization: Bearer $TOKEN\" {base}/users/me"
            ));
        }
    }

    let banner = format!(
        "\nclerk-users is running (local development).\n\n  \
         Service       {base}\n  \
         Swagger UI    {base}/docs  (Authorize, then paste a token)\n  \
         Health        {base}/healthz  {base}/readyz\n\
         {}\n\n{}\n\nCtrl-C stops the service{}.\n",
        lines.join("\n"),
        try_lines.join("\n\n"),
        match (&local.clerk, &local.cluster) {
            (Some(_), Some(_)) => ", the Clerk stand-in and PostgreSQL",
            (Some(_), None) => " and the Clerk stand-in",
            (None, Some(_)) => " and PostgreSQL",
            (None, None) => "",
        }
    );
    Ok(Some((app, banner)))
}

/// `DEV_CLERK_ADDR`, or 127.0.0.1:8001 when it is free, else any free loopback port.
fn stand_in_addr() -> anyhow::Result<String> {
    if let Ok(addr) = std::env::var("DEV_CLERK_ADDR") {
        let parsed: SocketAddr = addr
            .parse()
            .map_err(|_| anyhow::anyhow!("DEV_CLERK_ADDR: expected host:port, got {addr:?}"))?;
        if !parsed.ip().is_loopback() {
            anyhow::bail!(
                "DEV_CLERK_ADDR: the Clerk stand-in listens on loopback only, got {addr}"
            );
        }
        return Ok(addr);
    }
    if TcpListener::bind(DEV_CLERK_ADDR).is_ok() {
        Ok(DEV_CLERK_ADDR.to_string())
    } else {
        tracing::warn!("{DEV_CLERK_ADDR} is taken; the Clerk stand-in takes a free port");
        Ok("127.0.0.1:0".to_string())
    }
}

async fn create_database(admin_url: &str) -> anyhow::Result<()> {
    let client = testkit::postgres::connect(admin_url).await?;
    let exists = client
        .query_opt("select 1 from pg_database where datname = $1", &[&DATABASE])
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("create database {DATABASE}"))
            .await?;
        tracing::info!(database = DATABASE, "database created");
    }
    Ok(())
}

fn cluster_error(root: &Path, e: std::io::Error) -> anyhow::Error {
    let mut msg = format!("cannot start PostgreSQL in {}: {e}", display_path(root));
    if e.to_string().contains("ermission denied") {
        msg.push_str(
            "\n  (as root, PostgreSQL runs as the postgres user, or nobody: every folder above \
             the working directory must be searchable by it, e.g. chmod o+x; or set DATABASE_URL)",
        );
    }
    if e.kind() == std::io::ErrorKind::NotFound {
        msg.push_str(
            "\n  (the PostgreSQL server binaries were not found: install PostgreSQL 15, or set \
             PG_BIN to its bin folder, or set DATABASE_URL)",
        );
    }
    msg.push_str(&format!(
        "\n  (its log: {})",
        display_path(&root.join("server.log"))
    ));
    anyhow::anyhow!(msg)
}

/// A path relative to the working directory when it is inside it.
fn display_path(p: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    p.strip_prefix(&cwd)
        .map(PathBuf::from)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// An address one can type into a browser: 0.0.0.0 / :: become loopback.
fn printable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}
