//! A throwaway PostgreSQL from the installed binaries, for tests, benchmarks and the local run.
//! `initdb` and `postgres` refuse to run as root, so as root every server command runs as an
//! unprivileged user (`postgres` when it exists, else `nobody`).
//!
//! - [`shared_cluster_url`]: `TEST_DATABASE_URL` when set; otherwise one cluster per machine user,
//!   started on first use under a file lock and reused by every test process after it.
//! - [`PgCluster::start`]: a cluster of one's own in a folder, which can be stopped and started
//!   again (outage tests) and is removed when dropped (unless `keep`).
//! - [`TestDatabase`]: a database of its own per test, dropped at the end.
//! - [`shared_tls_cluster`]: a second shared cluster that accepts TCP only over TLS
//!   (`hostssl … scram-sha-256`, `hostnossl … reject`), with a throwaway CA and a certificate for
//!   `localhost` made here ([`TlsFiles`]).
//! - [`shared_pgbouncer_port`]: Debian's PgBouncer in transaction mode with a pool of 2 server
//!   connections in front of the shared cluster, run as the same unprivileged user.

use std::{
    fs,
    io::{self, Write},
    net::TcpListener,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The password every testkit URL carries. Trust authentication ignores it; it is there so that
/// tests can check it never reaches a log.
pub const TESTKIT_DB_PASSWORD: &str = "testkit-db-password-never-logged";

/// Where the PostgreSQL binaries are: `PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else
/// the `PATH`.
pub fn pg_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).unwrap_or_default()
}

fn bin(name: &str) -> PathBuf {
    let dir = pg_bin_dir();
    if dir.as_os_str().is_empty() {
        PathBuf::from(name)
    } else {
        dir.join(name)
    }
}

