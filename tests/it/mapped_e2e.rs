//! End to end on mapped tables: the real binary and the real Spark cluster.

use std::path::Path;
use std::time::{Duration, Instant};

use jobwarden::config::TablesSettings;
use jobwarden_testkit::{Answer, SparkServer};
use sea_orm::{ConnectionTrait, Statement};

use crate::binary::{jobwarden, jobwarden_in, run_to_end, Running};
use crate::helpers::{wait_until, Backend, TestDb};
use crate::mapped::{create_orm_schema, executions_table, orm_mapping, q};

/// Writes `dir/config.toml` as an operator would: the database, some `[spark]` keys, and the
/// mapping rendered from the same settings the in-process tests use.
fn write_config(dir: &Path, db_url: &str, spark: &[(&str, &str)], tables: &TablesSettings) {
    let section = |pairs: &[(&str, &str)]| {
        toml::Value::Table(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), toml::Value::from(*v)))
                .collect(),
        )
    };
    let mut doc = toml::Table::new();
    doc.insert("database".into(), section(&[("url", db_url)]));
    if !spark.is_empty() {
        doc.insert("spark".into(), section(spark));
    }
    doc.insert(
        "tables".into(),
        toml::Value::try_from(tables).expect("the mapping renders as TOML"),
    );
    std::fs::write(
        dir.join("config.toml"),
        toml::to_string(&doc).expect("the config renders"),
    )
    .unwrap();
}

