//! A Clerk stand-in over real HTTP on loopback: JWKS (`/.well-known/jwks.json`, `/v1/jwks`), the
//! Backend API's `GET /v1/users/{id}`, `GET /v1/users` (the list) and `GET /v1/users/count` with
//! Clerk's JSON and error shapes, and session tokens signed with its own RS256 keys. It can be
//! told to fail, slow down, rotate keys or limit its rate as Clerk does (429 with `Retry-After`),
//! and counts its calls.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::{
    rand::SystemRandom,
    rsa::{KeyPair, KeySize, PublicKeyComponents},
    signature::{KeyPair as _, RSA_PKCS1_SHA256},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use poem::{
    Endpoint, EndpointExt, Request, Response, Route, Server, get, handler,
    http::StatusCode,
    listener::{Acceptor, TcpAcceptor},
    web::{Data, Path, Query},
};
use serde_json::{Value, json};

/// One RSA signing key with its `kid`.
pub struct SigningKey {
    pub kid: String,
    pair: KeyPair,
}

impl SigningKey {
    /// A fresh 2048-bit key. `kid` in Clerk's shape: the instance id.
    pub fn generate() -> Self {
        Self::generate_with_kid(&format!("ins_{}", random_id(27)))
    }

    pub fn generate_with_kid(kid: &str) -> Self {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
        Self {
            kid: kid.to_string(),
            pair,
        }
    }

