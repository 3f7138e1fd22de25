//! The load benchmark's helper (`benches/load/run` drives it; built only as an example, with the
//! testkit, so the production binary never contains the stand-in's signing code).
//!
//! ```text
//! load-kit fixture --dir DIR [--users N] [--listed-users M] [--token-ttl SECS] [--max-secs SECS]
//! load-kit wait-ready --url URL --since-ns EPOCH_NS [--timeout-secs SECS]
//! load-kit first-sight --url URL --tokens FILE [--concurrency N] [--sample-out FILE]
//! load-kit first-sight-matrix [--users N] [--concurrency N] [--rounds N]
//! ```
//!
//! - `fixture`: a throwaway PostgreSQL cluster under `DIR/pg` with a database `clerk_users`, and
//!   the Clerk stand-in on loopback with N users and a session token for each (valid for
//!   `--token-ttl` seconds), plus M generated users without tokens, for `clerk-users sync`
//!   (`benches/sync/run`). Writes `DIR/env` (the service's settings, one `KEY=value` a line),
//!   `DIR/tokens.txt` (one token a line), `DIR/users.txt`, then `DIR/ready`. Runs until SIGTERM or
//!   SIGINT (or `--max-secs`, a safety net), then stops the stand-in and removes the cluster.
//! - `wait-ready`: polls `URL` every 2 ms until it answers 200 and prints the milliseconds since
//!   `--since-ns` (the moment the service was started, nanoseconds since the Unix epoch).
//! - `first-sight`: `GET URL` once with each token, N at a time; every one is a first sight for
//!   the service. Prints the throughput and the statuses; `--sample-out` keeps one 200 body.
//! - `first-sight-matrix`: first-sight throughput of the service (in this process, through the
//!   testkit's `TestApp`) over each way to the database: direct, direct without prepared
//!   statements, over verified TLS (the testkit's TLS-only cluster), and through the testkit's
//!   PgBouncer (transaction mode, prepared statements off, a direct URL for LISTEN). N new users
//!   per variant and round, the variants alternating. Needs the shared test clusters and PgBouncer
//!   that `.ci/test` provides.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clerk_users::testkit::{
    ClerkStandIn, PgCluster, Pooler, TestApp,
    clerk::{now_secs, random_id},
    postgres::shared_tls_cluster,
};
use futures::StreamExt;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("usage: load-kit fixture|wait-ready|first-sight [options]");
        return ExitCode::from(2);
    };
    let opts = match options(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("load-kit: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        match command.as_str() {
            "fixture" => fixture(&opts).await,
            "wait-ready" => wait_ready(&opts).await,
            "first-sight" => first_sight(&opts).await,
            "first-sight-matrix" => first_sight_matrix(&opts).await,
            other => Err(format!("unknown command {other:?}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load-kit {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs.
fn options(args: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut it = args.iter();
    while let Some(name) = it.next() {
        let key = name
            .strip_prefix("--")
            .ok_or_else(|| format!("expected --option, got {name:?}"))?;
        let value = it.next().ok_or_else(|| format!("{name} needs a value"))?;
        out.insert(key.to_string(), value.clone());
    }
    Ok(out)
}

fn required<'a>(opts: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, String> {
    opts.get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("--{name} is required"))
}

fn number(opts: &BTreeMap<String, String>, name: &str, default: u64) -> Result<u64, String> {
    match opts.get(name) {
        Some(v) => v
            .parse()
            .map_err(|_| format!("--{name} takes a number, not {v:?}")),
        None => Ok(default),
    }
}

fn write(path: &Path, contents: &str) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("write {}: {e}", path.display()))
}