/// (uid, gid) to run the server as, when we are root.
fn unprivileged_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc_geteuid() } != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    for name in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 3
                && f[0] == name
                && let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse())
            {
                return Some((uid, gid));
            }
        }
    }
    panic!("running as root, but neither a postgres nor a nobody user exists to run PostgreSQL as");
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn chown_tree(path: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

fn run(cmd: &mut Command, what: &str) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A PostgreSQL cluster in a folder of its own.
pub struct PgCluster {
    root: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    /// Stop and remove on drop.
    ephemeral: bool,
    /// fsync and full page writes on (a cluster whose data is kept between runs).
    durable: bool,
    /// TLS only, over TCP: the folder with `server.crt` and `server.key`.
    tls: Option<PathBuf>,
}

impl PgCluster {
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(bin(program));
        cmd.current_dir(&self.root)
            .env_remove("PGDATA")
            .env("LC_ALL", "C");
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Create (if needed) and start a cluster under `root`, on a free loopback port.
    /// `ephemeral`: stopped and removed when dropped.
    pub fn start(root: &Path, ephemeral: bool) -> io::Result<Self> {
        let owner = unprivileged_user();
        fs::create_dir_all(root)?;
        // The server user must be able to reach its folder.
        fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
        chown_tree(root, owner)?;
        let mut cluster = Self {
            root: root.to_path_buf(),
            port: 0,
            owner,
            ephemeral,
            durable: false,
            tls: None,
        };
        cluster.init()?;
        cluster.port = free_port()?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// A cluster whose data is kept in `root` between runs (the local run's `.data/postgres`),
    /// with fsync on. When a server already runs there (a run that did not stop it), it is
    /// reused as it is; otherwise it is started on the port it had last time when that port is
    /// free, else on a free one. Returns the cluster and whether it was reused. Never stopped on
    /// drop: call [`PgCluster::stop`].
    pub fn start_persistent(root: &Path) -> io::Result<(Self, bool)> {
        let owner = unprivileged_user();
        fs::create_dir_all(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
        chown_tree(root, owner)?;
        let last_port = fs::read_to_string(root.join("port"))
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok());
        let mut cluster = Self {
            root: root.to_path_buf(),
            port: last_port.unwrap_or(0),
            owner,
            ephemeral: false,
            durable: true,
            tls: None,
        };
        if cluster.port != 0
            && cluster.data().join("PG_VERSION").exists()
            && Self::is_running(root, owner)
        {
            return Ok((cluster, true));
        }
        cluster.init()?;
        cluster.port = match last_port {
            Some(p) if TcpListener::bind(("127.0.0.1", p)).is_ok() => p,
            _ => free_port()?,
        };
        cluster.start_server()?;
        Ok((cluster, false))
    }

    /// `initdb` unless the folder already holds a cluster.
    fn init(&self) -> io::Result<()> {
        if self.data().join("PG_VERSION").exists() {
            return Ok(());
        }
        let _ = fs::remove_dir_all(self.data());
        let mut args = vec![
            "-D",
            "data",
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
        ];
        if !self.durable {
            args.push("--no-sync");
        }
        if self.tls.is_none() {
            return run(self.command("initdb").args(args), "initdb");
        }
        // TLS only: the superuser has the testkit password (SCRAM), TCP without TLS is refused,
        // the socket stays open to the harness (trust).
        let pwfile = self.root.join("pwfile");
        fs::write(&pwfile, TESTKIT_DB_PASSWORD)?;
        chown_tree(&pwfile, self.owner)?;
        args.retain(|a| *a != "--auth=trust");
        args.extend([
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--pwfile=pwfile",
        ]);
        run(self.command("initdb").args(args), "initdb")?;
        fs::remove_file(&pwfile)?;
        fs::write(
            self.data().join("pg_hba.conf"),
            "local     all all              trust\n\
             hostssl   all all 127.0.0.1/32 scram-sha-256\n\
             hostssl   all all ::1/128      scram-sha-256\n\
             hostnossl all all 0.0.0.0/0    reject\n\
             hostnossl all all ::/0         reject\n",
        )
    }

    /// Start the server again after [`PgCluster::stop`], on the same port.
    pub fn start_server(&self) -> io::Result<()> {
        let speed = if self.durable {
            ""
        } else {
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        let tls = match &self.tls {
            Some(dir) => format!(
                " -c ssl=on -c ssl_cert_file={}/server.crt -c ssl_key_file={}/server.key",
                dir.display(),
                dir.display()
            ),
            None => String::new(),
        };
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1{speed}{tls} -c max_connections=400 \
             -c shared_buffers=64MB",
            self.port,
            self.root.display()
        );
        run(
            self.command("pg_ctl").args([
                "-D",
                "data",
                "-l",
                "server.log",
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ]),
            "pg_ctl start",
        )?;
        fs::write(self.root.join("port"), self.port.to_string())?;
        Ok(())
    }

    /// Stop the server now (fast shutdown: connections are cut).
    pub fn stop(&self) -> io::Result<()> {
        run(
            self.command("pg_ctl")
                .args(["-D", "data", "-m", "fast", "-w", "stop"]),
            "pg_ctl stop",
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder the cluster lives in (`data/`, `server.log`, `port`, the socket).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{TESTKIT_DB_PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Whether a server answers on this folder.
    fn is_running(root: &Path, owner: Option<(u32, u32)>) -> bool {
        let mut cmd = Command::new(bin("pg_ctl"));
        cmd.current_dir(root)
            .args(["-D", "data", "status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = owner {
            cmd.uid(uid).gid(gid);
        }
        cmd.status().is_ok_and(|s| s.success())
    }

    /// Leave the cluster running after this value is gone.
    pub fn keep(mut self) {
        self.ephemeral = false;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.ephemeral {
            let _ = self.stop();
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// The folder of the shared test cluster: `TESTKIT_PG_DIR`, else one under the temporary folder
/// (always reachable by the unprivileged server user).
pub fn shared_cluster_dir() -> PathBuf {
    std::env::var_os("TESTKIT_PG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("clerk-users-testkit-pg"))
}

/// The admin URL (database `postgres`) of the shared cluster: `TEST_DATABASE_URL` when set, else
/// the shared throwaway cluster, started by the first process that needs it (under a file lock)
/// and reused by the others. Stop it with `pg_ctl -D <dir>/data stop` (`.ci/run` does).
pub fn shared_cluster_url() -> io::Result<String> {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        return Ok(url);
    }
    let root = shared_cluster_dir();
    fs::create_dir_all(&root)?;
    let lock = fs::File::create(std::env::temp_dir().join("clerk-users-testkit-pg.lock"))?;
    lock.lock()?;
    let owner = unprivileged_user();
    let port_file = root.join("port");
    if root.join("data/PG_VERSION").exists()
        && PgCluster::is_running(&root, owner)
        && let Some(port) = fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
    {
        return Ok(format!(
            "postgres://postgres:{TESTKIT_DB_PASSWORD}@127.0.0.1:{port}/postgres"
        ));
    }
    let cluster = PgCluster::start(&root, false)?;
    let url = cluster.url("postgres");
    cluster.keep();
    let _ = writeln!(
        io::stderr(),
        "testkit: started a PostgreSQL cluster in {}",
        root.display()
    );
    Ok(url)
}

/// A database of its own, created on a cluster and dropped (with its connections) on drop.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create(admin_url: &str) -> Self {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match admin_exec(admin_url, &format!("create database {name}")).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot create a test database: {e}"),
            }
        }
        let mut url = reqwest::Url::parse(admin_url).expect("admin URL");
        url.set_path(&format!("/{name}"));
        Self {
            name,
            url: url.to_string(),
            admin_url: admin_url.to_string(),
        }
    }

    /// On the shared cluster.
    pub async fn on_shared_cluster() -> Self {
        let admin = tokio::task::spawn_blocking(shared_cluster_url)
            .await
            .unwrap()
            .expect("shared PostgreSQL cluster");
        Self::create(&admin).await
    }

    /// A client connected to this database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn admin_exec(admin_url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    connect(admin_url).await?.batch_execute(sql).await
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let sql = format!("drop database if exists {} with (force)", self.name);
        // Drop runs inside the test's runtime; a thread with its own runtime does the async work.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(admin_exec(&admin, &sql)).ok()
        })
        .join();
    }
}

/// A throwaway certificate authority, a server certificate for `localhost` signed by it, and a
/// second CA that signed nothing (the "wrong CA" of the tests), as PEM files in one folder.
pub struct TlsFiles {
    pub dir: PathBuf,
}

impl TlsFiles {
    /// `ca.crt`, `server.crt`, `server.key` (0600) and `other-ca.crt` in `dir`, made now, owned by
    /// the server's user.
    pub fn generate(dir: &Path) -> io::Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let fail = |e: rcgen::Error| io::Error::other(format!("rcgen: {e}"));
        let ca = |name: &str| -> Result<(CertificateParams, KeyPair, String), rcgen::Error> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let pem = params.self_signed(&key)?.pem();
            Ok((params, key, pem))
        };
        let (ca_params, ca_key, ca_pem) = ca("clerk-users testkit CA").map_err(fail)?;
        let (_, _, other_pem) = ca("clerk-users testkit other CA").map_err(fail)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().map_err(fail)?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(fail)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).map_err(fail)?;
        fs::create_dir_all(dir)?;
        fs::write(dir.join("ca.crt"), ca_pem)?;
        fs::write(dir.join("other-ca.crt"), other_pem)?;
        fs::write(dir.join("server.crt"), cert.pem())?;
        let key_path = dir.join("server.key");
        fs::write(&key_path, key.serialize_pem())?;
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))?;
        let owner = unprivileged_user();
        for f in ["ca.crt", "other-ca.crt", "server.crt", "server.key"] {
            chown_tree(&dir.join(f), owner)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.crt")
    }
}

