//! Worlds that several test files build alike: store tests' driven clock and the observations
//! they write, and the real binary supervising a real Spark cluster (started, watched through
//! its SQLite file, stopped) the same way in every real-Spark test.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use entity::{job_status_history, spark_job_executions};
use jobwarden::domain::{JobStatus, Observation};
use jobwarden::store_api::WriteOp;
use sea_orm::{DatabaseConnection, EntityTrait};

use crate::binary::{jobwarden, Running};
use crate::helpers::{wait_until, TestDb};
use crate::real_spark::row;

/// A fixed instant `secs` after an arbitrary origin: store tests drive time, never read it.
pub(crate) fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

/// Spark's answer that `id` is in `status` (its raw state the status in capitals) at `t(at)`.
pub(crate) fn observed(id: &str, status: JobStatus, at: i64) -> WriteOp {
    observed_at(id, status, t(at))
}

/// [`observed`] at an instant of the caller's choosing.
pub(crate) fn observed_at(id: &str, status: JobStatus, at: DateTime<Utc>) -> WriteOp {
    WriteOp::Observe {
        asked: None,
        execution_id: id.into(),
        observation: Observation {
            status: Some(status),
            raw_state: Some(status.as_str().to_uppercase()),
            progress: None,
            message: None,
            relaunching: false,
            successors: Vec::new(),
            at,
        },
    }
}

/// The execution row `id`, which must exist.
pub(crate) async fn execution(db: &TestDb, id: &str) -> spark_job_executions::Model {
    spark_job_executions::Entity::find_by_id(id.to_owned())
        .one(&db.db)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no row {id}"))
}

/// The real binary in `dir`, once it says it runs.
pub(crate) fn started(dir: &Path) -> Running {
    started_from(jobwarden(dir))
}

/// Like [`started`], logging jobwarden's debug lines (per-job spans among them).
pub(crate) fn started_logging_debug(dir: &Path) -> Running {
    let mut cmd = jobwarden(dir);
    cmd.env("RUST_LOG", "jobwarden=debug");
    started_from(cmd)
}

fn started_from(cmd: std::process::Command) -> Running {
    let mut service = Running::start(cmd);
    service.wait_for_line("jobwarden running", Duration::from_secs(30));
    service
}

/// SIGTERM, then a clean exit within 30 s; the service's log.
pub(crate) fn stopped(service: Running) -> String {
    service.signal("TERM");
    let (status, log) = service.wait(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    log
}

/// Waits until row `id` exists and `check` holds for it.
pub(crate) async fn wait_for_row(
    db: &DatabaseConnection,
    id: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&spark_job_executions::Model) -> bool,
) {
    let check = &check;
    wait_until(limit, what, || async move {
        row(db, id).await.is_some_and(|r| check(&r))
    })
    .await;
}

pub(crate) async fn wait_for_status(
    db: &DatabaseConnection,
    id: &str,
    status: &str,
    limit: Duration,
) {
    wait_for_row(db, id, &format!("{id} to show {status}"), limit, |r| {
        r.status == status
    })
    .await;
}

/// Waits until row `id` has left the statuses of a job under way.
pub(crate) async fn wait_until_ended(db: &DatabaseConnection, id: &str, limit: Duration) {
    wait_for_row(db, id, "the row to end", limit, |r| {
        !["Queued", "Submitting", "Running"].contains(&r.status.as_str())
    })
    .await;
}

/// Waits until every row of `ids` shows a final status.
pub(crate) async fn wait_all_final(db: &DatabaseConnection, ids: &[&str], limit: Duration) {
    wait_until(limit, "every row to reach a final status", || async move {
        let mut done = 0;
        for id in ids {
            if row(db, id)
                .await
                .is_some_and(|r| ["Succeeded", "Failed", "Cancelled"].contains(&r.status.as_str()))
            {
                done += 1;
            }
        }
        done == ids.len()
    })
    .await;
}

pub(crate) async fn history(db: &DatabaseConnection, id: &str) -> Vec<job_status_history::Model> {
    jobwarden::store::read::execution_with_history(db, id)
        .await
        .unwrap()
        .unwrap()
        .1
}

/// Asserts `id`'s history opens Queued and ends `last_status` from a poll; returns it.
pub(crate) async fn assert_polled_to(
    db: &DatabaseConnection,
    id: &str,
    last_status: &str,
) -> Vec<job_status_history::Model> {
    let history = history(db, id).await;
    assert_eq!(history.first().unwrap().to_status, "Queued", "{id}");
    let last = history.last().unwrap();
    assert_eq!(last.to_status, last_status, "{id}: {history:?}");
    assert_eq!(last.source, "spark_poll", "{id}");
    history
}
