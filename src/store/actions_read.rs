//! What the Submitter must do now: waiting jobs to release, jobs due for a submission in queue
//! order, attempts whose request was lost, drivers to kill; and each job's attempts for those
//! who read them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{
    spark_job_attempts as attempts, spark_job_dependencies as deps,
    spark_job_executions as executions,
};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::domain::{JobStatus, SubmitSpec};
use crate::store_api::{ActionKind, DueAction};

use super::attempts::in_flight;
use super::ordering;

/// Up to `limit` actions due at `now`: waiting jobs a parent's end woke, drivers to kill, and
/// jobs to submit in queue order, no more of them on a limited cluster (`capacity`) than it has
/// free places for.
pub async fn due_actions(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
    limit: u64,
    capacity: &HashMap<Option<String>, u64>,
) -> Result<Vec<DueAction>, DbErr> {
    let mut out = releases(db, limit).await?;
    // Each part walks an index of its own, so a look costs the same however long the queue
    // behind it or however many jobs wait on parents.
    let to_kill = Condition::all()
        .add(executions::Column::CancelRequestedAt.is_not_null())
        .add(executions::Column::SubmissionId.is_not_null())
        .add(executions::Column::Status.is_in([
            JobStatus::Queued.as_str(),
            JobStatus::Submitting.as_str(),
            JobStatus::Running.as_str(),
        ]));
    let mut rows = executions::Entity::find()
        .filter(to_kill)
        .order_by_asc(executions::Column::ExecutionId)
        .limit(limit)
        .all(db)
        .await?;
    for status in [JobStatus::Queued, JobStatus::Retrying] {
        // A request out whose driver is not known yet (to reconcile), or a row others
        // inserted with a spec and nothing else (due at once).
        let undated = Condition::all()
            .add(executions::Column::Status.eq(status.as_str()))
            .add(executions::Column::NextAttemptAt.is_null())
            .add(executions::Column::SubmitSpec.is_not_null())
            .add(executions::Column::SubmissionId.is_null());
        rows.extend(
            executions::Entity::find()
                .filter(undated)
                .order_by_asc(executions::Column::ExecutionId)
                .limit(limit)
                .all(db)
                .await?,
        );
    }
    let mut ready = Vec::new();
    for status in [JobStatus::Queued, JobStatus::Retrying] {
        ready.extend(
            executions::Entity::find()
                .filter(executions::Column::Status.eq(status.as_str()))
                .filter(ordering::ready(now))
                .order_by_asc(executions::Column::QueueRank)
                .order_by_asc(executions::Column::ExecutionId)
                .limit(limit)
                .all(db)
                .await?,
        );
    }
    ready.sort_by(|a, b| (a.queue_rank, &a.execution_id).cmp(&(b.queue_rank, &b.execution_id)));
    rows.extend(ready);
    rows.truncate(limit as usize);
    let mut free = free_places(db, capacity).await?;
    for row in rows {
        let to_begin = row.submission_id.is_none() && row.next_attempt_at.is_some();
        if to_begin && !takes_a_place(&row, &mut free) {
            continue;
        }
        if let Some(action) = action_for(db, row).await? {
            out.push(action);
        }
    }
    Ok(out)
}

/// Free places on each limited cluster now.
async fn free_places(
    db: &DatabaseConnection,
    capacity: &HashMap<Option<String>, u64>,
) -> Result<HashMap<Option<String>, u64>, DbErr> {
    let mut free = HashMap::with_capacity(capacity.len());
    for (cluster, max) in capacity {
        let running = ordering::running_on(db, cluster.as_deref()).await?;
        free.insert(cluster.clone(), max.saturating_sub(running));
    }
    Ok(free)
}

/// Whether a job to submit is worth trying now: one of its clusters has no limit, or a free
/// place not yet given to a job ahead of it (which it then takes, on the freest).
fn takes_a_place(row: &executions::Model, free: &mut HashMap<Option<String>, u64>) -> bool {
    let allowed = ordering::allowed_of(row);
    if allowed.iter().any(|c| !free.contains_key(c)) {
        return true;
    }
    let best = allowed
        .iter()
        .filter_map(|c| Some((c.clone(), *free.get(c)?)))
        .filter(|(_, n)| *n > 0)
        .max_by_key(|(_, n)| *n);
    match best {
        Some((cluster, _)) => {
            if let Some(n) = free.get_mut(&cluster) {
                *n -= 1;
            }
            true
        }
        None => false,
    }
}

