//! Upgrades: a database written under an earlier schema (the first four migrations, with rows
//! in them) is migrated at start and its rows are supervised on; a database that a newer
//! jobwarden migrated is refused at start, naming both schema versions.

use jobwarden::startup::{Application, StartError};
use jobwarden::store::{self, schema_standing};
use jobwarden_testkit::{Answer, SparkServer};
use migration::{Migrator, MigratorTrait};
use sea_orm::ConnectionTrait;
use serde_json::Value;

use crate::binary::{jobwarden, workdir, Running as Binary};
use crate::helpers::{settings_for, Backend, TestDb};
use crate::operating::{instance_settings, start};

/// A migration name no jobwarden of today knows.
const FROM_THE_FUTURE: &str = "m20991231_000001_from_a_newer_release";

/// An instant literal each database takes for its instant columns.
fn instant(backend: Backend, at: &str) -> String {
    match backend {
        Backend::MariaDb => format!("'{}'", at.replace('T', " ")),
        _ => format!("'{at}+00:00'"),
    }
}

/// Rows as a release with only the first four migrations wrote them: a job Spark will say
/// ended, one still running, one already finished, a queue row, and their history.
async fn write_rows_of_the_first_schema(db: &TestDb) {
    let at = instant(db.backend, "2026-11-28T10:00:00");
    let done = instant(db.backend, "2026-11-28T11:00:00");
    let statements = [
        "INSERT INTO spark_job_executions (execution_id, job_name, submission_id, status, spark_state, progress) \
         VALUES ('old-ends', 'nightly', 'driver-old-ends', 'Running', 'RUNNING', 40)".to_owned(),
        "INSERT INTO spark_job_executions (execution_id, job_name, submission_id, status) \
         VALUES ('old-runs', 'nightly', 'driver-old-runs', 'Running')".to_owned(),
        format!("INSERT INTO spark_job_executions (execution_id, job_name, submission_id, status, spark_state, progress, completed_at) \
         VALUES ('old-done', 'nightly', 'driver-old-done', 'Succeeded', 'FINISHED', 100, {done})"),
        "INSERT INTO transformation_job_queue (job_id, status) VALUES ('old-queue', 'Processing')".to_owned(),
        format!("INSERT INTO job_status_history (job_kind, job_id, from_status, to_status, source, at) \
         VALUES ('spark', 'old-ends', 'Queued', 'Running', 'spark_poll', {at})"),
        format!("INSERT INTO job_status_history (job_kind, job_id, from_status, to_status, source, at) \
         VALUES ('spark', 'old-done', 'Running', 'Succeeded', 'spark_poll', {done})"),
    ];
    for statement in statements {
        db.db.execute_unprepared(&statement).await.unwrap();
    }
}

async fn rows_of_the_first_schema_are_supervised_after_the_upgrade(backend: Backend) {
    let Some(db) = TestDb::empty(backend).await else {
        return;
    };
    Migrator::up(&db.db, Some(4)).await.unwrap();
    write_rows_of_the_first_schema(&db).await;
    let before = schema_standing(&db.db).await.unwrap();
    assert_eq!(before.applied.len(), 4);
    assert_eq!(before.pending.len(), Migrator::migrations().len() - 4);

    let spark = SparkServer::start().await;
    spark.answer("driver-old-ends", Answer::State("FINISHED"));
    spark.answer("driver-old-runs", Answer::State("RUNNING"));
    let url = db.url.clone();
    let handle = db.db.clone();
    let app = start(instance_settings(&url, &spark), db).await;
    let after = schema_standing(&handle).await.unwrap();
    assert!(
        after.pending.is_empty() && after.unknown.is_empty(),
        "{after:?}"
    );
    app.poll_cycle().await;

    let (status, ended) = app.get("/api/v1/jobs/old-ends").await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["job"]["status"], "Succeeded", "{ended}");
    let moves: Vec<(Value, Value)> = ended["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["from_status"].clone(), h["to_status"].clone()))
        .collect();
    assert_eq!(
        moves,
        vec![
            ("Queued".into(), "Running".into()),
            ("Running".into(), "Succeeded".into())
        ],
        "the old history is kept and the new move follows it: {ended}"
    );
    let (_, runs) = app.get("/api/v1/jobs/old-runs").await;
    assert_eq!(runs["job"]["status"], "Running", "{runs}");
    assert!(!runs["job"]["last_polled_at"].is_null(), "polled: {runs}");
    let (_, done) = app.get("/api/v1/jobs/old-done").await;
    assert_eq!(done["job"]["status"], "Succeeded", "{done}");
    assert_eq!(done["history"].as_array().unwrap().len(), 1, "{done}");
    let (status, queue) = app.get("/api/v1/queue/old-queue").await;
    assert_eq!(status, 200, "{queue}");
    assert_eq!(queue["job"]["status"], "Processing", "{queue}");
}

