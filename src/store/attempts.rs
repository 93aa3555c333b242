//! Attempts of the jobs jobwarden submits, applied inside a batch: an attempt recorded before
//! its request goes out, given its driver, withdrawn or spent; endings turned into retries by
//! the policy; cancels and manual retries. The execution row says where the job stands; the
//! attempt rows keep every attempt's story.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{spark_job_attempts as attempts, spark_job_executions as executions};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter,
};

use crate::domain::attempt::{Attempts, Cancel, NotStarted, RetryRefused};
use crate::domain::{
    Applied, Effect, Ending, ExecutionState, HistoryEntry, JobStatus, Lifecycle as _, SubmitSpec,
};
use crate::store_api::{AttemptChange, OpError, Source, WriteOutcome};

use super::changes::{history_row, AttemptWrite, Changes, Loaded, Patch, Rules, SPARK};
use super::ordering;
use super::rows;

/// Attempt states as stored.
pub(super) const REQUESTED: &str = "requested";
pub(super) const SUBMITTED: &str = "submitted";
pub(super) const ENDED: &str = "ended";

fn spec_of(row: &executions::Model) -> Option<SubmitSpec> {
    row.submit_spec
        .as_deref()
        .and_then(|text| SubmitSpec::from_json(text).ok())
}

/// What the domain's attempt rules read of the row.
fn view(row: &executions::Model) -> Attempts {
    Attempts {
        status: row.status.parse().unwrap_or(JobStatus::Queued),
        ours: row.submit_spec.is_some(),
        driver: row.submission_id.clone(),
        attempt: row.attempt.max(0) as u32,
        next_attempt_at: row.next_attempt_at,
        cancel_requested: row.cancel_requested_at.is_some(),
    }
}

/// A request for the row's current attempt is out (or about to be) and its driver is not
/// known yet.
pub(super) fn in_flight(row: &executions::Model) -> bool {
    view(row).in_flight()
}

/// The job waits for jobwarden to submit it (first attempt or a retry), not for Spark.
pub(super) fn waits_for_jobwarden(changes: &Changes, execution_id: &str) -> bool {
    changes
        .executions
        .get(execution_id)
        .is_some_and(|l| view(&l.row).waits_for_jobwarden())
}

fn unknown(execution_id: &str) -> OpError {
    OpError::UnknownExecution {
        execution_id: execution_id.to_owned(),
    }
}

fn note(changes: &mut Changes, execution_id: &str, entry: HistoryEntry, source: Source) {
    changes
        .history
        .push(history_row(SPARK, execution_id, &entry, source));
}

/// A history line that records something about the job without moving its status.
fn remark(
    changes: &mut Changes,
    execution_id: &str,
    status: JobStatus,
    detail: String,
    at: DateTime<Utc>,
    source: Source,
) {
    let entry = HistoryEntry {
        from: Some(status),
        to: status,
        detail: Some(detail),
        at,
    };
    note(changes, execution_id, entry, source);
}

