//! The soak test: the real `clerk-users` binary as a child process, a throwaway
//! PostgreSQL and the Clerk stand-in in this process, and many connections mixing known users, new
//! users, users Clerk does not know and invalid tokens, for a bounded time. Meanwhile the stand-in
//! answers 429s, 5xx, slowly, or not at all, its JWKS endpoint fails for a while, and PostgreSQL is
//! stopped and started again in the middle.
//!
//! Afterwards it checks and prints: one row per distinct user and no duplicates (and no row for a
//! user Clerk does not know), every answer either correct (the right user's record, the same id
//! every time) or a documented 401/503 with its headers, no panic and no secret in the service's
//! log, a graceful exit, and the service's resident memory at the end within 10% of where it
//! settled after the warm-up. Exit code 0 when every check passed.
//!
//! The warm-up (a quarter of the run) sends the same traffic and rehearses the Backend API faults
//! (Clerk slow as long as in the fault phase), then runs calm: the allocator keeps the high-water mark of the most requests in flight
//! at once (Clerk slow), so the reference figure is taken once the service has seen that, at the
//! calm end of the warm-up. A leak shows as growth after it; the PostgreSQL restart, the JWKS
//! failures and the second round of faults come only after the reference.
//!
//! `soak/run` builds and runs it (`soak/run` ≈ 5 minutes, `soak/run --short` ≈ 45 s). By hand:
//!
//! ```text
//! soak --service target/release/clerk-users [--secs 300] [--connections 64] [--rps 400]
//!      [--out target/soak]
//! ```

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    path::PathBuf,
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use clerk_users::testkit::{
    ClerkStandIn, Fault, PgCluster, TestDatabase,
    clerk::{now_secs, random_id},
    postgres::TESTKIT_DB_PASSWORD,
};
use serde_json::{Value, json};

struct Opts {
    secs: u64,
    connections: usize,
    rps: u64,
    service: PathBuf,
    out: PathBuf,
    /// PostgreSQL restarts, spread evenly over the fault phase (one, in the middle, by default).
    restarts: u32,
}

fn options() -> Result<Opts, String> {
    let mut opts = Opts {
        secs: 300,
        connections: 64,
        rps: 400,
        service: PathBuf::from("target/release/clerk-users"),
        out: PathBuf::from("target/soak"),
        restarts: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--secs" => opts.secs = number()?.clamp(20, 3_600),
            "--connections" => opts.connections = number()?.clamp(1, 1_000) as usize,
            "--rps" => opts.rps = number()?.clamp(1, 100_000),
            "--service" => opts.service = PathBuf::from(value),
            "--out" => opts.out = PathBuf::from(value),
            "--pg-restarts" => opts.restarts = number()?.clamp(0, 20) as u32,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(opts)
}

/// What a request was meant to exercise, and so which answers are right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    /// A user stored during the warm-up: 200 with their record (or a documented 503).
    Known,
    /// A user never seen: first sight, 200 (or 503 while Clerk or the database fail).
    New,
    /// Four requests at once for one new user: one Clerk call, one row, one id for all.
    Burst,
    /// A valid token for a user Clerk does not have: 401 user-not-found (or 503).
    Ghost,
    /// Invalid tokens: each with the exact 401 code the token rules give it.
    Garbage,
    Expired,
    BadSignature,
    AlgNone,
    OtherIssuer,
    NoToken,
}

impl Kind {
    fn pick() -> Self {
        match fastrand::u32(0..100) {
            0..60 => Self::Known,
            60..72 => Self::New,
            72..75 => Self::Burst,
            75..80 => Self::Ghost,
            80..84 => Self::Garbage,
            84..88 => Self::Expired,
            88..92 => Self::BadSignature,
            92..94 => Self::AlgNone,
            94..97 => Self::OtherIssuer,
            _ => Self::NoToken,
        }
    }

    /// The one 401 code an invalid token must get (never a 503: it needs neither Clerk nor the
    /// database).
    fn invalid_code(self) -> Option<&'static str> {
        Some(match self {
            Self::Garbage => "token-invalid",
            Self::Expired => "token-expired",
            Self::BadSignature => "token-invalid-signature",
            Self::AlgNone => "token-invalid-algorithm",
            Self::OtherIssuer => "token-invalid-issuer",
            Self::NoToken => "token-missing",
            _ => return None,
        })
    }

    /// The 503 codes a request of this kind may get (the README's table).
    fn allowed_503(self) -> &'static [&'static str] {
        match self {
            Self::Known => &["database-unavailable", "request-timeout"],
            Self::New | Self::Burst | Self::Ghost => &[
                "clerk-unavailable",
                "database-unavailable",
                "request-timeout",
            ],
            _ => &[],
        }
    }
}

