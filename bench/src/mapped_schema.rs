//! What supervising an application's own table costs per poll: the service over the same
//! fleet once on jobwarden's own table and once on an ORM-shaped table mapped in `[tables]`,
//! in one run, a first cycle (every job changes) and a steady cycle (nothing changes).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use jobwarden::actors::scheduler::{GetSchedulerStats, Scheduler, Tick};
use jobwarden::config::{Settings, TablesSettings};
use jobwarden::startup::Application;
use jobwarden_testkit::SparkServer;
use sea_orm::{ConnectionTrait, Database, DatabaseBackend};

/// Seconds of each cycle for one schema.
#[derive(Debug, Clone, Copy)]
pub struct CycleSeconds {
    pub first: f64,
    pub steady: f64,
    /// Rows the steady cycle wrote (none expected: nothing changed).
    pub steady_writes: u64,
}

const MAPPING: &str = r#"
[executions]
table = "SparkJobExecutions"
[executions.columns]
execution_id = "ExecutionId"
submission_id = "SparkJobId"
status = "Status"
progress = "Progress"
error_message = "ErrorMessage"
started_at = "StartedAt"
completed_at = "CompletedAt"
[executions.statuses]
Queued = 0
Submitting = 1
Running = 2
Succeeded = 3
Failed = 4
Cancelled = 5
"#;

/// The application's table, as an ORM creates it on `backend`.
fn orm_table(backend: DatabaseBackend) -> &'static str {
    match backend {
        DatabaseBackend::Postgres => {
            r#"CREATE TABLE "SparkJobExecutions" ("ExecutionId" integer PRIMARY KEY,
            "JobName" text NOT NULL, "SparkJobId" text NULL, "Status" integer NOT NULL,
            "Progress" double precision NOT NULL DEFAULT 0, "ErrorMessage" text NULL,
            "StartedAt" timestamp with time zone NULL, "CompletedAt" timestamp NULL)"#
        }
        DatabaseBackend::MySql => {
            r#"CREATE TABLE `SparkJobExecutions` (`ExecutionId` int PRIMARY KEY,
            `JobName` longtext NOT NULL, `SparkJobId` varchar(255) NULL, `Status` int NOT NULL,
            `Progress` double NOT NULL DEFAULT 0, `ErrorMessage` longtext NULL,
            `StartedAt` datetime(6) NULL, `CompletedAt` datetime(6) NULL)"#
        }
        _ => {
            r#"CREATE TABLE "SparkJobExecutions" ("ExecutionId" INTEGER NOT NULL PRIMARY KEY,
            "JobName" TEXT NOT NULL, "SparkJobId" TEXT NULL, "Status" INTEGER NOT NULL,
            "Progress" REAL NOT NULL DEFAULT 0, "ErrorMessage" TEXT NULL,
            "StartedAt" TEXT NULL, "CompletedAt" TEXT NULL)"#
        }
    }
}

/// Rows `first..=last` as Queued jobs in one statement, so the set-up is not what is
/// measured (MariaDB stops recursion at 1,000 rows by default: callers go by thousands).
fn fill(backend: DatabaseBackend, mapped: bool, first: usize, last: usize) -> String {
    let text = |prefix: &str| match backend {
        DatabaseBackend::MySql => format!("CONCAT('{prefix}', i)"),
        _ => format!("'{prefix}' || i"),
    };
    let numbers = format!(
        "WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {last})"
    );
    let (insert, select) = if mapped {
        (
            r#"INSERT INTO "SparkJobExecutions" ("ExecutionId", "JobName", "SparkJobId", "Status")"#
                .to_owned(),
            format!("SELECT i, {}, {}, 0 FROM n", text("nightly-"), text("driver-m-")),
        )
    } else {
        (
            "INSERT INTO spark_job_executions (execution_id, submission_id)".to_owned(),
            format!("SELECT {}, {} FROM n", text("own-"), text("driver-o-")),
        )
    };
    let insert = match backend {
        DatabaseBackend::MySql => insert.replace('"', "`"),
        _ => insert,
    };
    // MariaDB and MySQL put the CTE after INSERT; PostgreSQL and SQLite accept it there too.
    format!("{insert} {numbers} {select}")
}

