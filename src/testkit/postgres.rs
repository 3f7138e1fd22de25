//! A throwaway PostgreSQL from the installed binaries, for tests, benchmarks and the local run.
//! `initdb` and `postgres` refuse to run as root, so as root every server command runs as an
//! unprivileged user (`postgres` when it exists, else `nobody`).
//!
//! - [`shared_cluster_url`]: `TEST_DATABASE_URL` when set; otherwise one cluster per machine user,
//!   started on first use under a file lock and reused by every test process after it.
//! - [`PgCluster::start`]: a cluster of one's own in a folder, which can be stopped and started
//!   again (outage tests) and is removed when dropped (unless `keep`).
//! - [`TestDatabase`]: a database of its own per test, dropped at the end.

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
        run(self.command("initdb").args(args), "initdb")
    }

    /// Start the server again after [`PgCluster::stop`], on the same port.
    pub fn start_server(&self) -> io::Result<()> {
        let speed = if self.durable {
            ""
        } else {
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1{speed} -c max_connections=400 \
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