async fn fixture(opts: &BTreeMap<String, String>) -> Result<(), String> {
    let dir = PathBuf::from(required(opts, "dir")?);
    let users = number(opts, "users", 1000)?;
    let listed = number(opts, "listed-users", 0)?;
    let ttl = number(opts, "token-ttl", 3600)?;
    let max_secs = number(opts, "max-secs", 1800)?;

    let pg_root = dir.join("pg");
    let cluster = tokio::task::spawn_blocking(move || PgCluster::start(&pg_root, true))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("PostgreSQL: {e}"))?;
    let admin = clerk_users::testkit::postgres::connect(&cluster.url("postgres"))
        .await
        .map_err(|e| format!("connect to PostgreSQL: {e}"))?;
    admin
        .batch_execute("create database clerk_users")
        .await
        .map_err(|e| format!("create database: {e}"))?;
    drop(admin);

    let secret_key = format!("sk_test_{}", random_id(40));
    let clerk = ClerkStandIn::start(&secret_key).await;
    let key = clerk.current_key();
    let header = ClerkStandIn::header_for(&key);
    clerk.generate_users(listed as usize);
    let mut tokens = String::new();
    let mut ids = String::new();
    for _ in 0..users {
        let id = clerk.new_user();
        let mut claims = clerk.claims_for(&id);
        claims["exp"] = (now_secs() + ttl).into();
        // Signed directly with the key: the stand-in need not remember a thousand tokens.
        tokens.push_str(&key.sign(&header, &claims));
        tokens.push('\n');
        ids.push_str(&id);
        ids.push('\n');
    }
    write(&dir.join("tokens.txt"), &tokens)?;
    write(&dir.join("users.txt"), &ids)?;
    write(
        &dir.join("env"),
        &format!(
            // The stand-in has no rate limit: the first-sight phase is not paced.
            "DATABASE_URL={}\nCLERK_SECRET_KEY={}\nCLERK_ISSUER={}\nCLERK_API_URL={}\nCLERK_API_RATE_LIMIT=100000\nPG_DATA={}\n",
            cluster.url("clerk_users"),
            secret_key,
            clerk.issuer(),
            clerk.url(),
            cluster.root().join("data").display(),
        ),
    )?;
    write(&dir.join("ready"), "")?;
    eprintln!(
        "load-kit fixture: PostgreSQL on port {}, Clerk stand-in on {}, {users} users",
        cluster.port(),
        clerk.url()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = tokio::time::sleep(Duration::from_secs(max_secs)) => {
            eprintln!("load-kit fixture: --max-secs reached; stopping");
        }
    }
    eprintln!(
        "load-kit fixture: stopping (Backend API calls served: {})",
        clerk.user_calls()
    );
    drop(clerk);
    // Stops the server and removes its folder.
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(1024)
        .build()
        .map_err(|e| e.to_string())
}

