//! Each change of a batch, in order, on the rows in memory: the domain rule it calls for is
//! run on the row's state, and the row, its history and its attempt record what it decided.

use chrono::{DateTime, Utc};

use crate::config::EventKind;
use crate::domain::relaunch::{self, Relaunch};
use crate::domain::{warning, Effect, ExecutionState, HistoryEntry, Lifecycle as _};
use crate::store_api::{OpError, Source, Warning, WriteOp, WriteOutcome};

use super::super::attempts;
use super::super::changes::{history_row, Changes, Rules, SPARK};
use super::super::mapped::Mapping;
use super::super::ordering;
use super::super::outbox;
use super::super::rows;
use super::application::sync_queue;
use super::queue::queue_event;
use super::track::{adopt, track};

pub(super) fn apply_one(
    op: &WriteOp,
    changes: &mut Changes,
    rules: &Rules,
    mapping: &Mapping,
    now: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    if let Some(id) = op.execution_id() {
        if let Some(reason) = changes.unreadable.get(id) {
            return Err(OpError::CorruptRow {
                table: mapping
                    .executions
                    .as_ref()
                    .map_or_else(String::new, |m| m.table.to_string()),
                id: id.to_owned(),
                reason: reason.clone(),
            });
        }
    }
    match op {
        WriteOp::Track(request) => match &mapping.executions {
            Some(map) => Err(OpError::ApplicationRows {
                table: map.table.to_string(),
            }),
            None => track(request, changes, rules, now),
        },
        WriteOp::Adopt { execution_id } => adopt(execution_id, changes, mapping, now),
        WriteOp::SyncQueue { job_id } => sync_queue(job_id, changes, mapping.queue.as_ref(), now),
        WriteOp::Observe {
            execution_id,
            observation,
            asked,
        } => {
            if stale(changes, execution_id, asked.as_deref()) {
                return Ok(WriteOutcome::Execution(crate::domain::Applied::Refreshed));
            }
            let was_relaunching = changes
                .executions
                .get(execution_id)
                .is_some_and(|l| l.row.spark_state.as_deref() == Some("RELAUNCHING"));
            let outcome = with_execution(
                changes,
                execution_id,
                Source::SparkPoll,
                rules,
                now,
                |state| state.observe(observation),
            );
            if outcome.is_ok() && !observation.successors.is_empty() && mapping.executions.is_none()
            {
                follow_relaunch(changes, execution_id, observation, was_relaunching);
            }
            outcome
        }
        WriteOp::PollFailed {
            execution_id,
            at,
            error,
            outage,
            asked,
        } if !stale(changes, execution_id, asked.as_deref()) => with_execution(
            changes,
            execution_id,
            Source::SparkPoll,
            rules,
            now,
            |state| {
                if *outage {
                    state.backend_away(*at, error, &rules.poll)
                } else {
                    state.poll_failed(*at, error, &rules.poll)
                }
            },
        ),
        WriteOp::PollFailed { .. } => {
            Ok(WriteOutcome::Execution(crate::domain::Applied::Refreshed))
        }
        WriteOp::TimeOut { execution_id, now } => {
            if attempts::waits_for_jobwarden(changes, execution_id) {
                // jobwarden itself is to submit it: an outage delays it, and nothing is stuck.
                return Ok(WriteOutcome::Execution(crate::domain::Applied::Refreshed));
            }
            with_execution(
                changes,
                execution_id,
                Source::TimeoutSweep,
                rules,
                *now,
                |state| state.time_out(*now, &rules.timeouts),
            )
        }
        WriteOp::QueueEvent {
            event,
            position,
            received_at,
        } => queue_event(
            event,
            position.as_ref(),
            *received_at,
            changes,
            mapping.queue.as_ref(),
            now,
        ),
        WriteOp::DeadLetter(letter) => {
            changes.dead_letters.push(letter.clone());
            Ok(WriteOutcome::DeadLettered { duplicate: false })
        }
        WriteOp::NotificationAttempt(attempt) => {
            changes.attempts.push(attempt.clone());
            Ok(WriteOutcome::AttemptRecorded)
        }
        WriteOp::Warn {
            execution_id,
            warning,
            now,
        } => warn(execution_id, warning, *now, changes, rules),
        WriteOp::BeginAttempt {
            execution_id,
            attempt,
            mark,
            at,
            ..
        } => attempts::begin(changes, execution_id, *attempt, mark, *at),
        WriteOp::Release { execution_id, at } => {
            ordering::release(changes, execution_id, *at, rules)
        }
        WriteOp::AttemptSubmitted {
            execution_id,
            attempt,
            submission_id,
            at,
            recovered,
        } => attempts::submitted(
            changes,
            execution_id,
            *attempt,
            submission_id,
            *at,
            *recovered,
        ),
        WriteOp::AttemptNotStarted {
            execution_id,
            attempt,
            at,
            reason,
            counts,
            retry_at,
        } => attempts::not_started(
            changes,
            rules,
            execution_id,
            *attempt,
            *at,
            reason,
            *counts,
            *retry_at,
        ),
        WriteOp::Cancel { execution_id, at } => attempts::cancel(changes, execution_id, *at),
        WriteOp::Retry { execution_id, at } => attempts::retry(changes, execution_id, *at),
        WriteOp::SpecUnusable {
            execution_id,
            reason,
            at,
        } => with_execution(
            changes,
            execution_id,
            Source::Submitter,
            rules,
            now,
            |state| state.fail_now(*at, &format!("submit_spec cannot be used: {reason}")),
        ),
    }
}

