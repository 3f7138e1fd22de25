//! The service started for real on `127.0.0.1:0`, with a database of its own and a Clerk stand-in:
//! what the integration tests and the benchmarks drive.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

use super::{
    clerk::ClerkStandIn,
    postgres::{TESTKIT_DB_PASSWORD, TestDatabase},
};
use crate::{
    app::Application,
    settings::{LogFormat, Settings},
};

/// Every log line of this process, as the service writes them (JSON), for the tests to read.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TESTKIT_LOG_STDERR").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The process-wide capture, installed once as the global subscriber (JSON, as in production).
pub fn logs() -> &'static LogCapture {
    static LOGS: OnceLock<LogCapture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = LogCapture::default();
        crate::telemetry::init(LogFormat::Json, "info,clerk_users=debug", capture.clone());
        capture
    })
}

/// How to start a [`TestApp`].
pub struct TestAppBuilder {
    overrides: Vec<(String, String)>,
    database: Option<Arc<TestDatabase>>,
    admin_url: Option<String>,
    clerk: Option<ClerkStandIn>,
    check_logs: bool,
    pooler: Option<Pooler>,
}

/// How an instance reaches its database through the shared PgBouncer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooler {
    /// `DATABASE_URL` through PgBouncer, `DATABASE_DIRECT_URL` to the cluster itself.
    WithDirectUrl,
    /// Everything through PgBouncer.
    Only,
}

/// A running service with its own database and Clerk stand-in. Dropping it stops the service and
/// checks that the log holds no token, secret key or database password.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub clerk: ClerkStandIn,
    /// Shared when several instances use one database.
    pub db: Arc<TestDatabase>,
    pub http: reqwest::Client,
    pub settings: Settings,
    pub secret_key: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    log_start: usize,
    check_logs: bool,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            overrides: Vec::new(),
            database: None,
            admin_url: None,
            clerk: None,
            check_logs: true,
            pooler: None,
        }
    }

    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }
}

impl TestAppBuilder {
    /// Set any key of `config/default.toml`.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.overrides.push((key.to_string(), value.into()));
        self
    }

    /// Use this database (perhaps another instance's) instead of a new one on the shared cluster.
    pub fn database(mut self, db: Arc<TestDatabase>) -> Self {
        self.database = Some(db);
        self
    }

    /// Create the database on this cluster (admin URL) instead of the shared one.
    pub fn cluster(mut self, admin_url: &str) -> Self {
        self.admin_url = Some(admin_url.to_string());
        self
    }

    /// Use this stand-in (e.g. one that starts failing) instead of a new one.
    pub fn clerk(mut self, clerk: ClerkStandIn) -> Self {
        self.clerk = Some(clerk);
        self
    }

    /// Reach the database through the shared PgBouncer (transaction mode), with prepared
    /// statements off.
    pub fn through_pgbouncer(mut self, how: Pooler) -> Self {
        self.pooler = Some(how);
        self
    }

    /// Skip the log check on drop (for tests that log a token on purpose, which none should).
    pub fn without_log_check(mut self) -> Self {
        self.check_logs = false;
        self
    }

    /// The settings the service would get, without starting it.
    pub fn settings(&self, clerk: &ClerkStandIn, database_url: &str, secret_key: &str) -> Settings {
        let mut owned: Vec<(String, String)> = [
            ("database_url", database_url.to_string()),
            ("clerk_secret_key", secret_key.to_string()),
            ("clerk_issuer", clerk.issuer()),
            ("clerk_api_url", clerk.url()),
            ("listen_addr", "127.0.0.1:0".into()),
            ("log_format", "json".into()),
            ("clerk_api_backoff_ms", "20".into()),
            ("shutdown_grace_secs", "2".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        owned.extend(self.overrides.iter().cloned());
        let pairs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Settings::from_overrides(&pairs).expect("test settings are valid")
    }

    pub async fn spawn(self) -> TestApp {
        self.try_spawn().await.expect("the service starts")
    }

    pub async fn try_spawn(mut self) -> anyhow::Result<TestApp> {
        let log = logs();
        let log_start = log.len();
        let secret_key = format!("sk_test_{}", super::clerk::random_id(40));
        let clerk = match self.clerk.take() {
            Some(c) => c,
            None => ClerkStandIn::start(&secret_key).await,
        };
        let secret_key = clerk.secret_key().to_string();
        let db = match self.database.take() {
            Some(db) => db,
            None => match &self.admin_url {
                Some(admin) => Arc::new(TestDatabase::create(admin).await),
                None => Arc::new(TestDatabase::on_shared_cluster().await),
            },
        };
        let database_url = match self.pooler {
            None => db.url.clone(),
            Some(how) => {
                if how == Pooler::WithDirectUrl {
                    self.overrides
                        .push(("database_direct_url".into(), db.url.clone()));
                }
                self.overrides
                    .push(("database_prepared_statements".into(), "false".into()));
                db.url_through_pgbouncer().await
            }
        };
        let settings = self.settings(&clerk, &database_url, &secret_key);
        let app = Application::build(settings.clone()).await?;
        let addr = app.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()?;
        Ok(TestApp {
            addr,
            url: format!("http://{addr}"),
            clerk,
            db,
            http,
            settings,
            secret_key,
            shutdown: Some(tx),
            server: Some(server),
            log_start,
            check_logs: self.check_logs,
        })
    }
}

impl TestApp {
    /// A valid token for `user_id` from the stand-in.
    pub fn token_for(&self, user_id: &str) -> String {
        self.clerk.token_for(user_id)
    }

    /// `GET /users/me` with a bearer token.
    pub async fn get_me(&self, token: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/users/me", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url))
    }

    /// How many rows `users` holds for `clerk_id` (or in all, with `None`).
    pub async fn user_rows(&self, clerk_id: Option<&str>) -> i64 {
        let client = self.db.connect().await;
        let row = match clerk_id {
            Some(id) => {
                client
                    .query_one("select count(*) from users where clerk_id = $1", &[&id])
                    .await
            }
            None => client.query_one("select count(*) from users", &[]).await,
        };
        row.expect("count users").get(0)
    }

    /// The log lines written since this app started.
    pub fn log(&self) -> String {
        logs()
            .contents()
            .get(self.log_start..)
            .unwrap_or_default()
            .to_string()
    }

    /// Every secret the log must never show: tokens minted (whole, and their signatures), the
    /// secret key, the database password. Strings under 16 characters (a test's `"abc"` token)
    /// are left out: one turns up by chance in a log of random hex request ids.
    pub fn assert_log_has_no_secrets(&self) {
        let log = logs().contents();
        let mut secrets = vec![self.secret_key.clone(), TESTKIT_DB_PASSWORD.to_string()];
        for token in self.clerk.minted_tokens() {
            if let Some(sig) = token.rsplit('.').next() {
                secrets.push(sig.to_string());
            }
            secrets.push(token);
        }
        secrets.retain(|s| s.len() >= 16);
        for s in secrets {
            assert!(
                !log.contains(&s),
                "the log contains a secret or a token: {}…",
                &s[..s.len().min(12)]
            );
        }
    }

    /// Stop the service gracefully and wait for it.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if self.check_logs && !std::thread::panicking() {
            self.assert_log_has_no_secrets();
        }
    }
}