    /// The public key as a JWK, as Clerk publishes it.
    pub fn jwk(&self) -> Value {
        let c = PublicKeyComponents::<Vec<u8>>::from(self.pair.public_key());
        json!({"use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256",
               "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e)})
    }

    /// The public key as a PEM `PUBLIC KEY` (SPKI), as `CLERK_JWT_KEY` takes it.
    pub fn public_pem(&self) -> String {
        use aws_lc_rs::encoding::AsDer;
        let der = self.pair.public_key().as_der().expect("SPKI encoding");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// RS256 over `header.payload`, both given as JSON values: any header, any claims.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        self.sign_input(&signing_input)
    }

    /// RS256 over a signing input given as text (for hand-made payloads such as duplicate keys).
    pub fn sign_input(&self, signing_input: &str) -> String {
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .expect("RSA signing");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// A random string of `[a-zA-Z0-9]`, like the tail of Clerk's ids.
pub fn random_id(len: usize) -> String {
    (0..len).map(|_| fastrand::alphanumeric()).collect()
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What the stand-in answers instead of the real thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (and Clerk's error JSON); with `Retry-After` when given.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Close the connection without answering.
    Drop,
    /// Answer normally (in a queue, to let some requests through before a fault).
    Pass,
}

#[derive(Default)]
struct Faults {
    /// Served first, one per request, before `always`.
    queue: VecDeque<Fault>,
    always: Option<Fault>,
}

impl Faults {
    fn next(&mut self) -> Option<Fault> {
        self.queue.pop_front().or_else(|| self.always.clone())
    }
}

#[derive(Default)]
struct Counters {
    jwks: AtomicUsize,
    users: AtomicUsize,
    lists: AtomicUsize,
    counts: AtomicUsize,
    rate_limited: AtomicUsize,
    all: AtomicUsize,
}

/// The users, by id and in creation order (`created_at`, then id), as the list walks them.
#[derive(Default)]
struct Directory {
    by_id: HashMap<String, Value>,
    by_created: BTreeSet<(i64, String)>,
}

impl Directory {
    fn insert(&mut self, id: String, user: Value) {
        self.remove(&id);
        self.by_created
            .insert((user["created_at"].as_i64().unwrap_or(0), id.clone()));
        self.by_id.insert(id, user);
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            self.by_created
                .remove(&(old["created_at"].as_i64().unwrap_or(0), id.to_string()));
        }
    }
}

/// Clerk's limit per instance: at most `limit` Backend API requests in any `window`.
struct RateLimit {
    limit: usize,
    window: Duration,
    /// When the requests of the current window arrived, oldest first.
    arrivals: VecDeque<Instant>,
}

impl RateLimit {
    /// `None` when the request may go; else the whole seconds until it could.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        while self
            .arrivals
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.arrivals.pop_front();
        }
        if self.arrivals.len() < self.limit {
            self.arrivals.push_back(now);
            return None;
        }
        let free_at = self.arrivals[0] + self.window;
        let wait = free_at.duration_since(now);
        Some((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
    }
}

struct State {
    issuer: String,
    secret_key: String,
    /// The first key signs; the JWKS publishes all of them.
    keys: Mutex<Vec<Arc<SigningKey>>>,
    users: Mutex<Directory>,
    rate_limit: Mutex<Option<RateLimit>>,
    list_faults: Mutex<Faults>,
    user_calls: Mutex<HashMap<String, usize>>,
    user_faults: Mutex<Faults>,
    jwks_faults: Mutex<Faults>,
    counters: Counters,
    /// The `Authorization` header of each JWKS request (None when absent).
    jwks_authorization: Mutex<Vec<Option<String>>>,
    /// Every token minted, so tests can check that none reaches a log.
    minted: Mutex<Vec<String>>,
}

/// The running stand-in. Dropping it stops the server.
pub struct ClerkStandIn {
    addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ClerkStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn clerk_error(status: u16, code: &str, message: &str) -> Response {
    let body = json!({
        "errors": [{"message": message, "long_message": message, "code": code, "meta": {}}],
        "clerk_trace_id": random_id(32),
    });
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .body(body.to_string())
}

async fn apply_fault(fault: Option<Fault>) -> Option<Response> {
    match fault? {
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Fault::Status {
            status,
            retry_after,
        } => {
            let (code, msg) = match status {
                429 => ("too_many_requests", "Too many requests"),
                401 => ("authentication_invalid", "Unauthorized request"),
                404 => ("resource_not_found", "not found"),
                _ => ("internal_clerk_error", "Oops, something went wrong"),
            };
            let mut resp = clerk_error(status, code, msg);
            if let Some(r) = retry_after {
                resp.headers_mut().insert("retry-after", r.into());
            }
            Some(resp)
        }
        // Never answering is the closest a handler gets to a dropped connection; the client's
        // timeout ends it.
        Fault::Drop => {
            std::future::pending::<()>().await;
            None
        }
        Fault::Pass => None,
    }
}

/// Clerk's 429 when the instance's rate limit is spent, as `Retry-After` in seconds.
fn rate_limited(state: &State) -> Option<Response> {
    let retry_after = state
        .rate_limit
        .lock()
        .unwrap()
        .as_mut()?
        .admit(Instant::now())?;
    state.counters.rate_limited.fetch_add(1, Ordering::SeqCst);
    let mut resp = clerk_error(429, "too_many_requests", "Too many requests");
    resp.headers_mut().insert("retry-after", retry_after.into());
    Some(resp)
}

fn bearer_ok(req: &Request, secret: &str) -> bool {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {secret}"))
}

async fn jwks_response(state: &State) -> Response {
    state.counters.jwks.fetch_add(1, Ordering::SeqCst);
    let fault = state.jwks_faults.lock().unwrap().next();
    if let Some(resp) = apply_fault(fault).await {
        return resp;
    }
    let keys: Vec<Value> = state.keys.lock().unwrap().iter().map(|k| k.jwk()).collect();
    Response::builder()
        .content_type("application/json")
        .body(json!({ "keys": keys }).to_string())
}

#[handler]
async fn well_known_jwks(req: &Request, state: Data<&Arc<State>>) -> Response {
    state.jwks_authorization.lock().unwrap().push(
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
    );
    jwks_response(&state).await
}

#[handler]
async fn api_jwks(req: &Request, state: Data<&Arc<State>>) -> Response {
    state.jwks_authorization.lock().unwrap().push(
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
    );
    if !bearer_ok(req, &state.secret_key) {
        return clerk_error(401, "authentication_invalid", "Unauthorized request");
    }
    jwks_response(&state).await
}

#[handler]
async fn get_user(req: &Request, Path(id): Path<String>, state: Data<&Arc<State>>) -> Response {
    state.counters.users.fetch_add(1, Ordering::SeqCst);
    *state
        .user_calls
        .lock()
        .unwrap()
        .entry(id.clone())
        .or_default() += 1;
    if !bearer_ok(req, &state.secret_key) {
        return clerk_error(401, "authentication_invalid", "Unauthorized request");
    }
    if let Some(resp) = rate_limited(&state) {
        return resp;
    }
    let fault = state.user_faults.lock().unwrap().next();
    if let Some(resp) = apply_fault(fault).await {
        return resp;
    }
    match state.users.lock().unwrap().by_id.get(&id) {
        Some(user) => Response::builder()
            .content_type("application/json")
            .body(user.to_string()),
        None => clerk_error(
            404,
            "resource_not_found",
            &format!("No user was found with id {id}"),
        ),
    }
}

/// The query of `GET /v1/users` that the stand-in reads (others, such as `email_address`, are
/// ignored).
#[derive(serde::Deserialize)]
struct ListQuery {
    limit: Option<String>,
    offset: Option<String>,
    order_by: Option<String>,
    starting_after: Option<String>,
}

fn invalid_param(message: &str) -> Response {
    clerk_error(422, "form_param_value_invalid", message)
}

/// `GET /v1/users`: a JSON array (no wrapper), `limit` 1–500 (default 10), `order_by` with a `+`
/// or `-` prefix (default `-created_at`), `offset`, or `starting_after` (an id) with a
/// `created_at` ordering and no `offset`; anything else a 422 in Clerk's error shape.
#[handler]
async fn list_users(req: &Request, query: Query<ListQuery>, state: Data<&Arc<State>>) -> Response {
    state.counters.lists.fetch_add(1, Ordering::SeqCst);
    if !bearer_ok(req, &state.secret_key) {
        return clerk_error(401, "authentication_invalid", "Unauthorized request");
    }
    if let Some(resp) = rate_limited(&state) {
        return resp;
    }
    let fault = state.list_faults.lock().unwrap().next();
    if let Some(resp) = apply_fault(fault).await {
        return resp;
    }
    let limit = match query.limit.as_deref().map(str::parse::<usize>) {
        None => 10,
        Some(Ok(n @ 1..=500)) => n,
        Some(_) => return invalid_param("limit must be an integer between 1 and 500"),
    };
    let offset = match query.offset.as_deref().map(str::parse::<usize>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return invalid_param("offset must be a non-negative integer"),
    };
    let order_by = query.order_by.as_deref().unwrap_or("-created_at");
    let (descending, field) = match order_by.as_bytes().first() {
        Some(b'-') => (true, &order_by[1..]),
        Some(b'+') => (false, &order_by[1..]),
        _ => (false, order_by),
    };
    const FIELDS: [&str; 7] = [
        "created_at",
        "updated_at",
        "last_sign_in_at",
        "last_active_at",
        "first_name",
        "last_name",
        "username",
    ];
    if !FIELDS.contains(&field) {
        return invalid_param(&format!("order_by: unsupported field {field:?}"));
    }
    if query.starting_after.is_some() && (field != "created_at" || offset.is_some()) {
        return invalid_param(
            "starting_after can only be used with a created_at ordering and without offset",
        );
    }
    let users = state.users.lock().unwrap();
    let ids: Vec<&String> = if field == "created_at" {
        let ordered: Box<dyn Iterator<Item = &(i64, String)>> = match &query.starting_after {
            Some(after) => {
                let Some(user) = users.by_id.get(after) else {
                    return invalid_param(&format!("starting_after: no user with id {after}"));
                };
                let at = (user["created_at"].as_i64().unwrap_or(0), after.clone());
                if descending {
                    Box::new(users.by_created.range(..at).rev())
                } else {
                    Box::new(
                        users
                            .by_created
                            .range((std::ops::Bound::Excluded(at), std::ops::Bound::Unbounded)),
                    )
                }
            }
            None if descending => Box::new(users.by_created.iter().rev()),
            None => Box::new(users.by_created.iter()),
        };
        ordered
            .skip(offset.unwrap_or(0))
            .take(limit)
            .map(|(_, id)| id)
            .collect()
    } else {
        let mut all: Vec<(&String, &Value)> = users.by_id.iter().collect();
        let key = |v: &Value| v[field].clone();
        all.sort_by(|a, b| {
            let order = compare(&key(a.1), &key(b.1)).then_with(|| a.0.cmp(b.0));
            if descending { order.reverse() } else { order }
        });
        all.into_iter()
            .skip(offset.unwrap_or(0))
            .take(limit)
            .map(|(id, _)| id)
            .collect()
    };
    let mut body = String::with_capacity(ids.len() * 2048 + 2);
    body.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&users.by_id[*id].to_string());
    }
    body.push(']');
    Response::builder()
        .content_type("application/json")
        .body(body)
}

/// JSON values of one field, ordered: null first, then numbers or strings.
fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        _ => std::cmp::Ordering::Equal,
    }
}

/// `GET /v1/users/count`: `{"object": "total_count", "total_count": N}`.
#[handler]
async fn count_users(req: &Request, state: Data<&Arc<State>>) -> Response {
    state.counters.counts.fetch_add(1, Ordering::SeqCst);
    if !bearer_ok(req, &state.secret_key) {
        return clerk_error(401, "authentication_invalid", "Unauthorized request");
    }
    if let Some(resp) = rate_limited(&state) {
        return resp;
    }
    let total = state.users.lock().unwrap().by_id.len();
    Response::builder()
        .content_type("application/json")
        .body(json!({"object": "total_count", "total_count": total}).to_string())
}

/// Only on a stand-in started with [`ClerkStandIn::start_dev`] (the local run, never the tests):
/// a fresh session token for any `user_…` id, as plain text, so that `curl` can fetch one. In a
/// real setup Clerk's frontend SDK plays this part (`await Clerk.session.getToken()`).
#[handler]
async fn dev_token(Path(user): Path<String>, state: Data<&Arc<State>>) -> Response {
    if !user.starts_with("user_") || user.len() > 64 {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .content_type("text/plain")
            .body("expected /dev/token/user_...\n");
    }
    let key = state.keys.lock().unwrap()[0].clone();
    let token = key.sign(
        &ClerkStandIn::header_for(&key),
        &session_claims(&state.issuer, &user),
    );
    state.minted.lock().unwrap().push(token.clone());
    Response::builder().content_type("text/plain").body(token)
}

/// The claims of a fresh, valid session token, as Clerk mints them (v2): valid for 60 seconds.
fn session_claims(issuer: &str, user_id: &str) -> Value {
    let now = now_secs();
    json!({
        "azp": "http://localhost:5173",
        "exp": now + 60, "iat": now, "nbf": now - 10,
        "iss": issuer,
        "jti": random_id(20),
        "sid": format!("sess_{}", random_id(27)),
        "sub": user_id,
        "v": 2, "fva": [7, -1], "pla": "u:free", "fea": "o:dashboard"
    })
}

/// A user as Clerk's Backend API returns it (`GET /v1/users/{id}`), with the fields it has today.
pub fn clerk_user_json(
    id: &str,
    first_name: Option<&str>,
    last_name: Option<&str>,
    email: Option<&str>,
) -> Value {
    let now_ms = (now_secs() * 1000) as i64;
    let primary = format!("idn_{}", random_id(27));
    let mut emails = vec![json!({
        // A secondary address listed first: the primary must be chosen by id, not by position.
        "id": format!("idn_{}", random_id(27)), "object": "email_address",
        "email_address": format!("old-{}@example.net", random_id(6).to_lowercase()),
        "reserved": false, "linked_to": [],
        "verification": {"object": "verification_otp", "status": "verified", "strategy": "email_code",
                          "attempts": 1, "expire_at": now_ms},
        "created_at": now_ms, "updated_at": now_ms
    })];
    if let Some(email) = email {
        emails.push(json!({
            "id": primary, "object": "email_address", "email_address": email, "reserved": false,
            "linked_to": [], "verification": {"object": "verification_otp", "status": "verified",
            "strategy": "email_code", "attempts": 1, "expire_at": now_ms},
            "created_at": now_ms, "updated_at": now_ms
        }));
    }
    json!({
        "id": id, "object": "user", "username": null, "first_name": first_name, "last_name": last_name,
        "image_url": format!("https://img.clerk.com/{}", random_id(20)), "has_image": true,
        "primary_email_address_id": email.map(|_| primary), "primary_phone_number_id": null,
        "primary_web3_wallet_id": null, "email_addresses": emails, "phone_numbers": [],
        "web3_wallets": [], "passkeys": [], "external_accounts": [], "saml_accounts": [],
        "enterprise_accounts": [], "public_metadata": {}, "private_metadata": {}, "unsafe_metadata": {},
        "external_id": null, "locale": null, "banned": false, "locked": false, "lockout_expires_in_seconds": null,
        "verification_attempts_remaining": 100, "password_enabled": true, "two_factor_enabled": false,
        "totp_enabled": false, "backup_code_enabled": false, "mfa_enabled_at": null, "mfa_disabled_at": null,
        "legal_accepted_at": null, "create_organization_enabled": true, "create_organizations_limit": null,
        "delete_self_enabled": true, "last_sign_in_at": now_ms, "last_active_at": now_ms,
        "created_at": now_ms - 60_000, "updated_at": now_ms
    })
}

impl ClerkStandIn {
    /// Start on `127.0.0.1:0` with one fresh signing key, accepting `secret_key`.
    pub async fn start(secret_key: &str) -> Self {
        Self::start_with_key(secret_key, SigningKey::generate()).await
    }

