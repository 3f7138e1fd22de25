//! TLS to PostgreSQL, against a cluster that accepts TCP only over TLS (`hostssl … scram-sha-256`,
//! `hostnossl … reject`) with a throwaway CA and a certificate for `localhost`: every `sslmode`,
//! `sslrootcert` (a file, a wrong one, `system`), `channel_binding`, and the one line each
//! failure gives; `psql` (libpq) reads the same URLs the same way.

use clerk_users::{
    net::postgres::{ConnectOptions, describe},
    testkit::{TestApp, TlsCluster, postgres::TESTKIT_DB_PASSWORD},
};

async fn cluster() -> TlsCluster {
    tokio::task::spawn_blocking(clerk_users::testkit::postgres::shared_tls_cluster)
        .await
        .unwrap()
        .expect("the shared TLS-only cluster")
}

/// Connect as the service does; `Ok(ssl in use)` or the one-line reason.
async fn try_connect(url: &str) -> Result<bool, String> {
    let options = ConnectOptions::from_url(url)?;
    let (client, conn) = options
        .config
        .expose()
        .connect(options.tls())
        .await
        .map_err(|e| describe(&e))?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "select coalesce((select ssl from pg_stat_ssl where pid = pg_backend_pid()), false)",
            &[],
        )
        .await
        .map_err(|e| describe(&e))?;
    Ok(row.get(0))
}

fn ok(url: &str, result: Result<bool, String>) {
    assert_eq!(result, Ok(true), "{url}");
}

fn fails_with(url: &str, result: Result<bool, String>, needle: &str) -> String {
    let line = result.expect_err(url);
    assert!(line.contains(needle), "{url}: {line}");
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(!line.contains(TESTKIT_DB_PASSWORD), "no password: {line}");
    line
}

#[tokio::test]
async fn tls_every_sslmode_against_a_tls_only_server() {
    let c = cluster().await;
    let ca = c.ca.display().to_string();
    for params in [
        String::new(), // prefer
        "sslmode=prefer".into(),
        "sslmode=require".into(),
        format!("sslmode=require&sslrootcert={ca}"),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let url = c.url("localhost", "postgres", &params);
        ok(&url, try_connect(&url).await);
    }
    // verify-ca checks the chain, not the name: 127.0.0.1 is not on the certificate.
    let url = c.url(
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    );
    ok(&url, try_connect(&url).await);
    // disable: the server's own reason, in one line.
    let url = c.url("localhost", "postgres", "sslmode=disable");
    let line = fails_with(
        &url,
        try_connect(&url).await,
        "pg_hba.conf rejects connection",
    );
    assert!(line.contains("no encryption"), "{line}");
    assert!(line.contains("28000"), "{line}");
}

