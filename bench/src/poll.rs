//! Poll throughput: one full poll cycle over N due jobs against a Spark-protocol server on
//! loopback, for each pool size: status checks completed and written per second.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use jobwarden::actors::scheduler::{GetSchedulerStats, Tick, Ticking};
use jobwarden::config::Settings;
use jobwarden::events::Events;
use jobwarden::store;
use jobwarden_testkit::SparkServer;

use super::cpu::{self, ThreadTimes};

/// Result of one cycle.
#[derive(Debug, Clone)]
pub struct CycleFigures {
    pub jobs: usize,
    pub pool: usize,
    pub seconds: f64,
    /// CPU seconds each thread of the process used during the cycle.
    pub cpu: Vec<(String, f64)>,
}

impl CycleFigures {
    pub fn polls_per_second(&self) -> f64 {
        self.jobs as f64 / self.seconds
    }
}

/// Runs one cycle of `jobs` due jobs with a pool of `pool` against `server`.
pub async fn one_cycle(
    settings: Settings,
    database_url: Option<String>,
    jobs: usize,
    pool: usize,
    server: &SparkServer,
) -> anyhow::Result<CycleFigures> {
    let mut figures = cycles(settings, database_url, jobs, pool, server, 1).await?;
    figures.pop().context("no cycle ran")
}

/// Runs `count` cycles one after the other over the same `jobs` due jobs: the first finds
/// every job Queued and writes it Running; the next ones find nothing changed (the second
/// still looks each running driver's UI up again, as polls 1, 2, 4, 8… of a driver do).
pub async fn cycles(
    mut settings: Settings,
    database_url: Option<String>,
    jobs: usize,
    pool: usize,
    server: &SparkServer,
    count: usize,
) -> anyhow::Result<Vec<CycleFigures>> {
    let scratch = tempfile::tempdir().context("failed to create a scratch directory")?;
    super::scratch_database(
        &mut settings,
        database_url,
        scratch.path(),
        &format!("poll-{pool}"),
    );
    let db = store::connect(&settings.database).await?;
    store::migrate(&db).await?;
    let events = Events::default();
    let store = super::launch_store(db.clone(), &settings, &events);
    let run = format!("poll-{}-{pool}-", chrono::Utc::now().timestamp_millis());
    super::track_all(&store, (0..jobs).map(|i| format!("{run}{i}"))).await?;
    settings.spark.rest_url = server.url();
    settings.spark.master_ui_url = Some(server.url());
    settings.spark.max_concurrent_polls = pool;
    let scheduler = super::start_polling(&settings, &store, &events, Ticking::Manual)?;
    let mut figures = Vec::with_capacity(count);
    for n in 1..=count as u64 {
        let cpu_before = ThreadTimes::now();
        let seconds = super::listing::cycle(&scheduler, n, jobs).await?;
        let cpu = ThreadTimes::now().since(&cpu_before);
        figures.push(CycleFigures {
            jobs,
            pool,
            seconds,
            cpu,
        });
    }
    scheduler.do_send(jobwarden::actors::scheduler::StopPolling);
    Ok(figures)
}

/// Prints one row per pool size.
pub async fn run(
    settings: Settings,
    database_url: Option<String>,
    jobs: usize,
    pools: Vec<usize>,
) -> anyhow::Result<()> {
    println!(
        "poll cycle: {jobs} due jobs, Spark-protocol server on loopback, {}",
        database_url.as_deref().unwrap_or("scratch SQLite")
    );
    println!("{:>6} {:>10} {:>12}", "pool", "seconds", "polls/s");
    for pool in pools {
        let server = SparkServer::start().await.without_request_counts();
        let figures =
            one_cycle(settings.clone(), database_url.clone(), jobs, pool, &server).await?;
        println!(
            "{:>6} {:>10.3} {:>12.0}",
            figures.pool,
            figures.seconds,
            figures.polls_per_second()
        );
    }
    Ok(())
}

/// What an external load generator (`wrk`) gets from a server: the ceiling for a poller pool
/// as large as its connections.
#[derive(Debug, Clone, Copy)]
pub struct WrkFigures {
    pub requests_per_second: f64,
    /// wrk's own user plus system CPU per request.
    pub cpu_per_request: f64,
}

/// `wrk` against `server` with `connections` connections; `None` without wrk.
pub async fn wrk_ceiling(
    server: &SparkServer,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<Option<WrkFigures>> {
    let url = format!("{}/v1/submissions/status/driver-wrk", server.url());
    let children_before = cpu::children_seconds();
    let spawned = std::process::Command::new("wrk")
        .args([
            "-t2".to_owned(),
            format!("-c{}", connections.max(2)),
            format!("-d{seconds}s"),
            url,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(_) => return Ok(None),
    };
    // The server lives on this thread: keep serving while wrk runs.
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let wrk_cpu = cpu::children_seconds() - children_before;
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut out)?;
    }
    let rate: Option<f64> = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok());
    Ok(rate.map(|rate| WrkFigures {
        requests_per_second: rate,
        cpu_per_request: wrk_cpu / (rate * seconds.max(1) as f64),
    }))
}

