//! Read queries: what is due for a poll, job listings, one job with its history.

use chrono::{DateTime, Utc};
use entity::{
    job_status_history as history, spark_job_executions as executions,
    transformation_job_queue as queue,
};
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::domain::{JobStatus, Seen, TimeoutPolicy};
use crate::store_api::{DueExecution, DueJobs};

/// Non-terminal executions with a submission id whose next poll time has come and that were
/// not polled since `polled_before`, in execution id order after `after` (keyset paging: the
/// query's size does not grow with the fleet or with the polls in flight).
///
/// One query per unfinished status, each walking the `(status, execution_id)` index from the
/// cursor and stopping at the page's size, merged here. A single query over every unfinished
/// status would be a walk of one status index and a sort of all its rows per page: on a fleet
/// of 100,000 running jobs, each of the cycle's 50 pages read and sorted the whole fleet.
pub async fn due_executions(
    db: &DatabaseConnection,
    page: &DueJobs,
) -> Result<Vec<DueExecution>, DbErr> {
    let mut rows: Vec<DueRow> = Vec::new();
    for status in JobStatus::NON_TERMINAL {
        rows.extend(due_with_status(db, page, status).await?);
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.truncate(usize::try_from(page.limit).unwrap_or(usize::MAX));
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let (
                execution_id,
                submission_id,
                cluster,
                status,
                raw_state,
                progress,
                failures,
                confirmed_at,
            ) = row;
            // A status this build does not know: its polls are always written, and the store
            // says what is wrong with the row.
            let seen = status.parse().ok().map(|status| Seen {
                status,
                raw_state,
                progress: progress.clamp(0, 100) as u8,
                confirmed: failures <= 0 && confirmed_at.is_some(),
            });
            submission_id.map(|submission_id| DueExecution {
                execution_id,
                submission_id,
                cluster,
                fence: None,
                cycle_started: Some(page.polled_before),
                seen,
            })
        })
        .collect())
}

/// A due row as its page reads it, by position (a page is thousands of rows, each looked up
/// column by column): id, submission id, cluster, status, Spark's state, progress, failed
/// polls in a row, last confirmed.
type DueRow = (
    String,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    i16,
    i32,
    Option<DateTime<Utc>>,
);

async fn due_with_status(
    db: &DatabaseConnection,
    page: &DueJobs,
    status: JobStatus,
) -> Result<Vec<DueRow>, DbErr> {
    let mut query = executions::Entity::find()
        .select_only()
        .column(executions::Column::ExecutionId)
        .column(executions::Column::SubmissionId)
        .column(executions::Column::Cluster)
        .column(executions::Column::Status)
        .column(executions::Column::SparkState)
        .column(executions::Column::Progress)
        .column(executions::Column::ConsecutivePollFailures)
        .column(executions::Column::LastConfirmedAt)
        .filter(executions::Column::Status.eq(status.as_str()))
        .filter(executions::Column::SubmissionId.is_not_null())
        .filter(
            Condition::any()
                .add(executions::Column::NextPollAt.is_null())
                .add(executions::Column::NextPollAt.lte(page.now)),
        )
        .filter(
            Condition::any()
                .add(executions::Column::LastPolledAt.is_null())
                .add(executions::Column::LastPolledAt.lt(page.polled_before)),
        );
    if let Some(after) = &page.after {
        query = query.filter(executions::Column::ExecutionId.gt(after.as_str()));
    }
    query
        .order_by_asc(executions::Column::ExecutionId)
        .limit(page.limit)
        .into_tuple()
        .all(db)
        .await
}

/// Executions, most recently changed first.
pub async fn list_executions(
    db: &DatabaseConnection,
    status: Option<JobStatus>,
    limit: u64,
) -> Result<Vec<executions::Model>, DbErr> {
    let mut query = executions::Entity::find();
    if let Some(status) = status {
        query = query.filter(executions::Column::Status.eq(status.as_str()));
    }
    query
        .order_by_desc(executions::Column::UpdatedAt)
        .order_by_asc(executions::Column::ExecutionId)
        .limit(limit)
        .all(db)
        .await
}

/// A page of executions ordered by id, after `cursor` (exclusive).
pub async fn page_executions(
    db: &DatabaseConnection,
    status: Option<JobStatus>,
    cursor: Option<&str>,
    limit: u64,
) -> Result<Vec<executions::Model>, DbErr> {
    let mut query = executions::Entity::find();
    if let Some(status) = status {
        query = query.filter(executions::Column::Status.eq(status.as_str()));
    }
    if let Some(cursor) = cursor {
        query = query.filter(executions::Column::ExecutionId.gt(cursor));
    }
    query
        .order_by_asc(executions::Column::ExecutionId)
        .limit(limit)
        .all(db)
        .await
}

/// One execution and its transitions, oldest first.
pub async fn execution_with_history(
    db: &DatabaseConnection,
    execution_id: &str,
) -> Result<Option<(executions::Model, Vec<history::Model>)>, DbErr> {
    let Some(row) = executions::Entity::find_by_id(execution_id.to_owned())
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let transitions = history_of(db, "spark", execution_id).await?;
    Ok(Some((row, transitions)))
}