    pub async fn start_with_key(secret_key: &str, key: SigningKey) -> Self {
        Self::start_on("127.0.0.1:0", secret_key, key).await
    }

    /// Start on a given address (the local run uses a fixed port so its URL can be printed).
    pub async fn start_on(addr: &str, secret_key: &str, key: SigningKey) -> Self {
        Self::start_with_routes(addr, secret_key, key, false).await
    }

    /// For the local run only (`clerk-users-dev`): [`ClerkStandIn::start_on`] plus
    /// `GET /dev/token/{user_id}`, which hands out a fresh session token as plain text.
    pub async fn start_dev(addr: &str, secret_key: &str, key: SigningKey) -> Self {
        Self::start_with_routes(addr, secret_key, key, true).await
    }

    async fn start_with_routes(addr: &str, secret_key: &str, key: SigningKey, dev: bool) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the Clerk stand-in");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            issuer: format!("http://{addr}"),
            secret_key: secret_key.to_string(),
            keys: Mutex::new(vec![Arc::new(key)]),
            users: Mutex::default(),
            rate_limit: Mutex::default(),
            list_faults: Mutex::default(),
            user_calls: Mutex::default(),
            user_faults: Mutex::default(),
            jwks_faults: Mutex::default(),
            counters: Counters::default(),
            jwks_authorization: Mutex::default(),
            minted: Mutex::default(),
        });
        let mut routes = Route::new()
            .at("/.well-known/jwks.json", get(well_known_jwks))
            .at("/v1/jwks", get(api_jwks))
            .at("/v1/users", get(list_users))
            .at("/v1/users/count", get(count_users))
            .at("/v1/users/:id", get(get_user));
        if dev {
            routes = routes.at("/dev/token/:user", get(dev_token));
        }
        let app = routes
            .around(|ep, req| async move {
                if let Some(s) = req.data::<Arc<State>>() {
                    s.counters.all.fetch_add(1, Ordering::SeqCst);
                }
                ep.call(req).await
            })
            .data(state.clone());
        let acceptor = TcpAcceptor::from_tokio(listener).expect("acceptor");
        let _ = acceptor.local_addr();
        let server = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self {
            addr,
            state,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the issuer, the JWKS host and the Backend API base at once.
    pub fn url(&self) -> String {
        self.state.issuer.clone()
    }

    /// The Backend API secret key the stand-in accepts.
    pub fn secret_key(&self) -> &str {
        &self.state.secret_key
    }

    pub fn issuer(&self) -> String {
        self.state.issuer.clone()
    }

    /// The key that signs new tokens.
    pub fn current_key(&self) -> Arc<SigningKey> {
        self.state.keys.lock().unwrap()[0].clone()
    }

    /// A new key signs from now on; the old keys stay published when `keep_old`.
    pub fn rotate_key(&self, keep_old: bool) -> Arc<SigningKey> {
        self.rotate_to(SigningKey::generate(), keep_old)
    }

    pub fn rotate_to(&self, key: SigningKey, keep_old: bool) -> Arc<SigningKey> {
        let key = Arc::new(key);
        let mut keys = self.state.keys.lock().unwrap();
        if !keep_old {
            keys.clear();
        }
        keys.insert(0, key.clone());
        key
    }

    /// Add a user that `/v1/users/{id}` will return. Returns the id.
    pub fn add_user(&self, user: Value) -> String {
        let id = user["id"].as_str().expect("a user has an id").to_string();
        self.state.users.lock().unwrap().insert(id.clone(), user);
        id
    }

    /// Add many users at once, taken from `users` (the ids they carry).
    pub fn add_users(&self, users: impl IntoIterator<Item = Value>) {
        let mut dir = self.state.users.lock().unwrap();
        for user in users {
            let id = user["id"].as_str().expect("a user has an id").to_string();
            dir.insert(id, user);
        }
    }

    /// `n` generated users, created one second apart, ending a minute ago. Returns their ids in
    /// creation order.
    pub fn generate_users(&self, n: usize) -> Vec<String> {
        let now_ms = (now_secs() * 1000) as i64 - 60_000;
        let mut ids = Vec::with_capacity(n);
        let users = (0..n).map(|i| {
            let id = format!("user_{}", random_id(27));
            let email = format!("{}@example.org", id.to_lowercase());
            let mut user =
                clerk_user_json(&id, Some("Test"), Some(&format!("User {i}")), Some(&email));
            let created = now_ms - (n - i) as i64 * 1000;
            user["created_at"] = json!(created);
            user["updated_at"] = json!(created);
            ids.push(id);
            user
        });
        let users: Vec<Value> = users.collect();
        self.add_users(users);
        ids
    }

    /// Change a user as Clerk would: `change` edits the JSON, then `updated_at` moves to now
    /// (a millisecond later at least). Panics for an unknown id.
    pub fn update_user(&self, id: &str, change: impl FnOnce(&mut Value)) {
        let mut dir = self.state.users.lock().unwrap();
        let user = dir.by_id.get_mut(id).expect("a known user");
        let before = user["updated_at"].as_i64().unwrap_or(0);
        change(user);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        user["updated_at"] = json!(now_ms.max(before + 1));
    }

    /// Clerk's rate limit: at most `limit` Backend API requests (user, list, count) in any
    /// `window`; beyond it a 429 with `Retry-After`. `None` lifts it.
    pub fn set_rate_limit(&self, limit: Option<(usize, Duration)>) {
        *self.state.rate_limit.lock().unwrap() = limit.map(|(limit, window)| RateLimit {
            limit,
            window,
            arrivals: VecDeque::new(),
        });
    }

    /// Requests answered 429 by the rate limit.
    pub fn rate_limited_calls(&self) -> usize {
        self.state.counters.rate_limited.load(Ordering::SeqCst)
    }

    /// Queue faults for the next list requests (`GET /v1/users`), one each.
    pub fn queue_list_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.list_faults.lock().unwrap().queue.extend(faults);
    }

    /// A fault for every list request after the queued ones, until cleared with `None`.
    pub fn set_list_fault(&self, fault: Option<Fault>) {
        self.state.list_faults.lock().unwrap().always = fault;
    }

    /// List requests (`GET /v1/users`).
    pub fn list_calls(&self) -> usize {
        self.state.counters.lists.load(Ordering::SeqCst)
    }

    /// Count requests (`GET /v1/users/count`).
    pub fn count_calls(&self) -> usize {
        self.state.counters.counts.load(Ordering::SeqCst)
    }

    /// How many users the stand-in has.
    pub fn user_count(&self) -> usize {
        self.state.users.lock().unwrap().by_id.len()
    }

    /// A new user with a random id, a name and a primary email (listed second).
    pub fn new_user(&self) -> String {
        let id = format!("user_{}", random_id(27));
        let email = format!("{}@example.org", id.to_lowercase());
        self.add_user(clerk_user_json(
            &id,
            Some("Ada"),
            Some("Lovelace"),
            Some(&email),
        ))
    }

    pub fn user_json(&self, id: &str) -> Option<Value> {
        self.state.users.lock().unwrap().by_id.get(id).cloned()
    }

    pub fn remove_user(&self, id: &str) {
        self.state.users.lock().unwrap().remove(id);
    }

    /// Queue faults for the next Backend API requests, one each.
    pub fn queue_user_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.user_faults.lock().unwrap().queue.extend(faults);
    }

    /// A fault for every Backend API request until cleared with `None`.
    pub fn set_user_fault(&self, fault: Option<Fault>) {
        self.state.user_faults.lock().unwrap().always = fault;
    }

    pub fn queue_jwks_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.jwks_faults.lock().unwrap().queue.extend(faults);
    }

    pub fn set_jwks_fault(&self, fault: Option<Fault>) {
        self.state.jwks_faults.lock().unwrap().always = fault;
    }

    pub fn jwks_calls(&self) -> usize {
        self.state.counters.jwks.load(Ordering::SeqCst)
    }

    /// Backend API user lookups, all users.
    pub fn user_calls(&self) -> usize {
        self.state.counters.users.load(Ordering::SeqCst)
    }

    pub fn user_calls_for(&self, id: &str) -> usize {
        self.state
            .user_calls
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    /// Every request on any path.
    pub fn all_calls(&self) -> usize {
        self.state.counters.all.load(Ordering::SeqCst)
    }

    pub fn jwks_authorization_headers(&self) -> Vec<Option<String>> {
        self.state.jwks_authorization.lock().unwrap().clone()
    }

    /// The claims of a fresh, valid session token for `user_id`, as Clerk mints them (v2).
    pub fn claims_for(&self, user_id: &str) -> Value {
        session_claims(&self.issuer(), user_id)
    }

    /// The header Clerk puts on a session token signed by `key`.
    pub fn header_for(key: &SigningKey) -> Value {
        json!({"alg": "RS256", "kid": key.kid, "typ": "JWT"})
    }

    /// A valid session token for `user_id`, signed with the current key.
    pub fn token_for(&self, user_id: &str) -> String {
        self.sign(&self.claims_for(user_id))
    }

    /// Sign any claims with the current key and Clerk's header.
    pub fn sign(&self, claims: &Value) -> String {
        let key = self.current_key();
        self.sign_with(&key, &Self::header_for(&key), claims)
    }

    /// Sign any header and claims with `key`; remembered as minted.
    pub fn sign_with(&self, key: &SigningKey, header: &Value, claims: &Value) -> String {
        self.remember(key.sign(header, claims))
    }

    /// Remember a token made by hand, so the log checks look for it too.
    pub fn remember(&self, token: String) -> String {
        self.state.minted.lock().unwrap().push(token.clone());
        token
    }

    pub fn minted_tokens(&self) -> Vec<String> {
        self.state.minted.lock().unwrap().clone()
    }
}
