//! Storage: migrations under an advisory lock, the database going away and coming back.

use std::time::{Duration, Instant};

use clerk_users::testkit::{TestApp, TestDatabase};

use crate::helpers::{own_cluster, start_cluster, stop_cluster, unavailable};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_starting_at_once_on_an_empty_database_both_come_up() {
    let db = std::sync::Arc::new(TestDatabase::on_shared_cluster().await);
    let (a, b) = tokio::join!(
        TestApp::builder().database(db.clone()).try_spawn(),
        TestApp::builder().database(db.clone()).try_spawn()
    );
    let (a, b) = (a.expect("first instance"), b.expect("second instance"));
    for app in [&a, &b] {
        assert_eq!(app.get("/readyz").send().await.unwrap().status(), 200);
    }
    let client = db.connect().await;
    let applied: i64 = client
        .query_one("select count(*) from schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, clerk_users::db::MIGRATIONS.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_migration_stops_the_start() {
    let app = TestApp::spawn().await;
    let client = app.db.connect().await;
    client.execute("update schema_migrations set checksum = 'edited' where version = '0001_create_users.sql'", &[]).await.unwrap();
    let err = TestApp::builder()
        .database(app.db.clone())
        .try_spawn()
        .await
        .err()
        .expect("refuses to start");
    assert!(
        err.to_string().contains("0001_create_users.sql was edited"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_ping_answers() {
    let app = TestApp::spawn().await;
    let resp = app.get("/db-test/ping").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_gives_fast_503s_and_the_service_recovers_by_itself() {
    let cluster = own_cluster("outage").await;
    let app = TestApp::builder()
        .cluster(&cluster.url("postgres"))
        .spawn()
        .await;
    let known = app.clerk.new_user();
    assert_eq!(app.get_me(&app.token_for(&known)).await.status(), 200);

    let cluster = stop_cluster(cluster).await;

    let started = Instant::now();
    unavailable(
        app.get_me(&app.token_for(&known)).await,
        "database-unavailable",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "within the pool wait timeout: {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    unavailable(
        app.get("/readyz").send().await.unwrap(),
        "database-unavailable",
    )
    .await;
    unavailable(
        app.get("/db-test/ping").send().await.unwrap(),
        "database-unavailable",
    )
    .await;
    assert!(started.elapsed() < Duration::from_millis(5000));
    // A new user while the database is down: Clerk may answer, the row cannot be stored.
    let new = app.clerk.new_user();
    unavailable(
        app.get_me(&app.token_for(&new)).await,
        "database-unavailable",
    )
    .await;

    let cluster = start_cluster(cluster).await;
    let mut back = false;
    for _ in 0..40 {
        if app.get_me(&app.token_for(&known)).await.status() == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(back, "requests succeed again without a restart");
    assert_eq!(app.get_me(&app.token_for(&new)).await.status(), 200);
    assert_eq!(app.get("/readyz").send().await.unwrap().status(), 200);
    drop(app);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