/// One queue job and its transitions, oldest first.
pub async fn queue_job_with_history(
    db: &DatabaseConnection,
    job_id: &str,
) -> Result<Option<(queue::Model, Vec<history::Model>)>, DbErr> {
    let Some(row) = queue::Entity::find_by_id(job_id.to_owned()).one(db).await? else {
        return Ok(None);
    };
    let transitions = history_of(db, "queue", job_id).await?;
    Ok(Some((row, transitions)))
}

async fn history_of(
    db: &DatabaseConnection,
    kind: &str,
    job_id: &str,
) -> Result<Vec<history::Model>, DbErr> {
    history::Entity::find()
        .filter(history::Column::JobKind.eq(kind))
        .filter(history::Column::JobId.eq(job_id))
        .order_by_asc(history::Column::Id)
        .all(db)
        .await
}

/// Executions per status, for a quick census.
pub async fn count_by_status(db: &DatabaseConnection) -> Result<Vec<(String, i64)>, DbErr> {
    executions::Entity::find()
        .select_only()
        .column(executions::Column::Status)
        .column_as(
            Expr::expr(Func::count(Expr::col(executions::Column::ExecutionId))),
            "n",
        )
        .group_by(executions::Column::Status)
        .into_tuple()
        .all(db)
        .await
}

/// The submission queue's depth: jobs jobwarden is to submit now, by where they may go (a
/// cluster, `default`, or an allowed set as `east|west`) and priority.
pub async fn submission_queue(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
) -> Result<Vec<(String, i32, i64)>, DbErr> {
    let rows: Vec<(Option<String>, Option<String>, i32, i64)> = executions::Entity::find()
        .select_only()
        .column(executions::Column::Cluster)
        .column(executions::Column::AllowedClusters)
        .column(executions::Column::Priority)
        .column_as(
            Expr::expr(Func::count(Expr::col(executions::Column::ExecutionId))),
            "n",
        )
        .filter(super::ordering::ready(now))
        .group_by(executions::Column::Cluster)
        .group_by(executions::Column::AllowedClusters)
        .group_by(executions::Column::Priority)
        .into_tuple()
        .all(db)
        .await?;
    let mut depth: std::collections::BTreeMap<(String, i32), i64> = Default::default();
    for (cluster, allowed, priority, n) in rows {
        let place = match allowed {
            Some(set) => set.trim_matches(',').replace(',', "|"),
            None => super::ordering::cluster_key(cluster.as_deref()).to_owned(),
        };
        *depth.entry((place, priority)).or_default() += n;
    }
    Ok(depth.into_iter().map(|((c, p), n)| (c, p, n)).collect())
}

/// Executions a timeout rule may end at `now`, at most `limit`: unfinished, and failing to be
/// confirmed since `stuck_timeout` ago, or in Queued or Submitting since `queued_timeout` ago
/// (not a job waiting for jobwarden itself to submit it), or, with a `max_runtime`, started
/// that long ago. The rules are applied by the store, against the row as it is when it writes.
///
/// Each condition is the rule's own, so a page holds only jobs about to end: reading every
/// waiting job instead would read the same page of young ones at each sweep (all of a fleet
/// just queued, or a submission queue waiting for capacity) and never reach an old one
/// behind them. Instants stored as text compare as text, so one within a second of its
/// cutoff may wait for the next sweep.
pub async fn timeout_candidates(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
    policy: &TimeoutPolicy,
    limit: u64,
) -> Result<Vec<String>, DbErr> {
    use executions::Column as C;
    let ago = |d: std::time::Duration| {
        chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
    };
    let mut due = Condition::any();
    if let Some(cutoff) = ago(policy.stuck_timeout) {
        due = due.add(
            Condition::all()
                .add(C::ConsecutivePollFailures.gt(0))
                .add(C::FailingSince.lte(cutoff)),
        );
    }
    if let Some(cutoff) = ago(policy.queued_timeout) {
        // `Attempts::waits_for_jobwarden`: the store refuses to time these out.
        let waiting_for_us = Condition::all()
            .add(C::Status.eq(JobStatus::Queued.as_str()))
            .add(C::SubmitSpec.is_not_null())
            .add(C::SubmissionId.is_null());
        due = due.add(
            Condition::all()
                .add(C::Status.is_in([JobStatus::Queued.as_str(), JobStatus::Submitting.as_str()]))
                .add(waiting_for_us.not())
                .add(
                    Condition::any().add(C::StatusChangedAt.lte(cutoff)).add(
                        Condition::all()
                            .add(C::StatusChangedAt.is_null())
                            .add(C::CreatedAt.lte(cutoff)),
                    ),
                ),
        );
    }
    if let Some(cutoff) = policy.max_runtime.and_then(ago) {
        due = due.add(
            Condition::all()
                .add(C::Status.eq(JobStatus::Running.as_str()))
                .add(C::StartedAt.lte(cutoff)),
        );
    }
    executions::Entity::find()
        .select_only()
        .column(C::ExecutionId)
        .filter(C::Status.is_in(JobStatus::NON_TERMINAL.iter().map(|s| s.as_str())))
        .filter(due)
        .order_by_asc(C::ExecutionId)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await
}