/// The phase the run is in, for the fault driver and the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    WarmUp,
    Faults,
    Calm,
}

#[derive(Default)]
struct Stats {
    /// (kind, status, code) → count
    answers: BTreeMap<(Kind, u16, String), u64>,
    /// Latency in microseconds by kind, for the figures.
    latency: HashMap<Kind, Vec<u32>>,
    /// First-sight 503s while the breaker should be open, in microseconds.
    outage_503: Vec<u32>,
    wrong: Vec<String>,
    wrong_count: u64,
    /// Known users answered while PostgreSQL was stopped: (all, 200).
    known_while_db_down: (u64, u64),
}

struct Shared {
    clerk: ClerkStandIn,
    base: String,
    started: Instant,
    warm_until: Duration,
    calm_from: Duration,
    end: Duration,
    /// Known users and the token each one uses.
    known: Vec<(String, String)>,
    /// Every user's id (the service's UUID) as first answered: it must never change.
    ids: Mutex<HashMap<String, String>>,
    /// New users asked for (whatever the answer), and those answered 200.
    asked: Mutex<HashSet<String>>,
    /// New users whose first sight got a 503: asked again later.
    retry: Mutex<Vec<(String, String)>>,
    ghosts: Vec<(String, String)>,
    invalid: HashMap<Kind, Vec<String>>,
    stats: Mutex<Stats>,
    /// Set while Clerk's Backend API is down (503 for every lookup).
    outage: AtomicBool,
    /// Set from PostgreSQL's stop until it answers through the service again.
    db_down: AtomicBool,
    requests: AtomicU64,
}

impl Shared {
    fn phase(&self) -> Phase {
        let t = self.started.elapsed();
        if t < self.warm_until {
            Phase::WarmUp
        } else if t < self.calm_from {
            Phase::Faults
        } else {
            Phase::Calm
        }
    }

    fn wrong(&self, what: String) {
        let mut s = self.stats.lock().unwrap();
        s.wrong_count += 1;
        if s.wrong.len() < 20 {
            s.wrong.push(what);
        }
    }
}

/// Claims of a session token valid for an hour (the run never outlives its tokens).
fn long_claims(clerk: &ClerkStandIn, user: &str) -> Value {
    let mut claims = clerk.claims_for(user);
    let now = now_secs();
    claims["exp"] = json!(now + 3_600);
    claims["iat"] = json!(now - 1);
    claims["nbf"] = json!(now - 10);
    claims
}

fn long_token(clerk: &ClerkStandIn, user: &str) -> String {
    clerk.sign(&long_claims(clerk, user))
}

fn invalid_tokens(clerk: &ClerkStandIn) -> HashMap<Kind, Vec<String>> {
    let mut map = HashMap::new();
    let user = format!("user_{}", random_id(27));
    map.insert(
        Kind::Garbage,
        vec![
            "abc.def.ghi".to_string(),
            random_id(300),
            format!("{}.{}", random_id(40), random_id(80)),
            "eyJhbGciOiJSUzI1NiJ9.e30".to_string(),
        ],
    );
    let mut expired = clerk.claims_for(&user);
    expired["exp"] = json!(now_secs() - 600);
    expired["iat"] = json!(now_secs() - 700);
    map.insert(Kind::Expired, vec![clerk.sign(&expired)]);
    let good = long_token(clerk, &user);
    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
    // A character in the middle of the signature: its bits all count.
    let mid = parts[2].len() / 2;
    let flipped = if &parts[2][mid..=mid] == "A" {
        "B"
    } else {
        "A"
    };
    parts[2].replace_range(mid..=mid, flipped);
    map.insert(Kind::BadSignature, vec![clerk.remember(parts.join("."))]);
    let none_header = json!({"alg": "none", "typ": "JWT", "kid": clerk.current_key().kid});
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(none_header.to_string()),
        URL_SAFE_NO_PAD.encode(long_claims(clerk, &user).to_string())
    );
    map.insert(Kind::AlgNone, vec![none]);
    let mut other = long_claims(clerk, &user);
    other["iss"] = json!("https://clerk.other-instance.example");
    map.insert(Kind::OtherIssuer, vec![clerk.sign(&other)]);
    map.insert(Kind::NoToken, vec![String::new()]);
    map
}