/// Records attempt `attempt` as requested, if the job wants exactly that attempt now.
pub(super) fn begin(
    changes: &mut Changes,
    execution_id: &str,
    attempt: u32,
    mark: &str,
    at: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    let row = &changes
        .executions
        .get(execution_id)
        .ok_or_else(|| unknown(execution_id))?
        .row;
    if !view(row).wants(attempt, at) {
        return Err(OpError::NotNow(format!(
            "execution {execution_id} does not want attempt {attempt} now (status {}, attempt {}, next attempt {:?})",
            row.status, row.attempt, row.next_attempt_at
        )));
    }
    let (cluster, placed) = ordering::place(changes, execution_id)?;
    let loaded = changes
        .executions
        .get_mut(execution_id)
        .ok_or_else(|| unknown(execution_id))?;
    let row = &mut loaded.row;
    row.attempt = attempt as i32;
    row.next_attempt_at = None;
    row.cluster.clone_from(&cluster);
    loaded.dirty = true;
    let status: JobStatus = row.status.parse().unwrap_or(JobStatus::Queued);
    changes
        .attempt_writes
        .push(AttemptWrite::Insert(attempts::ActiveModel {
            id: NotSet,
            execution_id: Set(execution_id.to_owned()),
            attempt: Set(attempt as i32),
            mark: Set(mark.to_owned()),
            cluster: Set(cluster.clone()),
            submission_id: Set(None),
            state: Set(REQUESTED.into()),
            requested_at: Set(at),
            submitted_at: Set(None),
            started_at: Set(None),
            ended_at: Set(None),
            outcome: Set(None),
            reason: Set(None),
        }));
    if let Some(why) = placed {
        remark(
            changes,
            execution_id,
            status,
            format!("attempt {attempt}: {why}"),
            at,
            Source::Submitter,
        );
    }
    remark(
        changes,
        execution_id,
        status,
        format!("attempt {attempt}: submitting (mark {mark})"),
        at,
        Source::Submitter,
    );
    Ok(WriteOutcome::Attempt(AttemptChange::Begun { cluster }))
}

/// The row whose attempt `attempt` is in flight, or why there is none.
fn awaiting_driver<'a>(
    rows: &'a mut HashMap<String, Loaded<executions::Model>>,
    execution_id: &str,
    attempt: u32,
) -> Result<&'a mut Loaded<executions::Model>, OpError> {
    let loaded = rows
        .get_mut(execution_id)
        .ok_or_else(|| unknown(execution_id))?;
    if !in_flight(&loaded.row) || loaded.row.attempt != attempt as i32 {
        return Err(OpError::NotNow(format!(
            "execution {execution_id} has no attempt {attempt} waiting for its driver"
        )));
    }
    Ok(loaded)
}

/// The attempt's driver is known: the row follows it from now on.
pub(super) fn submitted(
    changes: &mut Changes,
    execution_id: &str,
    attempt: u32,
    submission_id: &str,
    at: DateTime<Utc>,
    recovered: bool,
) -> Result<WriteOutcome, OpError> {
    let loaded = awaiting_driver(&mut changes.executions, execution_id, attempt)?;
    let mut state = rows::execution_state(&loaded.row)?;
    let from = state.status;
    state.driver_accepted(at);
    rows::store_execution_state(&mut loaded.row, &state);
    loaded.row.submission_id = Some(submission_id.to_owned());
    loaded.dirty = true;
    changes.attempt_writes.push(AttemptWrite::Update {
        execution_id: execution_id.to_owned(),
        attempt: attempt as i32,
        patch: Patch {
            state: Some(SUBMITTED),
            submission_id: Some(submission_id.to_owned()),
            submitted_at: Some(at),
            ..Patch::default()
        },
    });
    let how = if recovered {
        "found on the cluster by its mark after jobwarden restarted"
    } else {
        "accepted by Spark"
    };
    note(
        changes,
        execution_id,
        HistoryEntry {
            from: Some(from),
            to: JobStatus::Submitting,
            detail: Some(format!("attempt {attempt}: {submission_id}, {how}")),
            at,
        },
        Source::Submitter,
    );
    Ok(WriteOutcome::Attempt(AttemptChange::Submitted))
}