/// Whether an answer is about a driver the row no longer follows: the poll was sent before
/// the row moved on to another attempt's driver (or none, between attempts).
fn stale(changes: &Changes, execution_id: &str, asked: Option<&str>) -> bool {
    let Some(asked) = asked else {
        return false;
    };
    changes
        .executions
        .get(execution_id)
        .is_some_and(|l| l.row.submission_id.as_deref() != Some(asked))
}

/// Applies the domain's decision about a relaunched driver (`domain::relaunch`): the row, and
/// its attempt, follow the new id, or the row notes why it stays.
fn follow_relaunch(
    changes: &mut Changes,
    execution_id: &str,
    observation: &crate::domain::Observation,
    was_relaunching: bool,
) {
    let Some(loaded) = changes.executions.get_mut(execution_id) else {
        return;
    };
    let Ok(mut state) = rows::execution_state(&loaded.row) else {
        return;
    };
    let tracked = &changes.tracked_successors;
    let decision = relaunch::follow(
        state.status,
        &observation.successors,
        |id| tracked.contains(id),
        was_relaunching,
    );
    let old = loaded.row.submission_id.clone().unwrap_or_default();
    let Some(detail) = decision.detail(&old) else {
        return;
    };
    if let Relaunch::Follow(new) = decision {
        loaded.row.submission_id = Some(new.clone());
        state.resubmitted();
        rows::store_execution_state(&mut loaded.row, &state);
        loaded.dirty = true;
        if let Some(write) = attempts::relaunched(&loaded.row, &new) {
            changes.attempt_writes.push(write);
        }
        changes.tracked_successors.insert(new);
    }
    let entry = HistoryEntry {
        from: Some(state.status),
        to: state.status,
        detail: Some(detail),
        at: observation.at,
    };
    changes
        .history
        .push(history_row(SPARK, execution_id, &entry, Source::SparkPoll));
}

/// Runs one domain rule on the execution's state, writes the state back to its row and the
/// history line the rule asked for. For a job jobwarden submits, an attempt that ended is
/// recorded, and the retry policy may turn the ending into a wait for the next attempt.
fn with_execution(
    changes: &mut Changes,
    execution_id: &str,
    source: Source,
    rules: &Rules,
    now: DateTime<Utc>,
    rule: impl FnOnce(&mut ExecutionState) -> Effect,
) -> Result<WriteOutcome, OpError> {
    let loaded =
        changes
            .executions
            .get_mut(execution_id)
            .ok_or_else(|| OpError::UnknownExecution {
                execution_id: execution_id.to_owned(),
            })?;
    let mut state = rows::execution_state(&loaded.row)?;
    let before = state.clone();
    let mut effect = rule(&mut state);
    let attempt_write = attempts::after_rule(
        &mut loaded.row,
        &before,
        &mut state,
        &mut effect,
        source,
        rules,
        now,
    );
    if let Some(write) = attempt_write {
        changes.attempt_writes.push(write);
    }
    if state != before {
        rows::store_execution_state(&mut loaded.row, &state);
        loaded.dirty = true;
        let confirmed_again = before.failing_since.is_some() && state.failing_since.is_none();
        let ended = !before.status.is_terminal() && state.status.is_terminal();
        if confirmed_again || ended {
            changes.settled.insert(execution_id.to_owned());
        }
    }
    if let Some(entry) = effect.history {
        changes
            .history
            .push(history_row(SPARK, execution_id, &entry, source));
    }
    Ok(WriteOutcome::Execution(effect.applied))
}

/// Queues a warning if, by the row as it is now, it holds.
fn warn(
    execution_id: &str,
    warning: &Warning,
    now: DateTime<Utc>,
    changes: &mut Changes,
    rules: &Rules,
) -> Result<WriteOutcome, OpError> {
    let loaded = changes
        .executions
        .get(execution_id)
        .ok_or_else(|| OpError::UnknownExecution {
            execution_id: execution_id.to_owned(),
        })?;
    let state = rows::execution_state(&loaded.row)?;
    let (event, held) = match warning {
        Warning::StuckSoon => (
            EventKind::StuckSoon,
            warning::stuck_soon(execution_id, &state, rules.timeouts.stuck_timeout, now),
        ),
        Warning::RunningLong {
            usual,
            runs,
            factor,
        } => (
            EventKind::RunningLong,
            warning::running_long(execution_id, &state, *usual, *runs, *factor, now),
        ),
    };
    let held = held.map(|held| outbox::Warned {
        execution_id: execution_id.to_owned(),
        event,
        dedup_key: held.dedup_key,
        reason: held.reason,
    });
    let sent = held.is_some();
    changes.warnings.extend(held);
    Ok(WriteOutcome::Warned { sent })
}
