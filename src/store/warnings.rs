//! The two early warnings nobody else gives: a job Spark has not confirmed for half of
//! `stuck_timeout` (it will be failed at the other half), and a job running far longer than
//! its name's past successful runs. Found by the leader's sweep, judged again at write time,
//! sent once per run.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::spark_job_executions as executions;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::domain::JobStatus;
use crate::store_api::{Warning, WriteOp};

/// A name's past run: name, started, completed.
type PastRun = (Option<String>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Most rows one look considers.
const PAGE: u64 = 10_000;
/// How many of a name's latest successful runs its usual duration is taken from.
const HISTORY: u64 = 20_000;

/// Unfinished jobs whose unconfirmed run began at least `half` ago.
pub async fn stuck_soon(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
    half: Duration,
) -> Result<Vec<WriteOp>, DbErr> {
    let since = now - chrono::Duration::from_std(half).unwrap_or_default();
    let ids: Vec<String> = executions::Entity::find()
        .select_only()
        .column(executions::Column::ExecutionId)
        .filter(
            executions::Column::Status.is_in(JobStatus::NON_TERMINAL.iter().map(|s| s.as_str())),
        )
        .filter(executions::Column::FailingSince.lte(since))
        .order_by_asc(executions::Column::ExecutionId)
        .limit(PAGE)
        .into_tuple()
        .all(db)
        .await?;
    Ok(ids
        .into_iter()
        .map(|execution_id| WriteOp::Warn {
            execution_id,
            warning: Warning::StuckSoon,
            now,
        })
        .collect())
}

/// Running jobs past `factor` × the 95th percentile of their name's successful runs, for
/// names with at least `min_runs` of them.
pub async fn running_long(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
    factor: f64,
    min_runs: usize,
) -> Result<Vec<WriteOp>, DbErr> {
    let running: Vec<(String, Option<String>, Option<DateTime<Utc>>)> = executions::Entity::find()
        .select_only()
        .column(executions::Column::ExecutionId)
        .column(executions::Column::JobName)
        .column(executions::Column::StartedAt)
        .filter(executions::Column::Status.eq(JobStatus::Running.as_str()))
        .filter(executions::Column::JobName.is_not_null())
        .filter(executions::Column::StartedAt.is_not_null())
        .order_by_asc(executions::Column::ExecutionId)
        .limit(PAGE)
        .into_tuple()
        .all(db)
        .await?;
    if running.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = running.iter().filter_map(|r| r.1.clone()).collect();
    names.sort_unstable();
    names.dedup();
    let mut usual: HashMap<String, Vec<Duration>> = HashMap::new();
    for chunk in names.chunks(500) {
        let runs: Vec<PastRun> = executions::Entity::find()
            .select_only()
            .column(executions::Column::JobName)
            .column(executions::Column::StartedAt)
            .column(executions::Column::CompletedAt)
            .filter(executions::Column::Status.eq(JobStatus::Succeeded.as_str()))
            .filter(executions::Column::JobName.is_in(chunk.iter().cloned()))
            .filter(executions::Column::StartedAt.is_not_null())
            .filter(executions::Column::CompletedAt.is_not_null())
            .order_by_desc(executions::Column::CompletedAt)
            .limit(HISTORY)
            .into_tuple()
            .all(db)
            .await?;
        for (name, started, completed) in runs {
            if let (Some(name), Some(s), Some(c)) = (name, started, completed) {
                if let Ok(d) = (c - s).to_std() {
                    usual.entry(name).or_default().push(d);
                }
            }
        }
    }
    let mut ops = Vec::new();
    for (execution_id, name, started) in running {
        let (Some(name), Some(started)) = (name, started) else {
            continue;
        };
        let Some((p95, runs)) = usual.get_mut(&name).and_then(|d| p95(d, min_runs)) else {
            continue;
        };
        let limit = p95.mul_f64(factor);
        if (now - started).to_std().is_ok_and(|ran| ran >= limit) {
            ops.push(WriteOp::Warn {
                execution_id,
                warning: Warning::RunningLong {
                    usual: p95,
                    runs,
                    factor,
                },
                now,
            });
        }
    }
    Ok(ops)
}

/// The 95th percentile (nearest rank) and the number of runs, once there are `min_runs`.
pub fn p95(durations: &mut [Duration], min_runs: usize) -> Option<(Duration, usize)> {
    if durations.len() < min_runs.max(1) {
        return None;
    }
    durations.sort_unstable();
    let rank = (durations.len() as f64 * 0.95).ceil() as usize;
    Some((
        durations[rank.clamp(1, durations.len()) - 1],
        durations.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_duration_is_the_95th_percentile_once_there_are_enough_runs() {
        let mut few: Vec<Duration> = (1..=4).map(Duration::from_secs).collect();
        assert_eq!(p95(&mut few, 5), None);
        let mut runs: Vec<Duration> = (1..=20).rev().map(Duration::from_secs).collect();
        assert_eq!(p95(&mut runs, 5), Some((Duration::from_secs(19), 20)));
    }
}