/// The attempt started no driver: withdrawn (tried again, no attempt spent), or spent.
#[allow(clippy::too_many_arguments)]
pub(super) fn not_started(
    changes: &mut Changes,
    rules: &Rules,
    execution_id: &str,
    attempt: u32,
    at: DateTime<Utc>,
    reason: &str,
    counts: bool,
    retry_at: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    let loaded = awaiting_driver(&mut changes.executions, execution_id, attempt)?;
    let mut state = rows::execution_state(&loaded.row)?;
    let status = state.status;
    let policy = policy_for(&loaded.row, rules);
    let decision = view(&loaded.row).not_started(
        reason,
        counts,
        loaded.row.last_poll_error.as_deref(),
        &policy,
        at,
        jitter(),
    );
    let (entry, retry) = match decision {
        NotStarted::Withdrawn {
            note: noted,
            then_cancel,
        } => {
            loaded.row.attempt -= 1;
            loaded.row.next_attempt_at = Some(retry_at);
            loaded.row.last_poll_error = Some(reason.to_owned());
            loaded.dirty = true;
            changes.attempt_writes.push(AttemptWrite::Delete {
                execution_id: execution_id.to_owned(),
                attempt: attempt as i32,
            });
            if then_cancel {
                return cancel(changes, execution_id, at)
                    .map(|_| WriteOutcome::Attempt(AttemptChange::Withdrawn));
            }
            if noted {
                let detail = format!("attempt {attempt} withdrawn, no attempt spent: {reason}");
                remark(changes, execution_id, status, detail, at, Source::Submitter);
            }
            return Ok(WriteOutcome::Attempt(AttemptChange::Withdrawn));
        }
        NotStarted::Retry { at: next, message } => {
            loaded.row.next_attempt_at = Some(next);
            loaded.row.error_message = Some(message.clone());
            loaded.row.status = JobStatus::Retrying.as_str().into();
            loaded.row.status_changed_at = Some(at);
            let entry = HistoryEntry {
                from: Some(status),
                to: JobStatus::Retrying,
                detail: Some(format!(
                    "{message}; attempt {} at {}",
                    attempt + 1,
                    stamp(next)
                )),
                at,
            };
            (entry, Some(next))
        }
        NotStarted::Fail { message } => {
            state
                .force_finish(JobStatus::Failed, at, &message)
                .map_err(|e| OpError::NotNow(e.to_string()))?;
            rows::store_execution_state(&mut loaded.row, &state);
            let entry = HistoryEntry {
                from: Some(status),
                to: JobStatus::Failed,
                detail: Some(message),
                at,
            };
            changes.settled.insert(execution_id.to_owned());
            (entry, None)
        }
    };
    loaded.dirty = true;
    changes.attempt_writes.push(AttemptWrite::Update {
        execution_id: execution_id.to_owned(),
        attempt: attempt as i32,
        patch: Patch {
            state: Some(ENDED),
            ended_at: Some(at),
            outcome: Some("rejected".into()),
            reason: Some(reason.to_owned()),
            ..Patch::default()
        },
    });
    note(changes, execution_id, entry, Source::Submitter);
    Ok(WriteOutcome::Attempt(AttemptChange::Spent {
        retry_at: retry,
    }))
}

/// An operator's cancel: ends a job no driver runs for at once; otherwise asks for its
/// driver to be killed (the row ends when Spark confirms it).
pub(super) fn cancel(
    changes: &mut Changes,
    execution_id: &str,
    at: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    let loaded = changes
        .executions
        .get_mut(execution_id)
        .ok_or_else(|| unknown(execution_id))?;
    let mut state = rows::execution_state(&loaded.row)?;
    let first = match view(&loaded.row).cancel() {
        Cancel::Finished => {
            return Err(OpError::NotNow(format!(
                "execution {execution_id} already finished as {}; nothing to cancel",
                state.status
            )))
        }
        Cancel::KillDriver { first } => first,
        Cancel::EndNow(message) => {
            let from = state.status;
            state
                .force_finish(JobStatus::Cancelled, at, &message)
                .map_err(|e| OpError::NotNow(e.to_string()))?;
            rows::store_execution_state(&mut loaded.row, &state);
            loaded.row.next_attempt_at = None;
            loaded.row.cancel_requested_at.get_or_insert(at);
            loaded.dirty = true;
            changes.settled.insert(execution_id.to_owned());
            note(
                changes,
                execution_id,
                HistoryEntry {
                    from: Some(from),
                    to: JobStatus::Cancelled,
                    detail: Some(message),
                    at,
                },
                Source::Api,
            );
            return Ok(WriteOutcome::CancelTaken {
                ended: true,
                submission_id: None,
            });
        }
    };
    loaded.row.cancel_requested_at.get_or_insert(at);
    loaded.dirty = true;
    let submission_id = loaded.row.submission_id.clone();
    if first {
        let detail = match &submission_id {
            Some(id) => format!(
                "cancel requested: killing {id}; the job ends once Spark reports it KILLED"
            ),
            None => "cancel requested while a submission is in flight: its driver, if any, is killed once found".into(),
        };
        remark(changes, execution_id, state.status, detail, at, Source::Api);
    }
    Ok(WriteOutcome::CancelTaken {
        ended: false,
        submission_id,
    })
}