async fn wait_ready(opts: &BTreeMap<String, String>) -> Result<(), String> {
    let url = required(opts, "url")?;
    let since_ns: u128 = required(opts, "since-ns")?
        .parse()
        .map_err(|_| "--since-ns takes a number".to_string())?;
    let timeout = Duration::from_secs(number(opts, "timeout-secs", 60)?);
    let http = client()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(resp) = http
            .get(url)
            .timeout(Duration::from_millis(500))
            .send()
            .await
            && resp.status().is_success()
        {
            let now_ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            println!("{:.1}", (now_ns.saturating_sub(since_ns)) as f64 / 1e6);
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{url} did not answer 200 within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn first_sight(opts: &BTreeMap<String, String>) -> Result<(), String> {
    let url = required(opts, "url")?.to_string();
    let path = required(opts, "tokens")?;
    let concurrency = number(opts, "concurrency", 64)? as usize;
    let tokens: Vec<String> = std::fs::read_to_string(path)
        .map_err(|e| format!("read {path}: {e}"))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let http = client()?;
    let url = Arc::new(url);
    let start = Instant::now();
    let results: Vec<(Result<u16, String>, Duration, Option<String>)> =
        futures::stream::iter(tokens.iter().cloned())
            .map(|token| {
                let http = http.clone();
                let url = url.clone();
                async move {
                    let t = Instant::now();
                    let resp = http.get(url.as_str()).bearer_auth(token).send().await;
                    let out = match resp {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let body = r.text().await.ok();
                            (Ok(status), body)
                        }
                        Err(e) => (Err(e.to_string()), None),
                    };
                    (out.0, t.elapsed(), out.1)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let elapsed = start.elapsed();

    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies: Vec<Duration> = Vec::with_capacity(results.len());
    let mut sample: Option<String> = None;
    for (status, latency, body) in &results {
        let key = match status {
            Ok(s) => s.to_string(),
            Err(_) => "error".to_string(),
        };
        *statuses.entry(key).or_default() += 1;
        latencies.push(*latency);
        if sample.is_none() && *status == Ok(200) {
            sample = body.clone();
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let ok = statuses.get("200").copied().unwrap_or(0);
    println!(
        "first_sight users={} ok={} seconds={:.3} per_sec={:.1} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} statuses={:?}",
        results.len(),
        ok,
        elapsed.as_secs_f64(),
        results.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
        statuses,
    );
    if let (Some(out), Some(body)) = (opts.get("sample-out"), sample) {
        write(Path::new(out), &body)?;
    }
    if ok != results.len() {
        return Err(format!(
            "{} of {} first sights failed",
            results.len() - ok,
            results.len()
        ));
    }
    Ok(())
}

/// One variant of `first-sight-matrix`: a fresh service on a fresh database, `users` new users.
async fn matrix_round(
    variant: &str,
    users: usize,
    concurrency: usize,
) -> Result<(f64, f64), String> {
    // The stand-in has no rate limit, and the pace would hold an sk_test_ key to 100 per 10 s.
    let builder = TestApp::builder()
        .without_log_check()
        .with("clerk_api_rate_limit", "100000");
    let builder = match variant {
        "direct" => builder,
        "direct-unnamed" => builder.with("database_prepared_statements", "false"),
        "tls" => {
            let cluster = tokio::task::spawn_blocking(shared_tls_cluster)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("the TLS cluster: {e}"))?;
            let db = cluster.create_database().await;
            let ca = cluster.ca.display().to_string();
            builder.with(
                "database_url",
                cluster.url(
                    "localhost",
                    &db,
                    &format!("sslmode=verify-full&sslrootcert={ca}"),
                ),
            )
        }
        "pgbouncer" => builder
            .through_pgbouncer(Pooler::WithDirectUrl)
            .with("database_prepared_statements", "false"),
        other => return Err(format!("unknown variant {other}")),
    };
    let app = builder.try_spawn().await.map_err(|e| e.to_string())?;
    let ids: Vec<String> = (0..users).map(|_| app.clerk.new_user()).collect();
    let tokens: Vec<String> = ids.iter().map(|id| app.token_for(id)).collect();
    let app = Arc::new(app);
    let start = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(tokens)
        .map(|token| {
            let app = app.clone();
            async move {
                let t = Instant::now();
                let status = app.get_me(&token).await.status().as_u16();
                (status, t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .map(|(status, took)| {
            if status != 200 {
                eprintln!("{variant}: a first sight answered {status}");
            }
            took
        })
        .collect()
        .await;
    let elapsed = start.elapsed();
    latencies.sort();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).saturating_sub(1))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    Ok((users as f64 / elapsed.as_secs_f64(), p99))
}

async fn first_sight_matrix(opts: &BTreeMap<String, String>) -> Result<(), String> {
    let users = number(opts, "users", 1000)? as usize;
    let concurrency = number(opts, "concurrency", 64)? as usize;
    let rounds = number(opts, "rounds", 2)?;
    let variants = ["direct", "direct-unnamed", "tls", "pgbouncer"];
    let mut figures: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for round in 1..=rounds {
        for variant in variants {
            let (rate, p99) = matrix_round(variant, users, concurrency).await?;
            println!("round {round} {variant:<15} {rate:8.0} users/s  p99 {p99:7.1} ms");
            figures.entry(variant).or_default().push((rate, p99));
        }
    }
    for variant in variants {
        let v = &figures[variant];
        let rate = v.iter().map(|f| f.0).sum::<f64>() / v.len() as f64;
        let p99 = v.iter().map(|f| f.1).sum::<f64>() / v.len() as f64;
        println!(
            "first_sight_matrix variant={variant} users_per_sec={rate:.0} p99_ms={p99:.1} (mean of {rounds})"
        );
    }
    Ok(())
}