#[tokio::test]
async fn tls_verification_failures_say_why() {
    let c = cluster().await;
    let other = c.other_ca.display().to_string();
    let ca = c.ca.display().to_string();
    for params in [
        format!("sslmode=verify-full&sslrootcert={other}"),
        format!("sslmode=verify-ca&sslrootcert={other}"),
        // require with a root file verifies as verify-ca does
        format!("sslmode=require&sslrootcert={other}"),
    ] {
        let url = c.url("localhost", "postgres", &params);
        fails_with(
            &url,
            try_connect(&url).await,
            "not signed by a certificate authority",
        );
    }
    // The certificate names localhost only.
    let url = c.url(
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    fails_with(&url, try_connect(&url).await, "does not name the host");
    // The system's roots do not hold the throwaway CA (or there are none: also a failure).
    let url = c.url("localhost", "postgres", "sslrootcert=system");
    let line = match ConnectOptions::from_url(&url) {
        Err(e) => e,
        Ok(_) => try_connect(&url)
            .await
            .expect_err("system roots must not trust the test CA"),
    };
    assert!(
        line.contains("not signed by a certificate authority") || line.contains("system's"),
        "{line}"
    );
}

#[tokio::test]
async fn tls_channel_binding_works_over_tls_and_fails_without() {
    let c = cluster().await;
    let ca = c.ca.display().to_string();
    // SCRAM-SHA-256-PLUS: tokio-postgres refuses to go on without it when it is required.
    for params in [
        "sslmode=require&channel_binding=require".to_string(),
        format!("sslmode=verify-full&sslrootcert={ca}&channel_binding=require"),
    ] {
        let url = c.url("localhost", "postgres", &params);
        ok(&url, try_connect(&url).await);
    }
    // Without TLS there is nothing to bind to: the shared cluster offers no TLS (and trusts).
    let plain = clerk_users::testkit::postgres::shared_cluster_url().unwrap();
    let url = format!("{plain}?sslmode=prefer&channel_binding=require");
    let line = try_connect(&url)
        .await
        .expect_err("no channel binding without TLS");
    assert!(line.contains("channel binding"), "{line}");
    // prefer falls back to plaintext when the server offers no TLS.
    let url = format!("{plain}?sslmode=prefer");
    assert_eq!(try_connect(&url).await, Ok(false), "{url}");
    let url = format!("{plain}?sslmode=require");
    fails_with(&url, try_connect(&url).await, "TLS");
}

/// libpq (psql) agrees with the service on what each URL means.
#[tokio::test]
async fn tls_psql_reads_the_urls_the_same_way() {
    let c = cluster().await;
    let ca = c.ca.display().to_string();
    let other = c.other_ca.display().to_string();
    let cases = [
        ("localhost", String::new(), true),
        (
            "localhost",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            true,
        ),
        (
            "127.0.0.1",
            format!("sslmode=verify-ca&sslrootcert={ca}"),
            true,
        ),
        (
            "127.0.0.1",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            false,
        ),
        (
            "localhost",
            format!("sslmode=require&sslrootcert={other}"),
            false,
        ),
        ("localhost", "sslmode=disable".to_string(), false),
        (
            "localhost",
            "sslmode=require&channel_binding=require".to_string(),
            true,
        ),
    ];
    for (host, params, works) in cases {
        let url = c.url(host, "postgres", &params);
        let psql = std::process::Command::new("psql")
            .args([url.as_str(), "-XAtqc", "select 1"])
            .env_remove("PGSSLMODE")
            .env("PGSSLROOTCERT", "/nonexistent")
            .output()
            .expect("psql is installed");
        assert_eq!(
            psql.status.success(),
            works,
            "psql {url}: {}",
            String::from_utf8_lossy(&psql.stderr)
        );
        assert_eq!(try_connect(&url).await.is_ok(), works, "service {url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_the_service_runs_over_verified_tls_and_a_refused_start_says_why() {
    let c = cluster().await;
    let db = c.create_database().await;
    let ca = c.ca.display().to_string();
    let url = c.url(
        "localhost",
        &db,
        &format!("sslmode=verify-full&sslrootcert={ca}&channel_binding=require"),
    );
    let app = TestApp::builder().with("database_url", url).spawn().await;
    let user = app.clerk.new_user();
    let resp = app.get_me(&app.token_for(&user)).await;
    assert_eq!(resp.status(), 200);
    // The listener (its own connection, over TLS too) took the probe.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !crate::helpers::metrics(&app)
        .await
        .contains("\nclerk_users_user_cache_bypassed 0\n")
    {
        assert!(std::time::Instant::now() < deadline, "listener over TLS");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let refused = TestApp::builder()
        .with("database_url", c.url("localhost", &db, "sslmode=disable"))
        .try_spawn()
        .await
        .err()
        .expect("a start without TLS is refused")
        .to_string();
    assert!(
        refused.starts_with("cannot reach the database at localhost:"),
        "{refused}"
    );
    assert!(
        refused.contains("pg_hba.conf rejects connection"),
        "{refused}"
    );
    assert!(!refused.contains(TESTKIT_DB_PASSWORD), "{refused}");
    let refused = TestApp::builder()
        .with(
            "database_url",
            c.url(
                "127.0.0.1",
                &db,
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
        )
        .try_spawn()
        .await
        .err()
        .expect("a certificate for another name is refused")
        .to_string();
    assert!(refused.contains("does not name the host"), "{refused}");
}
