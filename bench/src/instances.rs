//! Poll throughput of one `jobwarden` process beside three sharing one database, on the same
//! machine in the same run: each set polls a saturated fleet (more due jobs than one interval
//! can take) against a Spark-protocol server, and the server counts the answers.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jobwarden_testkit::process::Jobwarden;
use jobwarden_testkit::SparkServer;
use sea_orm::{ConnectionTrait, DatabaseConnection};

/// Status answers per second for `processes` instances over `jobs` running jobs.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub processes: usize,
    pub polls_per_second: f64,
}

/// The service binary built beside this one (`cargo build --release` builds both).
pub(crate) fn service_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me
        .parent()
        .context("the benchmark binary has no directory")?;
    let candidate = dir.join("jobwarden");
    anyhow::ensure!(
        candidate.exists(),
        "{} not found: build the service next to the benchmark (cargo build --release --bins)",
        candidate.display()
    );
    Ok(candidate)
}

/// A connection to `url` made as the service makes it, the schema migrated.
pub(crate) async fn migrated(url: &str) -> anyhow::Result<DatabaseConnection> {
    let settings = jobwarden::config::DatabaseSettings {
        url: jobwarden::config::DatabaseUrl::new(url.to_owned()),
        ..jobwarden::config::load(None)?.settings.database
    };
    let db = jobwarden::store::connect(&settings).await?;
    jobwarden::store::migrate(&db).await?;
    Ok(db)
}

/// Inserts execution `<prefix>-<i>` (submission `driver-<prefix>-<i>`) for each of `ids`, as an
/// application writing straight to the table would, a thousand rows to a statement.
pub(crate) async fn insert_executions(
    db: &DatabaseConnection,
    prefix: &str,
    ids: Range<usize>,
) -> anyhow::Result<()> {
    let ids: Vec<usize> = ids.collect();
    for chunk in ids.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| format!("('{prefix}-{i}', 'driver-{prefix}-{i}')"))
            .collect();
        db.execute_unprepared(&format!(
            "INSERT INTO spark_job_executions (execution_id, submission_id) VALUES {}",
            values.join(", ")
        ))
        .await?;
    }
    Ok(())
}

/// How long a stopped instance may take to exit before the run fails.
pub(crate) const STOP: Duration = Duration::from_secs(60);

/// An instance the benchmarks start, configured by nothing but these variables: `binary`
/// polling `spark` for `db_url`'s jobs as `id`, no HTTP, warnings only.
pub(crate) fn bench_service(binary: &Path, db_url: &str, spark: &str, id: &str) -> Jobwarden {
    Jobwarden::new(binary)
        .inherit_only_path()
        .env("JOBWARDEN__DATABASE__URL", db_url)
        .env("JOBWARDEN__SPARK__REST_URL", spark)
        .env("JOBWARDEN__SPARK__MASTER_UI_URL", spark)
        .env("JOBWARDEN__SPARK__MAX_CONCURRENT_POLLS", "64")
        .env("JOBWARDEN__INSTANCE__ID", id)
        .env("JOBWARDEN__HTTP__BIND", "")
        .env("JOBWARDEN__TELEMETRY__LEVEL", "warn")
}

/// Runs `processes` instances over a fresh database holding `jobs` running jobs; measures the
/// answers per second over `window` once every job has been polled once.
pub async fn measure(
    database_url: &str,
    jobs: usize,
    processes: usize,
    window: Duration,
) -> anyhow::Result<Throughput> {
    let binary = service_binary()?;
    let scratch = tempfile::tempdir()?;
    let name = format!(
        "jw_bench_instances_{processes}_{}",
        chrono::Utc::now().timestamp_millis()
    );
    let url =
        super::mapped_schema::fresh_database(Some(database_url), scratch.path(), &name).await?;
    {
        let db = migrated(&url).await?;
        insert_executions(&db, "i", 0..jobs).await?;
        db.close().await?;
    }
    let server = SparkServer::start().await.without_request_counts();
    let mut children = Vec::new();
    for n in 0..processes {
        let service = bench_service(&binary, &url, &server.url(), &format!("bench-{n}"))
            .env("JOBWARDEN__SPARK__POLL_INTERVAL", "1s")
            .env("JOBWARDEN__INSTANCE__LEASE", "6s");
        children.push(service.try_start().context("cannot start an instance")?);
    }
    let outcome = async {
        let deadline = Instant::now() + Duration::from_secs(300);
        // Warm-up: every job polled once and the leases spread.
        while server.answered_status_requests() < jobs * 2 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the instances did not start polling"
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        let before = server.answered_status_requests();
        let started = Instant::now();
        actix_rt::time::sleep(window).await;
        let answered = server.answered_status_requests() - before;
        Ok(Throughput {
            processes,
            polls_per_second: answered as f64 / started.elapsed().as_secs_f64(),
        })
    }
    .await;
    // Signalled together, they shut down side by side rather than one after another.
    for child in &children {
        child.signal_quietly("TERM");
    }
    for child in children {
        child.wait(STOP);
    }
    super::mapped_schema::drop_database(Some(database_url), &name).await?;
    outcome
}
