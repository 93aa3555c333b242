//! Every numeric type an application may declare for a mapped column, on every database: an
//! Entity Framework `int Progress` (integer), a `decimal(5,2)`, a `real`, a `smallint` status…
//! Each is read (the application's value is where the rules start) and written (the value
//! jobwarden decides) without a refused change.

use jobwarden::config::TablesSettings;
use jobwarden::startup::Application;
use jobwarden_testkit::{Answer, SparkServer};
use sea_orm::{ConnectionTrait, Statement};

use crate::helpers::{Backend, TestDb};
use crate::mapped::{poll_cycle, q};
use crate::on_every_database;
use crate::operating::instance_settings;

/// The numeric types each database offers, as an application would declare them.
fn numeric_types(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::Postgres => &[
            "smallint",
            "integer",
            "bigint",
            "numeric",
            "numeric(5,2)",
            "real",
            "double precision",
        ],
        Backend::MariaDb => &[
            "TINYINT",
            "SMALLINT",
            "INT",
            "BIGINT",
            "DECIMAL(5,2)",
            "FLOAT",
            "DOUBLE",
        ],
        Backend::Sqlite => &[
            "INTEGER",
            "INT",
            "BIGINT",
            "REAL",
            "NUMERIC",
            "DECIMAL(5,2)",
            "DOUBLE",
        ],
    }
}

fn mapping(table: &str) -> TablesSettings {
    toml::from_str(&format!(
        r#"
        [executions]
        table = "{table}"
        [executions.columns]
        execution_id = "ExecutionId"
        submission_id = "SparkJobId"
        status = "Status"
        progress = "Progress"
        [executions.statuses]
        Queued = 0
        Submitting = 1
        Running = 2
        Succeeded = 3
        Failed = 4
        Cancelled = 5
        "#
    ))
    .unwrap()
}