/// Waiting jobs one of whose parents ended since they last looked.
async fn releases(db: &DatabaseConnection, limit: u64) -> Result<Vec<DueAction>, DbErr> {
    let children: Vec<String> = deps::Entity::find()
        .select_only()
        .column(deps::Column::ChildId)
        .distinct()
        .filter(deps::Column::State.eq(ordering::ENDED))
        .order_by_asc(deps::Column::ChildId)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    Ok(children
        .into_iter()
        .map(|execution_id| DueAction {
            execution_id,
            cluster: None,
            kind: ActionKind::Release,
            fence: None,
        })
        .collect())
}

async fn action_for(
    db: &DatabaseConnection,
    row: executions::Model,
) -> Result<Option<DueAction>, DbErr> {
    let kind = if let Some(submission_id) = row.submission_id.clone() {
        ActionKind::Kill { submission_id }
    } else {
        let spec = match row.submit_spec.as_deref().map(SubmitSpec::from_json) {
            Some(Ok(spec)) => spec,
            Some(Err(e)) => {
                // A spec the application wrote wrong: nothing can be submitted; say so.
                return Ok(Some(DueAction {
                    execution_id: row.execution_id,
                    cluster: row.cluster,
                    kind: ActionKind::Unusable {
                        reason: e.to_string(),
                    },
                    fence: None,
                }));
            }
            None => return Ok(None),
        };
        let attempt = row.attempt.max(0) as u32;
        if in_flight(&row) {
            let recorded = attempts::Entity::find()
                .filter(attempts::Column::ExecutionId.eq(row.execution_id.as_str()))
                .filter(attempts::Column::Attempt.eq(row.attempt))
                .one(db)
                .await?;
            let Some(recorded) = recorded else {
                return Ok(None);
            };
            ActionKind::Reconcile {
                attempt,
                mark: recorded.mark,
                requested_at: recorded.requested_at,
                spec,
            }
        } else {
            // A driver of the attempt before, given up on by a timeout, may still run: it is
            // killed before another is started.
            let kill_first = if attempt > 0 {
                attempts::Entity::find()
                    .filter(attempts::Column::ExecutionId.eq(row.execution_id.as_str()))
                    .filter(attempts::Column::Attempt.eq(row.attempt))
                    .filter(attempts::Column::Outcome.eq("timed_out"))
                    .one(db)
                    .await?
                    .and_then(|a| a.submission_id)
            } else {
                None
            };
            ActionKind::Submit {
                attempt: attempt + 1,
                spec,
                name: row.job_name.clone(),
                kill_first,
                clusters: ordering::allowed_of(&row),
            }
        }
    };
    Ok(Some(DueAction {
        execution_id: row.execution_id,
        cluster: row.cluster,
        kind,
        fence: None,
    }))
}

/// Every attempt of one execution, first first.
pub async fn attempts_of(
    db: &DatabaseConnection,
    execution_id: &str,
) -> Result<Vec<attempts::Model>, DbErr> {
    attempts::Entity::find()
        .filter(attempts::Column::ExecutionId.eq(execution_id))
        .order_by_asc(attempts::Column::Attempt)
        .all(db)
        .await
}

/// The jobs an execution waits (or waited) for, with what it asks of each and each one's
/// status now (`None` once its row is gone).
pub async fn parents_of(
    db: &DatabaseConnection,
    execution_id: &str,
) -> Result<Vec<(deps::Model, Option<String>)>, DbErr> {
    let edges = deps::Entity::find()
        .filter(deps::Column::ChildId.eq(execution_id))
        .order_by_asc(deps::Column::ParentId)
        .all(db)
        .await?;
    let statuses: HashMap<String, String> = executions::Entity::find()
        .select_only()
        .column(executions::Column::ExecutionId)
        .column(executions::Column::Status)
        .filter(executions::Column::ExecutionId.is_in(edges.iter().map(|e| e.parent_id.clone())))
        .into_tuple::<(String, String)>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    Ok(edges
        .into_iter()
        .map(|edge| {
            let status = statuses.get(&edge.parent_id).cloned();
            (edge, status)
        })
        .collect())
}