/// How long after Spark's answer changes the rows say so: `flip` of `jobs` running jobs turn
/// FINISHED at one instant, with the scheduler ticking every `interval`. Returns (p50, p99)
/// in seconds.
pub async fn freshness(
    mut settings: Settings,
    jobs: usize,
    flip: usize,
    interval: Duration,
) -> anyhow::Result<(f64, f64)> {
    let server = SparkServer::start().await;
    let scratch = tempfile::tempdir()?;
    super::scratch_database(&mut settings, None, scratch.path(), "freshness");
    let db = store::connect(&settings.database).await?;
    store::migrate(&db).await?;
    let events = Events::default();
    let store = super::launch_store(db.clone(), &settings, &events);
    super::track_all(&store, (0..jobs).map(|i| format!("f{i}"))).await?;
    settings.spark.rest_url = server.url();
    settings.spark.master_ui_url = Some(server.url());
    settings.spark.poll_interval = interval;
    // Ticks as the service does: a cycle at start, then one every interval.
    let scheduler = super::start_polling(&settings, &store, &events, Ticking::Automatic)?;
    loop {
        let stats = scheduler.send(GetSchedulerStats).await?;
        if stats.cycles > 0 && !stats.cycle_running {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    // Flip at a moment unrelated to the ticks.
    actix_rt::time::sleep(interval / 3).await;
    let flipped_at = chrono::Utc::now();
    for i in 0..flip {
        server.answer(
            &format!("driver-f{i}"),
            jobwarden_testkit::Answer::State("FINISHED"),
        );
    }
    let deadline = Instant::now() + interval * 10 + Duration::from_secs(60);
    let delays = loop {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let done = entity::spark_job_executions::Entity::find()
            .filter(entity::spark_job_executions::Column::Status.eq("Succeeded"))
            .all(&db)
            .await?;
        if done.len() >= flip {
            break done
                .iter()
                .filter_map(|r| r.completed_at)
                .map(|t| (t - flipped_at).num_milliseconds().max(0) as f64 / 1000.0)
                .collect::<Vec<_>>();
        }
        anyhow::ensure!(Instant::now() < deadline, "rows did not catch up");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    scheduler.do_send(jobwarden::actors::scheduler::StopPolling);
    let mut sorted = delays;
    sorted.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    Ok((pick(0.5), pick(0.99)))
}

/// Rows the store writes while `jobs` running jobs are polled `cycles` more times with nothing
/// changing: returns (rows written, polls answered) over those cycles.
pub async fn steady_state(
    mut settings: Settings,
    jobs: usize,
    cycles: usize,
) -> anyhow::Result<(u64, u64)> {
    let server = SparkServer::start().await.without_request_counts();
    let scratch = tempfile::tempdir()?;
    super::scratch_database(&mut settings, None, scratch.path(), "steady");
    let db = store::connect(&settings.database).await?;
    store::migrate(&db).await?;
    let metrics = std::sync::Arc::new(jobwarden::metrics::Metrics::new());
    let events = Events::new(metrics.clone());
    let store = super::launch_store(db.clone(), &settings, &events);
    super::track_all(&store, (0..jobs).map(|i| format!("s{i}"))).await?;
    settings.spark.rest_url = server.url();
    settings.spark.master_ui_url = Some(server.url());
    let scheduler = super::start_polling(&settings, &store, &events, Ticking::Manual)?;
    let cycle = || async {
        scheduler.send(Tick).await?;
        loop {
            let stats = scheduler.send(GetSchedulerStats).await?;
            if !stats.cycle_running {
                return anyhow::Ok(stats.completed);
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    };
    // The first cycle finds every job Queued and writes each as Running.
    let first = cycle().await?;
    let written = metrics.store_rows_written.get();
    let mut completed = first;
    for _ in 0..cycles {
        completed = cycle().await?;
    }
    scheduler.do_send(jobwarden::actors::scheduler::StopPolling);
    Ok((
        metrics.store_rows_written.get() - written,
        completed - first,
    ))
}

/// The service as `jobwarden run` builds it, over `jobs` Queued rows inserted by one SQL
/// statement (so no set-up memory counts), until its first cycle has made every row Running:
/// returns that cycle's seconds.
pub async fn fleet(
    mut settings: Settings,
    jobs: usize,
    scratch: &std::path::Path,
) -> anyhow::Result<f64> {
    use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let server = SparkServer::start().await.without_request_counts();
    super::scratch_database(&mut settings, None, scratch, "fleet");
    {
        let db = store::connect(&settings.database).await?;
        store::migrate(&db).await?;
        db.execute_unprepared(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
             INSERT INTO spark_job_executions (execution_id, submission_id) \
             SELECT 'fleet-' || i, 'driver-fleet-' || i FROM n",
            jobs.saturating_sub(1)
        ))
        .await?;
        db.close().await?;
    }
    settings.spark.rest_url = server.url();
    settings.spark.master_ui_url = Some(server.url());
    settings.spark.max_concurrent_polls = 64;
    settings.http.bind = String::new();
    let started = Instant::now();
    let app = jobwarden::startup::Application::build(settings).await?;
    let deadline = started + Duration::from_secs(600);
    loop {
        let running = entity::spark_job_executions::Entity::find()
            .filter(entity::spark_job_executions::Column::Status.eq("Running"))
            .count(&app.db)
            .await?;
        if running as usize >= jobs {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the first cycle did not finish");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    app.shutdown().await;
    Ok(seconds)
}