/// An operator's retry of a finished job: one more attempt, due now.
pub(super) fn retry(
    changes: &mut Changes,
    execution_id: &str,
    at: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    let loaded = changes
        .executions
        .get_mut(execution_id)
        .ok_or_else(|| unknown(execution_id))?;
    let mut state = rows::execution_state(&loaded.row)?;
    let attempt = match view(&loaded.row).operator_retry() {
        Ok(attempt) => attempt,
        Err(RetryRefused::NotOurs) => return Err(OpError::NotNow(format!(
            "execution {execution_id} was not submitted by jobwarden (it has no submit spec), so jobwarden cannot start it again; submit it anew with a spec"
        ))),
        Err(RetryRefused::NotFinished) => return Err(OpError::NotNow(format!(
            "execution {execution_id} is {}; only a finished job can be retried (cancel it first)",
            state.status
        ))),
    };
    let from = state.status;
    state.retry_asked(at);
    rows::store_execution_state(&mut loaded.row, &state);
    loaded.row.submission_id = None;
    loaded.row.cancel_requested_at = None;
    loaded.row.next_attempt_at = Some(at);
    loaded.dirty = true;
    note(
        changes,
        execution_id,
        HistoryEntry {
            from: Some(from),
            to: JobStatus::Retrying,
            detail: Some(format!(
                "retry asked by an operator: attempt {attempt} due now"
            )),
            at,
        },
        Source::Api,
    );
    Ok(WriteOutcome::RetryTaken { attempt })
}

fn policy_for(row: &executions::Model, rules: &Rules) -> crate::domain::RetryPolicy {
    match spec_of(row) {
        Some(spec) => rules.retry.with(&spec.retry),
        None => rules.retry.clone(),
    }
}

