//! What the Submitter must do now: jobs due for a submission, attempts whose request was lost,
//! drivers to kill; and each job's attempts for those who read them.

use chrono::{DateTime, Utc};
use entity::{spark_job_attempts as attempts, spark_job_executions as executions};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::domain::{JobStatus, SubmitSpec};
use crate::store_api::{ActionKind, DueAction};

use super::attempts::in_flight;

/// Up to `limit` actions due at `now`, in execution id order.
pub async fn due_actions(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<DueAction>, DbErr> {
    let waiting = [JobStatus::Queued.as_str(), JobStatus::Retrying.as_str()];
    let to_submit = Condition::all()
        .add(executions::Column::SubmitSpec.is_not_null())
        .add(executions::Column::Status.is_in(waiting))
        .add(executions::Column::SubmissionId.is_null())
        .add(
            Condition::any()
                .add(executions::Column::NextAttemptAt.is_null())
                .add(executions::Column::NextAttemptAt.lte(now)),
        );
    let to_kill = Condition::all()
        .add(executions::Column::CancelRequestedAt.is_not_null())
        .add(executions::Column::SubmissionId.is_not_null())
        .add(executions::Column::Status.is_in([
            JobStatus::Queued.as_str(),
            JobStatus::Submitting.as_str(),
            JobStatus::Running.as_str(),
        ]));
    let rows = executions::Entity::find()
        .filter(Condition::any().add(to_submit).add(to_kill))
        .order_by_asc(executions::Column::ExecutionId)
        .limit(limit)
        .all(db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(action) = action_for(db, row).await? {
            out.push(action);
        }
    }
    Ok(out)
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