/// The shared TLS-only cluster: where it listens and the CA files of its certificate.
#[derive(Debug, Clone)]
pub struct TlsCluster {
    pub root: PathBuf,
    pub port: u16,
    /// The CA that signed the server's certificate (for `localhost` only).
    pub ca: PathBuf,
    /// A CA that signed nothing.
    pub other_ca: PathBuf,
}

impl TlsCluster {
    /// A URL as the superuser with the testkit password, to `host` (`localhost` is the name on the
    /// certificate), with `params` as the query string.
    pub fn url(&self, host: &str, database: &str, params: &str) -> String {
        let q = if params.is_empty() {
            String::new()
        } else {
            format!("?{params}")
        };
        format!(
            "postgres://postgres:{TESTKIT_DB_PASSWORD}@{host}:{}/{database}{q}",
            self.port
        )
    }

    /// A new empty database, made over the Unix socket (which needs no TLS). Not dropped.
    pub async fn create_database(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.root)
            .port(self.port)
            .user("postgres")
            .dbname("postgres");
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("the TLS cluster's socket");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .batch_execute(&format!("create database {name}"))
            .await
            .expect("create a database on the TLS cluster");
        name
    }
}

fn sibling_dir(suffix: &str) -> PathBuf {
    let base = shared_cluster_dir();
    let name = base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "clerk-users-testkit-pg".into());
    base.with_file_name(format!("{name}-{suffix}"))
}

/// The folder of the shared TLS-only cluster: beside the shared cluster's, `…-tls`.
pub fn shared_tls_cluster_dir() -> PathBuf {
    sibling_dir("tls")
}