/// A number in [0, 1) for spreading retries; no need for more than the clock's noise.
fn jitter() -> f64 {
    f64::from(uuid::Uuid::new_v4().as_u128() as u32 % 10_000) / 10_000.0
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// After a rule ran on a submitted job: its attempt started or ended. An ending the policy
/// retries becomes Retrying, with the next attempt's time; otherwise the ending stands.
pub(super) fn after_rule(
    row: &mut executions::Model,
    before: &ExecutionState,
    state: &mut ExecutionState,
    effect: &mut Effect,
    source: Source,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Option<AttemptWrite> {
    if row.submit_spec.is_none() || row.attempt <= 0 {
        return None;
    }
    let execution_id = row.execution_id.clone();
    let attempt = row.attempt;
    if state.status == JobStatus::Running && before.status != JobStatus::Running {
        return Some(AttemptWrite::Update {
            execution_id,
            attempt,
            patch: Patch {
                started_at: Some(effect.history.as_ref().map_or(now, |h| h.at)),
                ..Patch::default()
            },
        });
    }
    if before.status.is_terminal() || !state.status.is_terminal() {
        return None;
    }
    let at = state.completed_at.unwrap_or(now);
    let ending = Ending::classify(
        state.status,
        state.raw_state.as_deref(),
        state.error_message.is_some(),
        source == Source::TimeoutSweep,
    );
    let reason = state
        .error_message
        .clone()
        .filter(|_| state.status != JobStatus::Succeeded);
    let update = AttemptWrite::Update {
        execution_id,
        attempt,
        patch: Patch {
            state: Some(ENDED),
            ended_at: Some(at),
            // Straight from Submitting to an end: it started when it ended, as far as we saw.
            started_at: (before.status != JobStatus::Running
                && state.status == JobStatus::Succeeded)
                .then_some(at),
            outcome: Some(ending.as_str().to_owned()),
            reason: reason.clone(),
            ..Patch::default()
        },
    };
    let policy = policy_for(row, rules);
    let Some(next) = view(row).next_after(&policy, ending, at, jitter()) else {
        return Some(update);
    };
    // Not the end: the job waits for its next attempt, without a driver.
    let ended_as = state.status;
    state.between_attempts(before);
    row.submission_id = None;
    row.next_attempt_at = Some(next);
    let detail = format!(
        "attempt {attempt} of {} ended {}{}; attempt {} at {}",
        policy.max_attempts,
        ending.as_str(),
        reason.map(|r| format!(": {r}")).unwrap_or_default(),
        attempt + 1,
        stamp(next)
    );
    effect.applied = Applied::Refreshed;
    effect.history = Some(HistoryEntry {
        from: Some(before.status),
        to: JobStatus::Retrying,
        detail: Some(detail),
        at,
    });
    debug_assert!(ended_as.is_terminal());
    Some(update)
}

/// Spark relaunched the attempt's driver under a new id: the attempt follows it too.
pub(super) fn relaunched(row: &executions::Model, new: &str) -> Option<AttemptWrite> {
    (row.submit_spec.is_some() && row.attempt > 0).then(|| AttemptWrite::Update {
        execution_id: row.execution_id.clone(),
        attempt: row.attempt,
        patch: Patch {
            submission_id: Some(new.to_owned()),
            ..Patch::default()
        },
    })
}

/// Writes the batch's attempt changes.
pub(super) async fn write(
    txn: &DatabaseTransaction,
    writes: Vec<AttemptWrite>,
) -> Result<(), DbErr> {
    for write in writes {
        match write {
            AttemptWrite::Insert(row) => {
                attempts::Entity::insert(row)
                    .exec_without_returning(txn)
                    .await?;
            }
            AttemptWrite::Delete {
                execution_id,
                attempt,
            } => {
                attempts::Entity::delete_many()
                    .filter(attempts::Column::ExecutionId.eq(execution_id))
                    .filter(attempts::Column::Attempt.eq(attempt))
                    .exec(txn)
                    .await?;
            }
            AttemptWrite::Update {
                execution_id,
                attempt,
                patch,
            } => {
                let mut update = attempts::Entity::update_many()
                    .filter(attempts::Column::ExecutionId.eq(execution_id))
                    .filter(attempts::Column::Attempt.eq(attempt));
                if let Some(v) = patch.state {
                    update = update.col_expr(attempts::Column::State, Expr::value(v));
                }
                if let Some(v) = patch.submission_id {
                    update = update.col_expr(attempts::Column::SubmissionId, Expr::value(v));
                }
                if let Some(v) = patch.submitted_at {
                    update = update.col_expr(attempts::Column::SubmittedAt, Expr::value(v));
                }
                if let Some(v) = patch.started_at {
                    update = update.col_expr(attempts::Column::StartedAt, Expr::value(v));
                }
                if let Some(v) = patch.ended_at {
                    update = update.col_expr(attempts::Column::EndedAt, Expr::value(v));
                }
                if let Some(v) = patch.outcome {
                    update = update.col_expr(attempts::Column::Outcome, Expr::value(v));
                }
                if let Some(v) = patch.reason {
                    update = update.col_expr(attempts::Column::Reason, Expr::value(v));
                }
                update.exec(txn).await?;
            }
        }
    }
    Ok(())
}