async fn run(db: &TestDb, statement: &str) {
    db.db
        .execute_unprepared(statement)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

async fn progress_and_status(db: &TestDb, table: &str, id: &str) -> (f64, i64) {
    let b = db.backend;
    let statement = format!(
        "SELECT CAST({p} AS {real}), CAST({s} AS {int}) FROM {t} WHERE {id_col} = '{id}'",
        p = q(b, "Progress"),
        s = q(b, "Status"),
        t = q(b, table),
        id_col = q(b, "ExecutionId"),
        real = if b == Backend::MariaDb {
            "DOUBLE"
        } else {
            "DOUBLE PRECISION"
        },
        int = if b == Backend::MariaDb {
            "SIGNED"
        } else {
            "BIGINT"
        },
    );
    let row = db
        .db
        .query_one_raw(Statement::from_string(
            db.db.get_database_backend(),
            statement,
        ))
        .await
        .unwrap()
        .unwrap();
    (
        row.try_get_by_index(0).unwrap(),
        row.try_get_by_index(1).unwrap(),
    )
}

/// jobwarden's own row for an execution: status, last poll error, last polled.
async fn jobwarden_copy(db: &TestDb, id: &str) -> Option<(String, Option<String>, bool)> {
    use sea_orm::EntityTrait;
    entity::spark_job_executions::Entity::find_by_id(id.to_owned())
        .one(&db.db)
        .await
        .unwrap()
        .map(|row| {
            (
                row.status,
                row.last_poll_error,
                row.last_polled_at.is_some(),
            )
        })
}

async fn every_numeric_progress_column_is_read_and_written(db: TestDb) {
    let b = db.backend;
    for (n, declared) in numeric_types(b).iter().enumerate() {
        let table = format!("Jobs{n}");
        // The status column takes each integer width too.
        let status_type = if declared.to_lowercase().contains("int") {
            declared
        } else {
            "integer"
        };
        run(
            &db,
            &format!(
                "CREATE TABLE {t} ({id} varchar(64) NOT NULL PRIMARY KEY, {sj} varchar(255) NULL, \
                 {st} {status_type} NOT NULL, {p} {declared} NOT NULL DEFAULT 0)",
                t = q(b, &table),
                id = q(b, "ExecutionId"),
                sj = q(b, "SparkJobId"),
                st = q(b, "Status"),
                p = q(b, "Progress"),
            ),
        )
        .await;
        // One the application already moved along (its progress is where the rules start),
        // one that Spark ends now.
        for (id, status, progress) in [("running", 2, 37), ("ending", 2, 12)] {
            run(
                &db,
                &format!(
                    "INSERT INTO {t} VALUES ('{id}-{n}', 'driver-{id}-{n}', {status}, {progress})",
                    t = q(b, &table)
                ),
            )
            .await;
        }
        let spark = SparkServer::start().await;
        spark.answer(&format!("driver-running-{n}"), Answer::State("RUNNING"));
        spark.answer(&format!("driver-ending-{n}"), Answer::State("FINISHED"));
        let mut settings = instance_settings(&db.url, &spark);
        settings.tables = mapping(&table);
        let app = Application::build(settings)
            .await
            .unwrap_or_else(|e| panic!("{declared}: {e}"));
        poll_cycle(&app).await;
        poll_cycle(&app).await;
        let refused: u64 = [
            "decode",
            "data",
            "constraint",
            "schema",
            "permission",
            "other",
        ]
        .iter()
        .map(|c| jobwarden::metrics::Metrics::count(&app.metrics.store_refused, c))
        .sum();
        assert_eq!(refused, 0, "{declared}: no change refused");
        let (progress, status) = progress_and_status(&db, &table, &format!("ending-{n}")).await;
        let copy = jobwarden_copy(&db, &format!("ending-{n}")).await;
        assert_eq!(
            (progress, status),
            (100.0, 3),
            "{declared}: written when Spark ended it (jobwarden's copy: {copy:?})"
        );
        let (progress, status) = progress_and_status(&db, &table, &format!("running-{n}")).await;
        assert_eq!(status, 2, "{declared}");
        assert!(
            progress >= 37.0,
            "{declared}: read, never decreased ({progress})"
        );
        app.shutdown().await;
    }
}

on_every_database!(every_numeric_progress_column_is_read_and_written);

/// An Entity Framework `Guid` key: PostgreSQL's `uuid`, MariaDB's `UUID`.
async fn a_table_keyed_by_uuid_is_supervised(db: TestDb) {
    let b = db.backend;
    let key_type = match b {
        Backend::Postgres => "uuid",
        Backend::MariaDb => "UUID",
        // SQLite has no such type: an application keeps its Guids as TEXT, read as text.
        Backend::Sqlite => return,
    };
    let (t, id, sj, st, p) = (
        q(b, "GuidJobs"),
        q(b, "ExecutionId"),
        q(b, "SparkJobId"),
        q(b, "Status"),
        q(b, "Progress"),
    );
    run(
        &db,
        &format!(
            "CREATE TABLE {t} ({id} {key_type} NOT NULL PRIMARY KEY, {sj} varchar(255) NULL, \
             {st} integer NOT NULL, {p} integer NOT NULL DEFAULT 0)"
        ),
    )
    .await;
    let guid = "7f1e9a52-3c4b-4d2e-9f60-5a8b2c1d0e4f";
    run(
        &db,
        &format!("INSERT INTO {t} VALUES ('{guid}', 'driver-guid', 2, 10)"),
    )
    .await;
    let spark = SparkServer::start().await;
    spark.answer("driver-guid", Answer::State("FINISHED"));
    let mut settings = instance_settings(&db.url, &spark);
    settings.tables = mapping("GuidJobs");
    let app = Application::build(settings).await.unwrap();
    poll_cycle(&app).await;
    poll_cycle(&app).await;
    let (_, status) = progress_and_status(&db, "GuidJobs", guid).await;
    assert_eq!(status, 3, "Succeeded, written under its uuid key");
    let url = format!("http://{}/api/v1/jobs/{guid}", app.http_addr.unwrap());
    let job: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(
        job["job"]["status"], "Succeeded",
        "jobwarden's own copy: {job}"
    );
    app.shutdown().await;
}

on_every_database!(a_table_keyed_by_uuid_is_supervised);
