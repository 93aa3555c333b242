//! The service's own memory over a large fleet: the `jobwarden` binary, in its own process,
//! polls every job of a fresh SQLite file twice against a Spark-protocol server; its peak
//! resident set (`VmHWM`) is read from `/proc`, once as it starts and once per allocator
//! setting, side by side in one run.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use jobwarden_testkit::SparkServer;
use sea_orm::{ConnectionTrait, Statement};

use super::instances::{bench_service, insert_executions, migrated, service_binary, STOP};

/// One run of the service over the fleet.
#[derive(Debug, Clone)]
pub struct MemoryFigures {
    /// What the run changed in the service's environment (`-` for nothing).
    pub setting: String,
    pub peak_rss_kb: u64,
    /// The largest anonymous part of the resident set seen while it ran (the heap, stacks),
    /// sampled every 100 ms; what the allocator can give back or keep.
    pub peak_anon_kb: u64,
    /// The largest file-backed part seen (the binary's own pages and its libraries): a cost
    /// no allocator changes.
    pub peak_file_kb: u64,
    /// The resident set once both cycles are over, before the service stops.
    pub end_rss_kb: u64,
    /// The first cycle, every job changing from Queued to Running.
    pub first_cycle: f64,
    /// User plus system CPU of the service over both cycles, per status check.
    pub cpu_micros_per_check: f64,
}

/// The service over `jobs` jobs with `env` added to its environment.
pub async fn measure(jobs: usize, env: &[(&str, &str)]) -> anyhow::Result<MemoryFigures> {
    let binary = service_binary()?;
    let scratch = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        scratch.path().join("memory.db").display()
    );
    let db = migrated(&url).await?;
    insert_executions(&db, "m", 0..jobs).await?;
    let server = SparkServer::start().await.without_request_counts();
    let mut service = bench_service(&binary, &url, &server.url(), "memory")
        .env("JOBWARDEN__SPARK__POLL_INTERVAL", "2s");
    for (key, value) in env {
        service = service.env(key, value);
    }
    let child = service.try_start().context("cannot start the service")?;
    let pid = child.pid();
    let outcome = async {
        let deadline = Instant::now() + Duration::from_secs(600);
        let started = Instant::now();
        let mut first_cycle = None;
        let (mut peak_anon_kb, mut peak_file_kb) = (0, 0);
        // Two cycles: the first writes every row, the second finds nothing changed.
        while server.answered_status_requests() < jobs * 2 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the service did not poll every job twice"
            );
            if first_cycle.is_none() && running(&db).await? >= jobs {
                first_cycle = Some(started.elapsed().as_secs_f64());
            }
            peak_anon_kb = peak_anon_kb.max(status_kb(pid, "RssAnon")?);
            peak_file_kb = peak_file_kb.max(status_kb(pid, "RssFile")?);
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        let checks = server.answered_status_requests();
        Ok(MemoryFigures {
            setting: if env.is_empty() {
                "-".into()
            } else {
                env.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
            peak_rss_kb: status_kb(pid, "VmHWM")?,
            peak_anon_kb,
            peak_file_kb,
            end_rss_kb: status_kb(pid, "VmRSS")?,
            first_cycle: first_cycle.unwrap_or_else(|| started.elapsed().as_secs_f64()),
            cpu_micros_per_check: cpu_seconds(pid)? * 1e6 / checks as f64,
        })
    }
    .await;
    child.signal_quietly("TERM");
    child.wait(STOP);
    db.close().await?;
    outcome
}

async fn running(db: &sea_orm::DatabaseConnection) -> anyhow::Result<usize> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM spark_job_executions WHERE status = 'Running'",
        ))
        .await?
        .context("no count")?;
    Ok(row.try_get::<i64>("", "n")? as usize)
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// User plus system time the process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unreadable /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields of the whole line: 12th and 13th here.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf reads a constant of the running system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / per_second)
}