#[actix_rt::test]
async fn rows_of_the_first_schema_are_supervised_after_the_upgrade_on_sqlite() {
    rows_of_the_first_schema_are_supervised_after_the_upgrade(Backend::Sqlite).await
}

#[actix_rt::test]
async fn rows_of_the_first_schema_are_supervised_after_the_upgrade_on_postgres() {
    rows_of_the_first_schema_are_supervised_after_the_upgrade(Backend::Postgres).await
}

#[actix_rt::test]
async fn rows_of_the_first_schema_are_supervised_after_the_upgrade_on_mariadb() {
    rows_of_the_first_schema_are_supervised_after_the_upgrade(Backend::MariaDb).await
}

/// Records a migration this binary does not know, as a newer release would have.
async fn migrate_from_the_future(db: &TestDb) {
    db.db
        .execute_unprepared(&format!(
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ('{FROM_THE_FUTURE}', 0)"
        ))
        .await
        .unwrap();
}

async fn a_database_newer_than_the_binary_is_refused_naming_both_versions(backend: Backend) {
    let Some(db) = TestDb::fresh(backend).await else {
        return;
    };
    migrate_from_the_future(&db).await;
    let spark = SparkServer::start().await;
    let error = match Application::build(instance_settings(&db.url, &spark)).await {
        Ok(_) => panic!("a newer schema was accepted"),
        Err(e) => e,
    };
    assert!(matches!(error, StartError::SchemaNewer { .. }), "{error}");
    assert_eq!(error.exit_code(), 3);
    let message = error.to_string();
    let ours = Migrator::migrations().last().unwrap().name().to_owned();
    assert!(message.contains(FROM_THE_FUTURE), "{message}");
    assert!(message.contains(&ours), "{message}");
    assert!(message.contains(env!("CARGO_PKG_VERSION")), "{message}");
    // Nothing was touched: the future migration is still the newest, nothing was undone.
    let standing = schema_standing(&db.db).await.unwrap();
    assert_eq!(standing.unknown, vec![FROM_THE_FUTURE.to_owned()]);
    assert!(standing.pending.is_empty());
}

#[actix_rt::test]
async fn a_database_newer_than_the_binary_is_refused_naming_both_versions_on_sqlite() {
    a_database_newer_than_the_binary_is_refused_naming_both_versions(Backend::Sqlite).await
}

#[actix_rt::test]
async fn a_database_newer_than_the_binary_is_refused_naming_both_versions_on_postgres() {
    a_database_newer_than_the_binary_is_refused_naming_both_versions(Backend::Postgres).await
}

#[actix_rt::test]
async fn a_database_newer_than_the_binary_is_refused_naming_both_versions_on_mariadb() {
    a_database_newer_than_the_binary_is_refused_naming_both_versions(Backend::MariaDb).await
}

#[actix_rt::test]
async fn the_binary_refuses_a_newer_database_with_exit_3_and_one_line_naming_both_versions() {
    let dir = workdir();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("newer.db").display()
    );
    let db = store::connect(&settings_for(&url).database).await.unwrap();
    store::migrate(&db).await.unwrap();
    db.execute_unprepared(&format!(
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('{FROM_THE_FUTURE}', 0)"
    ))
    .await
    .unwrap();
    db.close().await.unwrap();

    let mut cmd = jobwarden(dir.path());
    cmd.env("JOBWARDEN__DATABASE__URL", &url);
    let (status, log) = Binary::start(cmd).wait(std::time::Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "{log}");
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("jobwarden: "))
        .unwrap_or_else(|| panic!("no `jobwarden: ` line:\n{log}"));
    assert!(line.contains("database.url"), "{line}");
    assert!(line.contains(FROM_THE_FUTURE), "{line}");
    let ours = Migrator::migrations().last().unwrap().name().to_owned();
    assert!(line.contains(&ours), "{line}");
    assert!(!log.contains("panicked"), "{log}");
}