/// One request, its answer checked against what its kind allows; the status, unless no answer.
async fn call(
    shared: &Shared,
    http: &reqwest::Client,
    kind: Kind,
    user: Option<&str>,
    token: &str,
) -> Option<u16> {
    let mut req = http.get(format!("{}/users/me", shared.base));
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    let started = Instant::now();
    let sent = req.send().await;
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            shared.wrong(format!("{kind:?}: no answer ({e})"));
            return None;
        }
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap_or_default();
    let took = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let code = json["code"].as_str().unwrap_or("").to_string();

    let mut problems = Vec::new();
    if !headers.contains_key("x-request-id") {
        problems.push("no X-Request-Id".to_string());
    }
    match status {
        200 => match (kind, user) {
            (Kind::Known | Kind::New | Kind::Burst, Some(user)) => {
                let email = format!("{}@example.org", user.to_lowercase());
                if json["clerk_id"] != user || json["email"] != email.as_str() {
                    problems.push(format!("another user's record: {json}"));
                }
                let id = json["id"].as_str().unwrap_or("").to_string();
                let mut ids = shared.ids.lock().unwrap();
                match ids.get(user) {
                    Some(first) if *first != id => {
                        problems.push(format!("id changed from {first} to {id}"))
                    }
                    Some(_) => {}
                    None => {
                        ids.insert(user.to_string(), id);
                    }
                }
            }
            _ => problems.push("200 for a request that must fail".into()),
        },
        401 => {
            let expected = match kind {
                Kind::Ghost => Some("user-not-found"),
                k => k.invalid_code(),
            };
            if expected != Some(code.as_str()) {
                problems.push(format!("401 {code}, expected {expected:?}"));
            }
            if !headers.contains_key("www-authenticate") {
                problems.push("401 without WWW-Authenticate".into());
            }
        }
        503 => {
            if !kind.allowed_503().contains(&code.as_str()) {
                problems.push(format!("503 {code} is not documented for {kind:?}"));
            }
            let retry = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if retry.is_none_or(|r| r < 1) {
                problems.push("503 without a Retry-After".into());
            }
            if code == "clerk-unavailable" && shared.outage.load(Ordering::Relaxed) {
                shared.stats.lock().unwrap().outage_503.push(took);
            }
        }
        other => problems.push(format!("status {other} ({code})")),
    }
    if !problems.is_empty() {
        shared.wrong(format!("{kind:?} {user:?}: {}", problems.join("; ")));
    }
    let mut stats = shared.stats.lock().unwrap();
    if kind == Kind::Known && shared.db_down.load(Ordering::Relaxed) {
        stats.known_while_db_down.0 += 1;
        stats.known_while_db_down.1 += u64::from(status == 200);
    }
    *stats.answers.entry((kind, status, code)).or_default() += 1;
    stats.latency.entry(kind).or_default().push(took);
    Some(status)
}