/// A fresh database on the server of `url` (dropped by [`drop_database`]), or a scratch
/// SQLite file.
pub(crate) async fn fresh_database(
    url: Option<&str>,
    scratch: &std::path::Path,
    name: &str,
) -> anyhow::Result<String> {
    let Some(url) = url else {
        return Ok(format!(
            "sqlite://{}?mode=rwc",
            scratch.join(format!("{name}.db")).display()
        ));
    };
    let admin = Database::connect(url)
        .await
        .context("connect to the server")?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    admin.close().await?;
    let mut parsed = url::Url::parse(url)?;
    parsed.set_path(&format!("/{name}"));
    Ok(parsed.to_string())
}

pub(crate) async fn drop_database(url: Option<&str>, name: &str) -> anyhow::Result<()> {
    if let Some(url) = url {
        // The service's pool may still be closing its connections.
        let force = if url.starts_with("postgres") {
            " WITH (FORCE)"
        } else {
            ""
        };
        let admin = Database::connect(url).await?;
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}{force}"))
            .await?;
        admin.close().await?;
    }
    Ok(())
}

async fn wait_for_cycle(scheduler: &actix::Addr<Scheduler>, after: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let stats = scheduler.send(GetSchedulerStats).await?;
        if stats.cycles > after && !stats.cycle_running && stats.in_flight == 0 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the cycle did not finish");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The service over `jobs` Queued jobs on one schema: its first cycle (each job becomes
/// Running) and one more (no change).
pub async fn measure(
    mut settings: Settings,
    database_url: Option<String>,
    jobs: usize,
    mapped: bool,
) -> anyhow::Result<CycleSeconds> {
    let scratch = tempfile::tempdir()?;
    let name = format!(
        "jw_bench_{}_{}",
        if mapped { "mapped" } else { "own" },
        chrono::Utc::now().timestamp_millis()
    );
    let url = fresh_database(database_url.as_deref(), scratch.path(), &name).await?;
    settings.database.url = jobwarden::config::DatabaseUrl::new(url);
    let server = SparkServer::start().await.without_request_counts();
    {
        let db = jobwarden::store::connect(&settings.database).await?;
        jobwarden::store::migrate(&db).await?;
        let backend = db.get_database_backend();
        if mapped {
            db.execute_unprepared(orm_table(backend)).await?;
        }
        for first in (0..jobs).step_by(1000) {
            let last = (first + 999).min(jobs - 1);
            db.execute_unprepared(&fill(backend, mapped, first, last))
                .await?;
        }
        db.close().await?;
    }
    if mapped {
        settings.tables = toml::from_str::<TablesSettings>(MAPPING)?;
    }
    settings.spark.rest_url = server.url();
    settings.spark.master_ui_url = Some(server.url());
    settings.spark.max_concurrent_polls = 64;
    settings.spark.poll_interval = Duration::from_secs(3600);
    settings.http.bind = String::new();
    let started = Instant::now();
    let app = Application::build(settings).await?;
    wait_for_cycle(&app.scheduler, 0).await?;
    let first = started.elapsed().as_secs_f64();
    let written = app.metrics.store_rows_written.get();
    let started = Instant::now();
    app.scheduler.send(Tick).await?;
    wait_for_cycle(&app.scheduler, 1).await?;
    let steady = started.elapsed().as_secs_f64();
    let steady_writes = app.metrics.store_rows_written.get() - written;
    app.shutdown().await;
    drop_database(database_url.as_deref(), &name).await?;
    Ok(CycleSeconds {
        first,
        steady,
        steady_writes,
    })
}
