//! A soak: the `jobwarden` binary over a large fleet with steady churn (jobs ending, new ones
//! arriving) for a long time, sampled at a fixed period: the service's resident memory, open
//! file descriptors, database connections, and how the history and outbox grow. Memory should
//! stay flat once warm; the closing line compares the last sample with the first warm one.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use jobwarden_testkit::{Answer, SparkServer};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

/// One row of the soak's table.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Duration,
    pub rss_mb: f64,
    pub fds: usize,
    pub db_connections: Option<i64>,
    pub history_rows: i64,
    pub outbox_rows: i64,
    pub finished_jobs: i64,
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("{sql}: no row"))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// How long the stopped service may take to exit before the run fails.
const STOP: Duration = Duration::from_secs(60);

/// Inserts jobs `from..to` and has Spark answer that they run.
async fn insert_running(
    db: &DatabaseConnection,
    server: &SparkServer,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    super::instances::insert_executions(db, "soak", from..to).await?;
    for i in from..to {
        server.answer(&format!("driver-soak-{i}"), Answer::State("RUNNING"));
    }
    Ok(())
}

pub async fn run(
    database_url: Option<String>,
    jobs: usize,
    minutes: u64,
    sample_every: Duration,
    churn_per_minute: usize,
) -> anyhow::Result<()> {
    let binary = super::instances::service_binary()?;
    let scratch = tempfile::tempdir()?;
    let name = format!("jw_bench_soak_{}", chrono::Utc::now().timestamp_millis());
    let url = super::mapped_schema::fresh_database(database_url.as_deref(), scratch.path(), &name)
        .await?;
    let db = super::instances::migrated(&url).await?;
    let server = SparkServer::start().await.without_request_counts();
    insert_running(&db, &server, 0, jobs).await?;
    let mut service = super::instances::bench_service(&binary, &url, &server.url(), "soak")
        .env("JOBWARDEN__SPARK__STATUS_SOURCE", "rest")
        .try_start()
        .context("cannot start the service")?;
    let pid = service.pid();
    let connections = if url.starts_with("postgres") {
        Some(format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
    } else if url.starts_with("mysql") {
        Some("SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.PROCESSLIST WHERE DB = DATABASE()".to_owned())
    } else {
        None
    };
    println!("soak: {jobs} jobs, {churn_per_minute} ending and as many new per minute, {minutes} min, a sample every {}", humantime::format_duration(sample_every));
    println!(
        "| time | RSS | open fds | DB connections | history rows | outbox rows | finished jobs |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let started = Instant::now();
    let until = started + Duration::from_secs(minutes * 60);
    let mut samples: Vec<Sample> = Vec::new();
    let (mut next_sample, mut next_churn) = (started, started);
    let (mut ended, mut added) = (0usize, jobs);
    let churn_step = Duration::from_secs(1);
    let per_step = churn_per_minute.div_ceil(60).max(1);
    while Instant::now() < until {
        if let Some(status) = service.exit_status() {
            anyhow::bail!(
                "the service exited during the soak: {status}\n{}",
                service.log_so_far()
            );
        }
        if Instant::now() >= next_churn {
            for i in ended..(ended + per_step).min(added) {
                server.answer(&format!("driver-soak-{i}"), Answer::State("FINISHED"));
            }
            ended = (ended + per_step).min(added);
            insert_running(&db, &server, added, added + per_step).await?;
            added += per_step;
            next_churn += churn_step;
        }
        if Instant::now() >= next_sample {
            let sample = Sample {
                at: started.elapsed(),
                rss_mb: rss_mb(pid),
                fds: fds(pid),
                db_connections: match &connections {
                    Some(sql) => Some(scalar(&db, sql).await?),
                    None => None,
                },
                history_rows: scalar(&db, "SELECT COUNT(*) FROM job_status_history").await?,
                outbox_rows: scalar(&db, "SELECT COUNT(*) FROM jobwarden_outbox").await?,
                finished_jobs: scalar(
                    &db,
                    "SELECT COUNT(*) FROM spark_job_executions WHERE status = 'Succeeded'",
                )
                .await?,
            };
            println!(
                "| {} | {:.1} MB | {} | {} | {} | {} | {} |",
                humantime::format_duration(Duration::from_secs(sample.at.as_secs())),
                sample.rss_mb,
                sample.fds,
                sample.db_connections.map_or("-".into(), |c| c.to_string()),
                sample.history_rows,
                sample.outbox_rows,
                sample.finished_jobs
            );
            samples.push(sample);
            next_sample += sample_every;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    service.stop(STOP);
    db.close().await?;
    super::mapped_schema::drop_database(database_url.as_deref(), &name).await?;
    // The first samples include the first cycle over the whole fleet: compare from the third.
    if let (Some(warm), Some(last)) = (samples.get(2.min(samples.len() - 1)), samples.last()) {
        let growth = last.rss_mb / warm.rss_mb - 1.0;
        println!(
            "memory: {:.1} MB warm, {:.1} MB at the end ({:+.1} %); {} within 10 %; fds {} → {}",
            warm.rss_mb,
            last.rss_mb,
            growth * 100.0,
            if growth.abs() <= 0.10 {
                "flat"
            } else {
                "NOT flat"
            },
            warm.fds,
            last.fds
        );
    }
    Ok(())
}