async fn worker(shared: Arc<Shared>, pace: Duration) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    // Start spread out, not all at once.
    tokio::time::sleep(pace.mul_f64(fastrand::f64())).await;
    while shared.started.elapsed() < shared.end {
        let began = Instant::now();
        let kind = Kind::pick();
        match kind {
            Kind::Known => {
                let (user, token) = &shared.known[fastrand::usize(..shared.known.len())];
                call(&shared, &http, kind, Some(user), token).await;
            }
            Kind::New => {
                let again = if fastrand::bool() {
                    shared.retry.lock().unwrap().pop()
                } else {
                    None
                };
                let (user, token) = again.unwrap_or_else(|| {
                    let user = shared.clerk.new_user();
                    let token = long_token(&shared.clerk, &user);
                    (user, token)
                });
                shared.asked.lock().unwrap().insert(user.clone());
                if call(&shared, &http, kind, Some(&user), &token).await != Some(200) {
                    shared.retry.lock().unwrap().push((user, token));
                }
            }
            Kind::Burst => {
                let user = shared.clerk.new_user();
                shared.asked.lock().unwrap().insert(user.clone());
                let tokens: Vec<String> =
                    (0..4).map(|_| long_token(&shared.clerk, &user)).collect();
                // Each on a connection of its own, all at once.
                let clients: Vec<reqwest::Client> = (0..4)
                    .map(|_| {
                        reqwest::Client::builder()
                            .no_proxy()
                            .timeout(Duration::from_secs(30))
                            .build()
                            .expect("an HTTP client")
                    })
                    .collect();
                futures::future::join_all(
                    clients
                        .iter()
                        .zip(&tokens)
                        .map(|(c, t)| call(&shared, c, kind, Some(&user), t)),
                )
                .await;
            }
            Kind::Ghost => {
                let (user, token) = &shared.ghosts[fastrand::usize(..shared.ghosts.len())];
                call(&shared, &http, kind, Some(user), token).await;
            }
            invalid => {
                let tokens = &shared.invalid[&invalid];
                let token = &tokens[fastrand::usize(..tokens.len())];
                call(&shared, &http, invalid, None, token).await;
            }
        }
        if let Some(rest) = pace.checked_sub(began.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
}

/// What the Clerk stand-in does at a moment of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trouble {
    None,
    /// About one lookup in three: 429 (Retry-After 1), 502, 500, no answer, or 300 ms late.
    Flaky,
    /// Every lookup 503: the breaker opens and first sights fail fast.
    Down,
    /// Every lookup takes 1.5 s: the most requests in flight at once.
    Slow,
    /// The JWKS endpoint answers 500: the last good keys keep working.
    JwksFailing,
}

impl Trouble {
    fn describe(self) -> &'static str {
        match self {
            Self::None => "no faults",
            Self::Flaky => "Clerk flaky: 429 (Retry-After 1), 502, 500, drops, 300 ms",
            Self::Down => "Clerk down: every lookup 503",
            Self::Slow => "Clerk slow: every lookup 1.5 s",
            Self::JwksFailing => "JWKS endpoint failing (500)",
        }
    }

    /// The warm-up rehearses the Backend API faults briefly (so that memory has seen the most
    /// requests in flight before its reference figure is taken, at the warm-up's calm end); the
    /// fault phase runs six segments (flaky, slow, JWKS failing, down, flaky, JWKS failing); the
    /// end is calm.
    fn at(shared: &Shared, t: Duration) -> Self {
        if t < shared.warm_until {
            let f = t.as_secs_f64() / shared.warm_until.as_secs_f64();
            // The slow rehearsal is as long as a fault segment: shorter ones did not reach the
            // high-water mark of the fault phase's slow segment.
            return match f {
                f if (0.15..0.25).contains(&f) => Self::Flaky,
                f if (0.25..0.33).contains(&f) => Self::Down,
                f if (0.33..0.75).contains(&f) => Self::Slow,
                _ => Self::None,
            };
        }
        if t >= shared.calm_from {
            return Self::None;
        }
        let span = shared.calm_from - shared.warm_until;
        // The PostgreSQL restart (in the middle) falls at the start of `Down`. Restarting it while
        // Clerk is slow as well gave the allocator a one-off higher mark (+3 to 4 MiB, flat after;
        // five restarts elsewhere gave none): see the README's "Hardening".
        match ((t - shared.warm_until).as_secs_f64() / span.as_secs_f64() * 6.0) as u32 {
            0 | 4 => Self::Flaky,
            1 => Self::Slow,
            3 => Self::Down,
            _ => Self::JwksFailing,
        }
    }
}