/// The application inserts a submitted Spark job with only the columns it knows.
async fn insert_execution(db: &TestDb, job_name: &str, driver: &str, status: i32) {
    let b = db.backend;
    let submitted = match b {
        Backend::Postgres => "'2026-11-28T10:00:00Z'",
        _ => "'2026-11-28 10:00:00'",
    };
    let statement = format!(
        "INSERT INTO {} ({}, {}, {}, {}, {}) VALUES ('{job_name}', '{driver}', {status}, {submitted}, 'e2e@example.com')",
        executions_table(b),
        q(b, "JobName"),
        q(b, "SparkJobId"),
        q(b, "Status"),
        q(b, "SubmittedAt"),
        q(b, "RequestedBy"),
    );
    db.db
        .execute_unprepared(&statement)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// `Status` and `ErrorMessage` of the application's row for `job_name`, as text.
async fn status_and_error(db: &TestDb, job_name: &str) -> (Option<String>, Option<String>) {
    let b = db.backend;
    let text = if b == Backend::MariaDb {
        "CHAR"
    } else {
        "TEXT"
    };
    let statement = format!(
        "SELECT CAST({} AS {text}), {} FROM {} WHERE {} = '{job_name}'",
        q(b, "Status"),
        q(b, "ErrorMessage"),
        executions_table(b),
        q(b, "JobName"),
    );
    let row = db
        .db
        .query_one_raw(Statement::from_string(
            db.db.get_database_backend(),
            statement,
        ))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no application row {job_name}"));
    (
        row.try_get_by_index(0).unwrap(),
        row.try_get_by_index(1).unwrap(),
    )
}

/// The binary running on `dir`'s config, once it says so. A test that fails first kills it
/// (with its log printed): no jobwarden may outlive its test and keep polling.
fn start(dir: &Path) -> Running {
    let mut running = jobwarden_in(dir).start();
    running.wait_for_line("jobwarden running", Duration::from_secs(60));
    running
}

/// How long a stopped service may take to exit.
const STOP: Duration = Duration::from_secs(60);

async fn check_config_prints_the_checked_mapping(db: TestDb) {
    create_orm_schema(&db).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &db.url, &[], &orm_mapping(db.backend));

    let out = run_to_end(jobwarden(dir.path()).arg("check-config"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let checked = stdout
        .split_once("# mapped tables: checked against the database\n")
        .unwrap_or_else(|| panic!("no checked mapping printed:\n{stdout}"))
        .1;
    let schema = if db.backend == Backend::Postgres {
        "app."
    } else {
        ""
    };
    for expected in [
        format!("# tables.executions -> {schema}SparkJobExecutions"),
        "\"ExecutionId\"".to_owned(),
        "\"SparkJobId\"".to_owned(),
        "Succeeded=3".to_owned(),
        format!("# tables.queue -> {schema}TransformationJobQueue"),
        "\"GeneratedFields\"".to_owned(),
    ] {
        assert!(checked.contains(&expected), "{expected} in:\n{checked}");
    }
    assert!(
        checked.lines().all(|l| l.starts_with("# ")),
        "every line of the checked mapping is a comment, so the output stays valid TOML:\n{checked}"
    );
}

async fn check_config_exits_6_naming_a_missing_column(db: TestDb) {
    create_orm_schema(&db).await;
    let mut mapping = orm_mapping(db.backend);
    mapping.executions.as_mut().unwrap().columns.progress = Some("Percent".into());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &db.url, &[], &mapping);

    let out = run_to_end(jobwarden(dir.path()).arg("check-config"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stdout}{stderr}");
    assert!(
        stderr.contains("tables.executions.columns.progress"),
        "{stderr}"
    );
    assert!(stderr.contains("\"Percent\""), "{stderr}");
    assert!(stderr.contains("no such column"), "{stderr}");
    assert!(
        !stdout.contains("checked against the database"),
        "a mapping that does not fit is not shown as checked:\n{stdout}"
    );
}

async fn the_binary_keeps_mapped_rows_true(db: TestDb) {
    create_orm_schema(&db).await;
    let spark = SparkServer::start().await;
    // (job, driver, Spark's answer, the application's status, the status expected at the end)
    let jobs = [
        ("e2e-finished", "driver-finished", "FINISHED", 0, "3"),
        ("e2e-failed", "driver-failed", "FAILED", 1, "4"),
        ("e2e-running", "driver-running", "RUNNING", 0, "2"),
    ];
    for (_, driver, state, _, _) in jobs {
        spark.answer(driver, Answer::State(state));
    }
    let (job, driver, _, status, _) = jobs[0];
    insert_execution(&db, job, driver, status).await;
    let dir = tempfile::tempdir().unwrap();
    let url = spark.url();
    write_config(
        dir.path(),
        &db.url,
        &[
            ("rest_url", &url),
            ("master_ui_url", &url),
            ("poll_interval", "1s"),
        ],
        &orm_mapping(db.backend),
    );

    let service = start(dir.path());
    // Rows the application inserts while jobwarden runs are kept true too, not just those
    // found at start.
    for (job, driver, _, status, _) in &jobs[1..] {
        insert_execution(&db, job, driver, *status).await;
    }
    let started = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "the application's Status columns to say 3 / 4 / 2",
        || async {
            let mut all = true;
            for (job, _, _, _, expected) in jobs {
                all &= status_and_error(&db, job).await.0.as_deref() == Some(expected);
            }
            all
        },
    )
    .await;
    eprintln!("rows true {:?} after the last insert", started.elapsed());
    let (_, reason) = status_and_error(&db, "e2e-failed").await;
    assert!(
        reason.is_some_and(|r| !r.is_empty()),
        "the failed driver's reason is in the application's ErrorMessage"
    );

    let (status, log) = service.stop(STOP);
    assert!(status.success(), "exit {status:?}:\n{log}");
}

crate::on_every_database!(
    check_config_prints_the_checked_mapping,
    check_config_exits_6_naming_a_missing_column,
    the_binary_keeps_mapped_rows_true,
);

#[actix_rt::test]
async fn real_spark_drivers_end_true_in_a_mapped_table() {
    let Some(cluster) = crate::real_spark::cluster() else {
        return;
    };
    let _cluster = crate::real_spark::CLUSTER.lock().await;
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    create_orm_schema(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let jar = crate::real_spark::build_jar(dir.path(), &cluster.jars);
    let http = reqwest::Client::new();
    let sleeper = crate::real_spark::submit(&http, &cluster, &jar, "Sleep", &["2000"]).await;
    let failer = crate::real_spark::submit(&http, &cluster, &jar, "Fail", &[]).await;
    insert_execution(&db, "e2e-sleep", &sleeper, 0).await;
    insert_execution(&db, "e2e-fail", &failer, 0).await;
    write_config(
        dir.path(),
        &db.url,
        &[
            ("rest_url", &cluster.rest),
            ("master_ui_url", &cluster.ui),
            ("poll_interval", "1s"),
            ("request_timeout", "5s"),
        ],
        &orm_mapping(Backend::Sqlite),
    );

    let service = start(dir.path());
    let started = Instant::now();
    // Spark on two cores takes a while to launch and reap even trivial drivers.
    wait_until(
        Duration::from_secs(180),
        "Succeeded (3) and Failed (4) in the application's rows",
        || async {
            status_and_error(&db, "e2e-sleep").await.0.as_deref() == Some("3")
                && status_and_error(&db, "e2e-fail").await.0.as_deref() == Some("4")
        },
    )
    .await;
    eprintln!("both drivers final {:?} after start", started.elapsed());
    let (_, reason) = status_and_error(&db, "e2e-fail").await;
    let reason = reason.expect("the failure reason is in the application's ErrorMessage");
    assert!(
        reason.starts_with(
            "Caused by: java.lang.IllegalStateException: input table missing: jobwarden-e2e"
        ),
        "{reason}"
    );
    assert_eq!(status_and_error(&db, "e2e-sleep").await.1, None);

    let (status, log) = service.stop(STOP);
    assert!(status.success(), "exit {status:?}:\n{log}");
    db.drop_database().await;
}