/// The shared TLS-only cluster, started by the first process that needs it (under a file lock)
/// and reused by the others. Stop it with `pg_ctl -D <dir>/data stop` (`.ci/run` does).
pub fn shared_tls_cluster() -> io::Result<TlsCluster> {
    let root = shared_tls_cluster_dir();
    fs::create_dir_all(&root)?;
    let lock = fs::File::create(std::env::temp_dir().join("clerk-users-testkit-pg-tls.lock"))?;
    lock.lock()?;
    let owner = unprivileged_user();
    let certs = root.join("certs");
    let found = |port: u16| TlsCluster {
        root: root.clone(),
        port,
        ca: certs.join("ca.crt"),
        other_ca: certs.join("other-ca.crt"),
    };
    if root.join("data/PG_VERSION").exists()
        && certs.join("ca.crt").exists()
        && PgCluster::is_running(&root, owner)
        && let Some(port) = fs::read_to_string(root.join("port"))
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
    {
        return Ok(found(port));
    }
    // Anything half made by an earlier run goes.
    let _ = fs::remove_dir_all(root.join("data"));
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    chown_tree(&root, owner)?;
    TlsFiles::generate(&certs)?;
    let mut cluster = PgCluster {
        root: root.clone(),
        port: 0,
        owner,
        ephemeral: false,
        durable: false,
        tls: Some(certs.clone()),
    };
    cluster.init()?;
    cluster.port = free_port()?;
    cluster.start_server()?;
    let port = cluster.port;
    cluster.keep();
    let _ = writeln!(
        io::stderr(),
        "testkit: started a TLS-only PostgreSQL cluster in {}",
        root.display()
    );
    Ok(found(port))
}

/// The folder of the shared PgBouncer: beside the shared cluster's, `…-pgbouncer`.
pub fn shared_pgbouncer_dir() -> PathBuf {
    sibling_dir("pgbouncer")
}

/// The port of the shared PgBouncer (transaction mode, `default_pool_size = 2`, trust
/// authentication like the cluster behind it) in front of the shared cluster, started by the
/// first process that needs it (under a file lock). `pgbouncer` is Debian's package
/// (`/usr/sbin/pgbouncer`, or `PGBOUNCER`); it refuses to run as root, so it runs as the
/// cluster's user. Stop it with `kill -INT $(cat <dir>/pgbouncer.pid)` (`.ci/run` does).
pub fn shared_pgbouncer_port() -> io::Result<u16> {
    let upstream = shared_cluster_url()?;
    let upstream_port = reqwest::Url::parse(&upstream)
        .ok()
        .and_then(|u| u.port())
        .unwrap_or(5432);
    let root = shared_pgbouncer_dir();
    fs::create_dir_all(&root)?;
    let lock = fs::File::create(std::env::temp_dir().join("clerk-users-testkit-pgbouncer.lock"))?;
    lock.lock()?;
    let owner = unprivileged_user();
    let port_file = root.join("port");
    let upstream_file = root.join("upstream");
    if let (Some(port), Some(up)) = (
        fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok()),
        fs::read_to_string(&upstream_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok()),
    ) && up == upstream_port
        && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    {
        return Ok(port);
    }
    // A PgBouncer in front of an earlier cluster: stop it.
    if let Ok(pid) = fs::read_to_string(root.join("pgbouncer.pid")) {
        let _ = Command::new("kill").args(["-INT", pid.trim()]).status();
    }
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    chown_tree(&root, owner)?;
    let port = free_port()?;
    let ini = format!(
        "[databases]\n\
         * = host=127.0.0.1 port={upstream_port}\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = trust\n\
         auth_file = {root}/userlist.txt\n\
         pool_mode = transaction\n\
         default_pool_size = 2\n\
         max_client_conn = 1000\n\
         max_db_connections = 0\n\
         server_reset_query =\n\
         logfile = {root}/pgbouncer.log\n\
         pidfile = {root}/pgbouncer.pid\n",
        root = root.display()
    );
    fs::write(root.join("pgbouncer.ini"), ini)?;
    fs::write(
        root.join("userlist.txt"),
        format!("\"postgres\" \"{TESTKIT_DB_PASSWORD}\"\n"),
    )?;
    for f in ["pgbouncer.ini", "userlist.txt"] {
        chown_tree(&root.join(f), owner)?;
    }
    let program = std::env::var_os("PGBOUNCER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/pgbouncer"));
    let mut cmd = Command::new(&program);
    cmd.current_dir(&root)
        .args(["-d", "pgbouncer.ini"])
        .stdin(Stdio::null());
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    run(&mut cmd, "pgbouncer (install Debian's pgbouncer package)")
        .map_err(|e| io::Error::other(format!("{e} ({}: see .ci/test)", program.display())))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "pgbouncer did not listen on {port}: see {}/pgbouncer.log",
                root.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::write(&port_file, port.to_string())?;
    fs::write(&upstream_file, upstream_port.to_string())?;
    let _ = writeln!(
        io::stderr(),
        "testkit: started PgBouncer (transaction mode) in {}",
        root.display()
    );
    Ok(port)
}

impl TestDatabase {
    /// This database's URL through the shared PgBouncer.
    pub async fn url_through_pgbouncer(&self) -> String {
        let port = tokio::task::spawn_blocking(shared_pgbouncer_port)
            .await
            .unwrap()
            .expect("the shared PgBouncer");
        let mut url = reqwest::Url::parse(&self.url).expect("test database URL");
        url.set_port(Some(port)).expect("a port");
        url.to_string()
    }
}