/// Drives the stand-in through the troubles of [`Trouble::at`].
async fn fault_driver(shared: Arc<Shared>) {
    let clerk = &shared.clerk;
    let mut last = None;
    loop {
        let t = shared.started.elapsed();
        if t >= shared.end {
            break;
        }
        let trouble = Trouble::at(&shared, t);
        if Some(trouble) != last {
            last = Some(trouble);
            clerk.set_user_fault(None);
            clerk.set_jwks_fault(None);
            shared
                .outage
                .store(trouble == Trouble::Down, Ordering::Relaxed);
            match trouble {
                Trouble::Down => clerk.set_user_fault(Some(Fault::Status {
                    status: 503,
                    retry_after: None,
                })),
                Trouble::Slow => {
                    clerk.set_user_fault(Some(Fault::Delay(Duration::from_millis(1_500))))
                }
                Trouble::JwksFailing => clerk.set_jwks_fault(Some(Fault::Status {
                    status: 500,
                    retry_after: None,
                })),
                Trouble::None | Trouble::Flaky => {}
            }
            eprintln!(
                "soak: {:>5.1} s  {:?}: {}",
                t.as_secs_f64(),
                shared.phase(),
                trouble.describe()
            );
        }
        if trouble == Trouble::Flaky {
            let faults = (0..3).map(|_| match fastrand::u32(0..6) {
                0 => Fault::Status {
                    status: 429,
                    retry_after: Some(1),
                },
                1 => Fault::Status {
                    status: 502,
                    retry_after: None,
                },
                2 => Fault::Status {
                    status: 500,
                    retry_after: None,
                },
                3 => Fault::Drop,
                _ => Fault::Delay(Duration::from_millis(300)),
            });
            clerk.queue_user_faults(faults);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    clerk.set_user_fault(None);
    clerk.set_jwks_fault(None);
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn percentile(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    f64::from(v[((v.len() - 1) as f64 * p).round() as usize]) / 1000.0
}

struct Service {
    child: Child,
    log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_service(
    opts: &Opts,
    clerk: &ClerkStandIn,
    database_url: &str,
    port: u16,
) -> Result<Service, String> {
    fs::create_dir_all(&opts.out).map_err(|e| format!("{}: {e}", opts.out.display()))?;
    let log = opts.out.join("service.log");
    let file = fs::File::create(&log).map_err(|e| e.to_string())?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let service = fs::canonicalize(&opts.service)
        .map_err(|e| format!("{}: {e} (build it first)", opts.service.display()))?;
    let child = Command::new(service)
        .arg("serve")
        // No config/ and no .env of a developer's: the compiled-in defaults and these.
        .current_dir(&opts.out)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("CLERK_SECRET_KEY", clerk.secret_key())
        .env("CLERK_ISSUER", clerk.issuer())
        .env("CLERK_API_URL", clerk.url())
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("CLERK_API_BACKOFF_MS", "50")
        // The stand-in has no rate limit, and the soak's first sights (300 at the start, then
        // dozens a second) would far exceed an sk_test_ key's 100 per 10 s: no pacing here.
        .env("CLERK_API_RATE_LIMIT", "100000")
        .env("CLERK_HTTP_TIMEOUT_MS", "1000")
        .env("CLERK_API_RETRY_BUDGET_MS", "3000")
        .env("CLERK_JWKS_REFRESH_SECS", "10")
        .env("CLERK_JWKS_MAX_STALE_SECS", "3600")
        .env("CLERK_BREAKER_COOLDOWN_MS", "2000")
        .env("REQUEST_TIMEOUT_MS", "5000")
        // Small caches, so that they are full (settled) by the end of the warm-up.
        .env("USER_CACHE_MAX_ENTRIES", "500")
        .env("TOKEN_CACHE_MAX_ENTRIES", "500")
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", opts.service.display()))?;
    Ok(Service { child, log })
}

async fn wait_ready(base: &str, service: &mut Service) -> Result<(), String> {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..300 {
        if let Ok(Some(status)) = service.child.try_wait() {
            return Err(format!("the service exited at start ({status})"));
        }
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the service did not become ready within 30 s".into())
}

/// SIGTERM, then wait for a graceful exit (at most 20 s).
fn stop(service: &mut Service) -> Result<std::process::ExitStatus, String> {
    let pid = service.child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = service.child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = service.child.kill();
            return Err("no exit within 20 s of SIGTERM".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Checks {
    passed: u32,
    failed: u32,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str) {
        if ok {
            self.passed += 1;
            println!("  ok    {what}");
        } else {
            self.failed += 1;
            println!("  FAIL  {what}");
        }
    }
}

async fn run(opts: Opts) -> Result<Checks, String> {
    let total = Duration::from_secs(opts.secs);
    let warm_until = Duration::from_secs((opts.secs / 4).max(15));
    let calm_from = total - Duration::from_secs((opts.secs / 10).max(8));
    let restarts: Vec<Duration> = (1..=opts.restarts)
        .map(|i| warm_until + (calm_from - warm_until) * i / (opts.restarts + 1))
        .collect();

    // PostgreSQL of its own (it is stopped and started again), under the temporary folder.
    let pg_root = std::env::temp_dir().join(format!("clerk-users-soak-{}", std::process::id()));
    let cluster = {
        let root = pg_root.clone();
        tokio::task::spawn_blocking(move || PgCluster::start(&root, true))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("PostgreSQL: {e}"))?
    };
    let db = TestDatabase::create(&cluster.url("postgres")).await;
    let clerk = ClerkStandIn::start(&format!("sk_test_{}", random_id(40))).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut service = start_service(&opts, &clerk, &db.url, port)?;
    let pid = service.child.id();
    wait_ready(&base, &mut service).await?;
    println!(
        "soak: {} s ({} s warm-up, faults until {} s, PostgreSQL restarted at {:?} s), {} connections, \
         about {} requests/s, service pid {pid}, log {}",
        opts.secs,
        warm_until.as_secs(),
        calm_from.as_secs(),
        restarts.iter().map(Duration::as_secs).collect::<Vec<_>>(),
        opts.connections,
        opts.rps,
        service.log.display()
    );

    let known: Vec<(String, String)> = (0..300)
        .map(|_| {
            let user = clerk.new_user();
            let token = long_token(&clerk, &user);
            (user, token)
        })
        .collect();
    let ghosts = (0..20)
        .map(|_| {
            let user = format!("user_{}", random_id(27));
            let token = long_token(&clerk, &user);
            (user, token)
        })
        .collect();
    let invalid = invalid_tokens(&clerk);
    let shared = Arc::new(Shared {
        clerk,
        base: base.clone(),
        started: Instant::now(),
        warm_until,
        calm_from,
        end: total,
        known,
        ids: Mutex::default(),
        asked: Mutex::default(),
        retry: Mutex::default(),
        ghosts,
        invalid,
        stats: Mutex::default(),
        outage: AtomicBool::new(false),
        db_down: AtomicBool::new(false),
        requests: AtomicU64::new(0),
    });

    // The known users' first sight, before the clock of the phases matters.
    {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let chunks: Vec<Vec<(String, String)>> =
            shared.known.chunks(30).map(|c| c.to_vec()).collect();
        for chunk in chunks {
            futures::future::join_all(
                chunk
                    .iter()
                    .map(|(u, t)| call(&shared, &http, Kind::Known, Some(u), t)),
            )
            .await;
        }
    }

    // Resident memory, once a second.
    let samples: Arc<Mutex<Vec<(Duration, Phase, u64)>>> = Arc::default();
    let sampler = {
        let shared = shared.clone();
        let samples = samples.clone();
        tokio::spawn(async move {
            while let Some(rss) = rss_kib(pid) {
                samples
                    .lock()
                    .unwrap()
                    .push((shared.started.elapsed(), shared.phase(), rss));
                if shared.started.elapsed() >= shared.end {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    // PostgreSQL stopped and started again in the middle of the fault phase (or at evenly spread
    // moments, with --pg-restarts N).
    let restart = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut cluster = cluster;
            let mut recovered = Vec::new();
            for at in restarts {
                tokio::time::sleep(at.saturating_sub(shared.started.elapsed())).await;
                eprintln!(
                    "soak: {:>5.1} s  PostgreSQL stopped",
                    shared.started.elapsed().as_secs_f64()
                );
                shared.db_down.store(true, Ordering::Relaxed);
                cluster = tokio::task::spawn_blocking(move || cluster.stop().map(|()| cluster))
                    .await
                    .unwrap()
                    .map_err(|e| format!("stopping PostgreSQL: {e}"))?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                let started_at = Instant::now();
                cluster =
                    tokio::task::spawn_blocking(move || cluster.start_server().map(|()| cluster))
                        .await
                        .unwrap()
                        .map_err(|e| format!("starting PostgreSQL: {e}"))?;
                eprintln!(
                    "soak: {:>5.1} s  PostgreSQL started again",
                    shared.started.elapsed().as_secs_f64()
                );
                // How long until the database answers through the service again.
                let http = reqwest::Client::builder().no_proxy().build().unwrap();
                let mut back = None;
                for _ in 0..400 {
                    let resp = http
                        .get(format!("{}/db-test/ping", shared.base))
                        .send()
                        .await;
                    if resp.is_ok_and(|r| r.status() == 200) {
                        back = Some(started_at.elapsed());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                shared.db_down.store(false, Ordering::Relaxed);
                recovered.push(back);
            }
            Ok::<_, String>((cluster, recovered))
        })
    };

    let faults = tokio::spawn(fault_driver(shared.clone()));
    let pace = Duration::from_secs_f64(opts.connections as f64 / opts.rps as f64);
    let workers: Vec<_> = (0..opts.connections)
        .map(|_| tokio::spawn(worker(shared.clone(), pace)))
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let _ = faults.await;
    let _ = sampler.await;
    let (cluster, recovered) = restart.await.map_err(|e| e.to_string())??;
    let elapsed = shared.started.elapsed();
    let final_rss = rss_kib(pid).unwrap_or(0);

    let status = stop(&mut service);
    let log = fs::read_to_string(&service.log).unwrap_or_default();

    // The database afterwards.
    let client = db.connect().await;
    let rows = client
        .query("select clerk_id, id::text from users", &[])
        .await
        .map_err(|e| format!("reading users: {e}"))?;
    let duplicates: i64 = client
        .query_one(
            "select count(*) from (select clerk_id from users group by clerk_id having count(*) > 1) d",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let stored: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    drop(client);
    drop(cluster);

    // ---- figures ----
    let stats = std::mem::take(&mut *shared.stats.lock().unwrap());
    let requests = shared.requests.load(Ordering::Relaxed);
    println!(
        "\nrequests: {requests} in {:.0} s ({:.0}/s)",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    println!("answers (kind, status, code: count):");
    for ((kind, status, code), n) in &stats.answers {
        println!("  {:<12} {status} {code:<26} {n:>8}", format!("{kind:?}"));
    }
    let mut latency = stats.latency;
    println!("latency (ms, p50 / p99 / max):");
    let mut kinds: Vec<Kind> = latency.keys().copied().collect();
    kinds.sort();
    for kind in kinds {
        let v = latency.get_mut(&kind).unwrap();
        println!(
            "  {:<12} {:>8.1} {:>8.1} {:>8.1}   ({} answers)",
            format!("{kind:?}"),
            percentile(v, 0.5),
            percentile(v, 0.99),
            percentile(v, 1.0),
            v.len()
        );
    }
    let (down_known, down_known_ok) = stats.known_while_db_down;
    println!(
        "known users while PostgreSQL was down: {down_known_ok} of {down_known} answered 200 \
         (from the user cache)"
    );
    let mut outage = stats.outage_503;
    println!(
        "first-sight 503s while Clerk was down: {} (p50 {:.1} ms, p99 {:.1} ms)",
        outage.len(),
        percentile(&mut outage, 0.5),
        percentile(&mut outage, 0.99)
    );
    for back in &recovered {
        match back {
            Some(d) => println!(
                "database back (ping 200) {:.2} s after PostgreSQL was started",
                d.as_secs_f64()
            ),
            None => println!("database ping never recovered"),
        }
    }

    let samples = samples.lock().unwrap().clone();
    let warm: Vec<u64> = samples
        .iter()
        .filter(|(t, p, _)| *p == Phase::WarmUp && *t + Duration::from_secs(5) >= warm_until)
        .map(|s| s.2)
        .collect();
    let end: Vec<u64> = samples
        .iter()
        .rev()
        .take(5)
        .map(|s| s.2)
        .chain(std::iter::once(final_rss))
        .collect();
    let settled = median(warm);
    let at_end = median(end);
    let peak = samples.iter().map(|s| s.2).max().unwrap_or(0);
    let middle = median(
        samples
            .iter()
            .filter(|(t, _, _)| {
                let mid = warm_until + (calm_from - warm_until) / 2;
                *t + Duration::from_secs(3) >= mid && *t <= mid + Duration::from_secs(3)
            })
            .map(|s| s.2)
            .collect(),
    );
    let change = (at_end as f64 - settled as f64) / settled.max(1) as f64 * 100.0;
    println!(
        "resident memory (MiB): settled after warm-up {:.1}, in the middle of the faults {:.1}, \
         peak {:.1}, at the end {:.1} ({change:+.1}%)",
        settled as f64 / 1024.0,
        middle as f64 / 1024.0,
        peak as f64 / 1024.0,
        at_end as f64 / 1024.0,
    );
    fs::write(
        opts.out.join("rss.csv"),
        samples
            .iter()
            .map(|(t, p, r)| format!("{:.0},{p:?},{r}\n", t.as_secs_f64()))
            .collect::<String>(),
    )
    .ok();

    let ids = shared.ids.lock().unwrap().clone();
    let asked = shared.asked.lock().unwrap().clone();
    let known: HashSet<&String> = shared.known.iter().map(|(u, _)| u).collect();
    let ghosts: HashSet<&String> = shared.ghosts.iter().map(|(u, _)| u).collect();
    let served_new = ids.keys().filter(|u| !known.contains(u)).count();
    let missing: Vec<&String> = ids.keys().filter(|u| !stored.contains_key(*u)).collect();
    let moved: Vec<&String> = ids
        .iter()
        .filter(|(u, id)| stored.get(*u).is_some_and(|s| s != *id))
        .map(|(u, _)| u)
        .collect();
    let strangers: Vec<&String> = stored
        .keys()
        .filter(|u| !known.contains(u) && !asked.contains(*u))
        .collect();
    let ghost_rows = stored.keys().filter(|u| ghosts.contains(u)).count();
    println!(
        "users: {} known, {} new asked for, {} new answered 200; rows {} (duplicates {duplicates})",
        known.len(),
        asked.len(),
        served_new,
        stored.len()
    );

    let panics = log.lines().filter(|l| l.contains("panicked")).count();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    let mut secrets = vec![
        shared.clerk.secret_key().to_string(),
        TESTKIT_DB_PASSWORD.to_string(),
    ];
    let minted = shared.clerk.minted_tokens();
    for token in minted.iter().step_by((minted.len() / 500).max(1)) {
        if let Some(sig) = token.rsplit('.').next().filter(|s| s.len() >= 16) {
            secrets.push(sig.to_string());
        }
    }
    let leaked = secrets.iter().filter(|s| log.contains(s.as_str())).count();
    println!(
        "log: {} lines, {panics} panics, {} at ERROR{}",
        log.lines().count(),
        errors.len(),
        errors
            .first()
            .map(|l| format!(" (first: {})", l.chars().take(200).collect::<String>()))
            .unwrap_or_default()
    );
    if !stats.wrong.is_empty() {
        println!(
            "wrong answers ({} in all; the first {}):",
            stats.wrong_count,
            stats.wrong.len()
        );
        for w in &stats.wrong {
            println!("  {w}");
        }
    }

    println!("\nchecks:");
    let mut checks = Checks {
        passed: 0,
        failed: 0,
    };
    checks.check(
        stats.wrong_count == 0,
        &format!(
            "every answer correct or a documented 401/503 ({} not)",
            stats.wrong_count
        ),
    );
    checks.check(
        down_known == 0 || down_known_ok * 100 >= down_known * 99,
        &format!(
            "known users keep getting 200 while PostgreSQL is down ({down_known_ok} of {down_known})"
        ),
    );
    checks.check(duplicates == 0, "no user has two rows");
    checks.check(
        missing.is_empty() && moved.is_empty(),
        &format!(
            "every user answered 200 has exactly its row, with the id it was given ({} missing, {} changed)",
            missing.len(),
            moved.len()
        ),
    );
    checks.check(
        strangers.is_empty() && ghost_rows == 0,
        &format!(
            "no row for anyone not asked for, nor for users Clerk does not know ({} + {ghost_rows})",
            strangers.len()
        ),
    );
    checks.check(
        known.iter().all(|u| ids.contains_key(*u)) && served_new > 0,
        "every known user and some new users were served",
    );
    checks.check(panics == 0, "no panic in the service's log");
    checks.check(leaked == 0, "no secret key, password or token in the log");
    checks.check(
        matches!(status, Ok(s) if s.success()),
        &format!("graceful exit on SIGTERM ({status:?})"),
    );
    checks.check(
        settled > 0 && change.abs() <= 10.0,
        &format!(
            "resident memory at the end within 10% of the settled warm-up figure ({change:+.1}%)"
        ),
    );
    checks.check(
        recovered.iter().all(Option::is_some),
        "the database came back by itself",
    );
    drop(db);
    let _ = fs::remove_dir_all(&pg_root);
    Ok(checks)
}

fn main() -> ExitCode {
    let opts = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(opts)) {
        Ok(checks) => {
            println!("\nsoak: {} passed, {} failed", checks.passed, checks.failed);
            if checks.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}
