//! One transaction for many changes: load the rows they touch, apply each change in order with
//! the domain rules, write the changed rows and their history rows, commit.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{
    dead_letters, job_status_history as history, spark_job_executions as executions,
    transformation_job_queue as queue,
};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, IntoActiveModel, QueryFilter, QuerySelect, TransactionTrait,
};

use std::time::Duration;

use crate::config::EventKind;
use crate::domain::{
    Effect, EventApplied, ExecutionState, HistoryEntry, Lifecycle as _, Position, QueueState,
    StatusEvent,
};
use crate::notify::NotifyRules;
use crate::store_api::{Fence, OpError, Source, TrackRequest, Warning, WriteOp, WriteOutcome};

use super::attempts;
use super::bulk::{self, Conflict};
pub use super::changes::Rules;
use super::changes::{history_row, Changes, Loaded, QUEUE, SPARK};
use super::leases;
use super::mapped::{self, AppExecution, AppQueueJob, Mapping};
use super::outbox;
use super::rows;

/// Largest id list in one `IN (…)`, well under every backend's bind-parameter limit.
const LOAD_CHUNK: usize = 500;

/// What one committed batch did.
#[derive(Debug)]
pub struct Committed {
    /// One result per change, in order.
    pub outcomes: Vec<Result<WriteOutcome, OpError>>,
    /// Job rows inserted or updated (changes that changed nothing write none).
    pub rows_written: usize,
    /// Rows added to jobwarden's own tables.
    pub inserted: Inserted,
}

/// Rows a batch added to jobwarden's own tables, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    pub executions: usize,
    pub queue: usize,
    pub history: usize,
}

impl std::ops::AddAssign for Inserted {
    fn add_assign(&mut self, other: Inserted) {
        self.executions += other.executions;
        self.queue += other.queue;
        self.history += other.history;
    }
}

/// What a batch is written with, besides its changes.
pub struct WriteContext<'a> {
    pub rules: &'a Rules,
    pub mapping: &'a Mapping,
    /// This instance, when several share the database: fenced changes are checked against it.
    pub instance: Option<&'a str>,
    /// Which transitions put notifications in the outbox.
    pub notify: &'a NotifyRules,
}

/// Applies `ops` in one transaction; `fences[i]` is the lease `ops[i]` was made under, if any.
/// `Err` means nothing was written.
pub async fn apply_batch(
    db: &DatabaseConnection,
    ops: &[WriteOp],
    fences: &[Option<Fence>],
    cx: &WriteContext<'_>,
    now: DateTime<Utc>,
) -> Result<Committed, DbErr> {
    let txn = db.begin().await?;
    let holders = match cx.instance {
        Some(_) => {
            let mut names: Vec<String> = fences
                .iter()
                .flatten()
                .map(|f| leases::bucket_name(f.bucket))
                .collect();
            names.sort_unstable();
            names.dedup();
            leases::current_holders(&txn, names).await?
        }
        None => HashMap::new(),
    };
    let mut changes = Changes::default();
    load_rows(&txn, ops, &mut changes, cx.mapping).await?;
    if let Some(map) = &cx.mapping.executions {
        reconcile_executions(&mut changes, map, now);
    }
    let outcomes: Vec<_> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            if let (Some(fence), Some(me)) = (fences.get(i).copied().flatten(), cx.instance) {
                let (holder, token) = holders
                    .get(&leases::bucket_name(fence.bucket))
                    .cloned()
                    .unwrap_or((None, 0));
                if holder.as_deref() != Some(me) || token != fence.token {
                    return Err(OpError::Fenced {
                        bucket: fence.bucket,
                        holder: holder.unwrap_or_else(|| "nobody".into()),
                        token,
                        ours: fence.token,
                    });
                }
            }
            apply_one(op, &mut changes, cx.rules, cx.mapping, now)
        })
        .collect();
    let (duplicates, rows_written, inserted) = write_out(&txn, changes, cx, now).await?;
    txn.commit().await?;
    Ok(Committed {
        outcomes: mark_duplicate_letters(outcomes, ops, &duplicates),
        rows_written,
        inserted,
    })
}

async fn load_rows(
    txn: &DatabaseTransaction,
    ops: &[WriteOp],
    changes: &mut Changes,
    mapping: &Mapping,
) -> Result<(), DbErr> {
    let mut execution_ids: Vec<&str> = Vec::new();
    let mut queue_ids: Vec<&str> = Vec::new();
    for op in ops {
        match op {
            WriteOp::Track(r) => execution_ids.push(&r.execution_id),
            WriteOp::Adopt { execution_id }
            | WriteOp::Observe { execution_id, .. }
            | WriteOp::PollFailed { execution_id, .. }
            | WriteOp::TimeOut { execution_id, .. }
            | WriteOp::Warn { execution_id, .. }
            | WriteOp::BeginAttempt { execution_id, .. }
            | WriteOp::AttemptSubmitted { execution_id, .. }
            | WriteOp::AttemptNotStarted { execution_id, .. }
            | WriteOp::Cancel { execution_id, .. }
            | WriteOp::Retry { execution_id, .. }
            | WriteOp::SpecUnusable { execution_id, .. } => execution_ids.push(execution_id),
            WriteOp::QueueEvent { event, .. } => queue_ids.push(&event.job_id),
            WriteOp::SyncQueue { job_id } => queue_ids.push(job_id),
            WriteOp::DeadLetter(_) | WriteOp::NotificationAttempt(_) => {}
        }
    }
    execution_ids.sort_unstable();
    execution_ids.dedup();
    queue_ids.sort_unstable();
    queue_ids.dedup();
    // Row locks keep an outside writer from slipping a change between our read and our write;
    // SQLite locks the whole database for the transaction anyway.
    let lock = txn.get_database_backend() != DatabaseBackend::Sqlite;
    for chunk in execution_ids.chunks(LOAD_CHUNK) {
        let mut query = executions::Entity::find()
            .filter(executions::Column::ExecutionId.is_in(chunk.iter().copied()));
        if lock {
            query = query.lock_exclusive();
        }
        for row in query.all(txn).await? {
            changes.executions.insert(
                row.execution_id.clone(),
                Loaded {
                    row,
                    new: false,
                    dirty: false,
                },
            );
        }
    }
    let successors: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Observe { observation, .. } => Some(observation.successors.iter()),
            _ => None,
        })
        .flatten()
        .map(String::as_str)
        .collect();
    for chunk in successors.chunks(LOAD_CHUNK) {
        let tracked: Vec<Option<String>> = executions::Entity::find()
            .select_only()
            .column(executions::Column::SubmissionId)
            .filter(executions::Column::SubmissionId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(txn)
            .await?;
        changes
            .tracked_successors
            .extend(tracked.into_iter().flatten());
    }
    changes.queue_placeholders = txn.get_database_backend() == DatabaseBackend::MySql;
    if changes.queue_placeholders {
        lock_queue_rows(txn, &queue_ids, changes).await?;
    } else {
        // PostgreSQL locks the rows that exist; a new one is inserted at write-out only if it
        // is still absent then (see `insert_new_queue_rows`). SQLite has one writer.
        for chunk in queue_ids.chunks(LOAD_CHUNK) {
            let mut query =
                queue::Entity::find().filter(queue::Column::JobId.is_in(chunk.iter().copied()));
            if lock {
                query = query.lock_exclusive();
            }
            for row in query.all(txn).await? {
                changes.queue.insert(
                    row.job_id.clone(),
                    Loaded {
                        row,
                        new: false,
                        dirty: false,
                    },
                );
            }
        }
    }
    if let Some(map) = &mapping.executions {
        changes.app_executions = mapped::load_executions(txn, map, &execution_ids).await?;
    }
    if let Some(map) = &mapping.queue {
        changes.app_queue = mapped::load_queue(txn, map, &queue_ids).await?;
    }
    Ok(())
}

/// The queue rows of a batch, locked, on MySQL/MariaDB, where another instance may write at the
/// same time. A row that does not exist locks nothing, so two instances applying events of one new
/// job at once (a partition briefly read by both around a rebalance) would both insert it and
/// the later upsert would overwrite the other with older state. So every id first gets an
/// empty placeholder row where it has none (waiting, on a conflict, for the other transaction
/// to end), then all are locked and read. A placeholder is never committed empty: the batch
/// writes every new row or deletes it.
async fn lock_queue_rows(
    txn: &DatabaseTransaction,
    queue_ids: &[&str],
    changes: &mut Changes,
) -> Result<(), DbErr> {
    let now = Utc::now();
    for chunk in queue_ids.chunks(LOAD_CHUNK) {
        let placeholders = chunk.iter().map(|id| queue::ActiveModel {
            job_id: Set((*id).to_owned()),
            status: Set(String::new()),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        });
        queue::Entity::insert_many(placeholders)
            .on_conflict_do_nothing()
            .exec_without_returning(txn)
            .await?;
        let rows = queue::Entity::find()
            .filter(queue::Column::JobId.is_in(chunk.iter().copied()))
            .lock_exclusive()
            .all(txn)
            .await?;
        for row in rows {
            // Empty: our own placeholder, or one another batch inserted and rolled back.
            let new = row.status.is_empty();
            changes.queue.insert(
                row.job_id.clone(),
                Loaded {
                    row,
                    new,
                    dirty: new,
                },
            );
        }
    }
    Ok(())
}

/// Brings jobwarden's copy of each mapped row up to what the application's row holds now: the
/// application's columns are the truth for the fields they map (it may have cancelled a job,
/// or set its submission id), and the rules then apply from there. A row the application
/// deleted is no longer supervised.
fn reconcile_executions(changes: &mut Changes, map: &mapped::ExecutionsMap, now: DateTime<Utc>) {
    let ids: Vec<String> = changes.executions.keys().cloned().collect();
    for id in ids {
        let Some(app) = changes.app_executions.get(&id) else {
            changes.executions.remove(&id);
            continue;
        };
        let loaded = changes.executions.get_mut(&id).expect("listed above");
        match overlay_execution(&mut loaded.row, app, map) {
            Ok(None) => {}
            Ok(Some(entry)) => {
                loaded.dirty = true;
                if let Some(entry) = entry.with_time(now) {
                    changes
                        .history
                        .push(history_row(SPARK, &id, &entry, Source::Application));
                }
            }
            Err(reason) => {
                changes.executions.remove(&id);
                changes.unreadable.insert(id, reason);
            }
        }
    }
}

/// What overlaying an application row changed in jobwarden's copy.
struct Overlaid {
    from: crate::domain::JobStatus,
    to: crate::domain::JobStatus,
}

impl Overlaid {
    /// The history line for a status the application changed itself, if it did.
    fn with_time(self, at: DateTime<Utc>) -> Option<HistoryEntry> {
        (self.from != self.to).then(|| HistoryEntry {
            from: Some(self.from),
            to: self.to,
            detail: Some("changed by the application".into()),
            at,
        })
    }
}

/// Copies the application's mapped values into jobwarden's copy of the row. `Ok(None)` when
/// the copy already held them.
fn overlay_execution(
    row: &mut executions::Model,
    app: &AppExecution,
    map: &mapped::ExecutionsMap,
) -> Result<Option<Overlaid>, String> {
    let status = app
        .status
        .as_ref()
        .and_then(|v| map.vocabulary.decode(v))
        .ok_or_else(|| match &app.status {
            Some(v) => format!(
                "status {v} is not in the status vocabulary of {}",
                map.table
            ),
            None => format!("status is NULL in {}", map.table),
        })?;
    let before = row.clone();
    let from = row.status.parse().unwrap_or(status);
    row.status = status.as_str().to_owned();
    row.submission_id.clone_from(&app.submission_id);
    if map.job_name.is_some() {
        row.job_name.clone_from(&app.job_name);
    }
    if map.cluster.is_some() {
        row.cluster.clone_from(&app.cluster);
    }
    if map.progress.is_some() {
        row.progress = app
            .progress
            .map_or(0, |p| p.round().clamp(0.0, 100.0) as i16);
    }
    if map.error_message.is_some() {
        row.error_message.clone_from(&app.error_message);
    }
    if map.submitted_at.is_some() {
        row.submitted_at = app.submitted_at;
    }
    if map.started_at.is_some() {
        row.started_at = app.started_at;
    }
    if map.completed_at.is_some() {
        row.completed_at = app.completed_at;
    }
    if *row == before {
        return Ok(None);
    }
    Ok(Some(Overlaid { from, to: status }))
}

/// The application's view of jobwarden's row: the mapped fields, as they should now be.
fn app_view(
    row: &executions::Model,
    loaded: &AppExecution,
    map: &mapped::ExecutionsMap,
) -> AppExecution {
    let status = row
        .status
        .parse()
        .map(|s| map.vocabulary.encode(s).clone())
        .ok()
        .or_else(|| loaded.status.clone());
    AppExecution {
        submission_id: loaded.submission_id.clone(),
        status,
        job_name: loaded.job_name.clone(),
        cluster: loaded.cluster.clone(),
        progress: map.progress.as_ref().map(|_| f64::from(row.progress)),
        error_message: map
            .error_message
            .as_ref()
            .and_then(|_| row.error_message.clone()),
        submitted_at: map.submitted_at.as_ref().and(row.submitted_at),
        started_at: map.started_at.as_ref().and(row.started_at),
        completed_at: map.completed_at.as_ref().and(row.completed_at),
    }
}

fn apply_one(
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
            None => track(request, changes, now),
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
        } => attempts::begin(changes, execution_id, *attempt, mark, *at),
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

/// A relaunched driver gets a new id: the row follows it when exactly one candidate is not
/// already another row's; otherwise it keeps watching the old id and says why, once.
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
    if crate::domain::Lifecycle::is_terminal(state.status) {
        return;
    }
    let old = loaded.row.submission_id.clone().unwrap_or_default();
    let free: Vec<&String> = observation
        .successors
        .iter()
        .filter(|id| !changes.tracked_successors.contains(*id))
        .collect();
    let detail = match free.as_slice() {
        [new] => {
            let new = (*new).clone();
            loaded.row.submission_id = Some(new.clone());
            state.resubmitted();
            rows::store_execution_state(&mut loaded.row, &state);
            loaded.dirty = true;
            if let Some(write) = attempts::relaunched(&loaded.row, &new) {
                changes.attempt_writes.push(write);
            }
            changes.tracked_successors.insert(new.clone());
            format!(
                "relaunched by Spark as {new} (was {old}): the only driver of the same main class started after it and tracked by no other row; following {new}"
            )
        }
        [] => return,
        many if !was_relaunching => format!(
            "relaunched by Spark, but {} drivers could be the new one ({}): still watching {old} rather than guess",
            many.len(),
            many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ),
        _ => return,
    };
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

fn track(
    request: &TrackRequest,
    changes: &mut Changes,
    now: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    if let Some(existing) = changes.executions.get_mut(&request.execution_id) {
        // A row the submitter inserted before it knew the backend's id may be given one, once.
        if existing.row.submission_id.is_none() && request.submission_id.is_some() {
            let mut state = rows::execution_state(&existing.row)?;
            state.resubmitted();
            rows::store_execution_state(&mut existing.row, &state);
            existing
                .row
                .submission_id
                .clone_from(&request.submission_id);
            if existing.row.job_name.is_none() {
                existing.row.job_name.clone_from(&request.job_name);
            }
            if existing.row.cluster.is_none() {
                existing.row.cluster.clone_from(&request.cluster);
            }
            existing.dirty = true;
            return Ok(WriteOutcome::Tracked { created: false });
        }
        return Err(OpError::Duplicate {
            execution_id: request.execution_id.clone(),
        });
    }
    let state = ExecutionState::queued(now);
    let mut row = new_execution_row(
        &request.execution_id,
        request.job_name.clone(),
        request.submission_id.clone(),
        now,
    );
    row.cluster.clone_from(&request.cluster);
    rows::store_execution_state(&mut row, &state);
    let detail = match (&request.spec, &request.submission_id) {
        (Some(spec), _) => {
            row.submit_spec = Some(spec.to_json());
            row.next_attempt_at = Some(now);
            Some(format!(
                "to be submitted by jobwarden: {} from {}",
                spec.main_class, spec.app_resource
            ))
        }
        (None, Some(s)) => Some(format!("tracking submission {s}")),
        (None, None) => None,
    };
    let registered = state.registered(detail);
    changes.history.push(history_row(
        SPARK,
        &request.execution_id,
        &registered,
        request.source,
    ));
    changes.executions.insert(
        request.execution_id.clone(),
        Loaded {
            row,
            new: true,
            dirty: true,
        },
    );
    Ok(WriteOutcome::Tracked { created: true })
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
    let held = match warning {
        _ if state.status.is_terminal() => None,
        Warning::StuckSoon => state.failing_since.and_then(|since| {
            let stuck = chrono::Duration::from_std(rules.timeouts.stuck_timeout).ok()?;
            (now - since >= stuck / 2).then(|| outbox::Warned {
                execution_id: execution_id.to_owned(),
                event: EventKind::StuckSoon,
                dedup_key: format!("stuck_soon:{execution_id}:{}", since.timestamp_millis()),
                reason: format!(
                    "Spark has not confirmed this job since {} ({}); it will be failed at {} unless Spark confirms it",
                    since.format("%Y-%m-%d %H:%M:%SZ"),
                    state.last_poll_error.as_deref().unwrap_or("no usable answer"),
                    (since + stuck).format("%Y-%m-%d %H:%M:%SZ"),
                ),
            })
        }),
        Warning::RunningLong {
            usual,
            runs,
            factor,
        } => state
            .started_at
            .filter(|_| state.status == crate::domain::JobStatus::Running)
            .and_then(|started| {
                let ran = (now - started).to_std().ok()?;
                (ran >= usual.mul_f64(*factor)).then(|| outbox::Warned {
                    execution_id: execution_id.to_owned(),
                    event: EventKind::RunningLong,
                    dedup_key: format!(
                        "running_long:{execution_id}:{}",
                        started.timestamp_millis()
                    ),
                    reason: format!(
                        "running for {}; its last {runs} successful runs took at most {} (95th percentile), and it is past {factor}× that",
                        humantime::format_duration(Duration::from_secs(ran.as_secs())),
                        humantime::format_duration(Duration::from_secs(usual.as_secs())),
                    ),
                })
            }),
    };
    let sent = held.is_some();
    changes.warnings.extend(held);
    Ok(WriteOutcome::Warned { sent })
}

/// Starts supervising a row the application inserted into its mapped table.
fn adopt(
    execution_id: &str,
    changes: &mut Changes,
    mapping: &Mapping,
    now: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    if changes.executions.contains_key(execution_id) {
        return Ok(WriteOutcome::Tracked { created: false });
    }
    let unknown = || OpError::UnknownExecution {
        execution_id: execution_id.to_owned(),
    };
    let map = mapping.executions.as_ref().ok_or_else(unknown)?;
    let app = changes
        .app_executions
        .get(execution_id)
        .ok_or_else(unknown)?;
    let mut row = new_execution_row(execution_id, None, None, now);
    rows::store_execution_state(&mut row, &ExecutionState::queued(now));
    overlay_execution(&mut row, app, map).map_err(|reason| OpError::CorruptRow {
        table: map.table.to_string(),
        id: execution_id.to_owned(),
        reason,
    })?;
    let state = rows::execution_state(&row)?;
    let registered = state.registered(Some(format!("picked up from {}", map.table)));
    changes.history.push(history_row(
        SPARK,
        execution_id,
        &registered,
        Source::Application,
    ));
    changes.executions.insert(
        execution_id.to_owned(),
        Loaded {
            row,
            new: true,
            dirty: true,
        },
    );
    Ok(WriteOutcome::Tracked { created: true })
}

fn new_execution_row(
    execution_id: &str,
    job_name: Option<String>,
    submission_id: Option<String>,
    now: DateTime<Utc>,
) -> executions::Model {
    executions::Model {
        execution_id: execution_id.to_owned(),
        job_name,
        submission_id,
        status: String::new(),
        spark_state: None,
        progress: 0,
        submitted_at: None,
        started_at: None,
        completed_at: None,
        last_polled_at: None,
        last_confirmed_at: None,
        next_poll_at: None,
        status_changed_at: None,
        error_message: None,
        consecutive_poll_failures: 0,
        last_poll_error: None,
        owner: None,
        lease_until: None,
        created_at: now,
        updated_at: now,
        failing_since: None,
        cluster: None,
        submit_spec: None,
        attempt: 0,
        next_attempt_at: None,
        cancel_requested_at: None,
    }
}

/// A mapped queue row's status, or why it cannot be read.
fn app_queue_status(
    map: &mapped::QueueMap,
    app: &AppQueueJob,
    job_id: &str,
) -> Result<crate::domain::QueueStatus, OpError> {
    app.status
        .as_ref()
        .and_then(|v| map.vocabulary.decode(v))
        .ok_or_else(|| OpError::CorruptRow {
            table: map.table.to_string(),
            id: job_id.to_owned(),
            reason: match &app.status {
                Some(v) => format!("status {v} is not in the status vocabulary"),
                None => "status is NULL".into(),
            },
        })
}

/// Whether the application's status is behind jobwarden's (and not finished): then the
/// application's row is brought forward rather than taken as the truth.
fn behind(theirs: crate::domain::QueueStatus, ours: crate::domain::QueueStatus) -> bool {
    use crate::domain::Lifecycle;
    !theirs.is_terminal() && theirs.stage() < ours.stage()
}

/// Takes the application's status and the values it maps into jobwarden's state.
fn take_app_queue(
    state: &mut QueueState,
    theirs: crate::domain::QueueStatus,
    app: &AppQueueJob,
    map: &mapped::QueueMap,
) {
    state.status = theirs;
    if map.error_message.is_some() {
        state.error_message.clone_from(&app.error_message);
    }
    if map.generated_fields.is_some() {
        state.generated_fields.clone_from(&app.generated_fields);
    }
    if map.completed_at.is_some() {
        state.completed_at = app.completed_at;
    }
}

fn queue_history(
    job_id: &str,
    from: crate::domain::QueueStatus,
    to: crate::domain::QueueStatus,
    source: Source,
    detail: Option<String>,
    at: DateTime<Utc>,
) -> history::ActiveModel {
    history::ActiveModel {
        id: NotSet,
        job_kind: Set(QUEUE.to_owned()),
        job_id: Set(job_id.to_owned()),
        from_status: Set(Some(from.as_str().to_owned())),
        to_status: Set(to.as_str().to_owned()),
        source: Set(source.as_str().to_owned()),
        detail: Set(detail),
        at: Set(at),
    }
}

/// Brings a mapped queue row and jobwarden's copy into step, forward only: whichever is further
/// along its lifecycle wins, and a finished status the application wrote is never overwritten.
/// When the copy is ahead, the batch's write-out copies it into the application's row.
fn sync_queue(
    job_id: &str,
    changes: &mut Changes,
    map: Option<&mapped::QueueMap>,
    now: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    let (Some(map), Some(app), Some(loaded)) = (
        map,
        changes.app_queue.get(job_id),
        changes.queue.get_mut(job_id),
    ) else {
        return Ok(WriteOutcome::Queue(EventApplied::Refreshed));
    };
    if loaded.row.status.is_empty() {
        // Only a placeholder: jobwarden has nothing of its own for this job.
        return Ok(WriteOutcome::Queue(EventApplied::Refreshed));
    }
    let mut state = rows::queue_state(&loaded.row)?;
    let theirs = app_queue_status(map, app, job_id)?;
    if theirs == state.status || behind(theirs, state.status) {
        // Equal, or ours is further along: the write-out brings the application's row up to it.
        return Ok(WriteOutcome::Queue(EventApplied::Refreshed));
    }
    let from = state.status;
    take_app_queue(&mut state, theirs, app, map);
    rows::store_queue_state(&mut loaded.row, &state);
    loaded.dirty = true;
    changes.history.push(queue_history(
        job_id,
        from,
        theirs,
        Source::Application,
        Some("changed by the application".into()),
        now,
    ));
    Ok(WriteOutcome::Queue(EventApplied::Transitioned {
        from,
        to: theirs,
    }))
}

fn queue_event(
    event: &StatusEvent,
    position: Option<&Position>,
    received_at: DateTime<Utc>,
    changes: &mut Changes,
    map: Option<&mapped::QueueMap>,
    now: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    let loaded = changes
        .queue
        .entry(event.job_id.clone())
        .or_insert_with(|| Loaded {
            row: queue::Model {
                job_id: event.job_id.clone(),
                status: String::new(),
                error_message: None,
                generated_fields: None,
                completed_at: None,
                last_event_at: None,
                last_event_id: None,
                last_topic: None,
                last_partition: None,
                last_offset: None,
                created_at: now,
                updated_at: now,
            },
            new: true,
            dirty: true,
        });
    let mut state = if loaded.new && loaded.row.status.is_empty() {
        QueueState::pending()
    } else {
        rows::queue_state(&loaded.row)?
    };
    if let (Some(map), Some(app)) = (map, changes.app_queue.get(&event.job_id)) {
        let theirs = app_queue_status(map, app, &event.job_id)?;
        // The application's row is the truth for what it maps; a status it set itself (a
        // cancel, say) is where the rules start from. A row behind jobwarden's copy (inserted
        // after an event had been applied) is brought forward by the write-out instead.
        if loaded.new || !behind(theirs, state.status) {
            if theirs != state.status && !loaded.new {
                changes.history.push(queue_history(
                    &event.job_id,
                    state.status,
                    theirs,
                    Source::Application,
                    Some("changed by the application".into()),
                    received_at,
                ));
            }
            take_app_queue(&mut state, theirs, app, map);
            if rows::queue_state(&loaded.row).ok().as_ref() != Some(&state) {
                rows::store_queue_state(&mut loaded.row, &state);
                loaded.dirty = true;
            }
        }
    }
    let before = state.clone();
    let applied = state.apply(event, position, received_at);
    if state != before || loaded.new {
        rows::store_queue_state(&mut loaded.row, &state);
        loaded.dirty = true;
    }
    if applied.took_effect() {
        let detail = match (&event.error_message, position) {
            (Some(msg), _) => Some(msg.clone()),
            (None, Some(p)) => Some(format!("{}[{}]@{}", p.topic, p.partition, p.offset)),
            (None, None) => None,
        };
        changes.history.push(queue_history(
            &event.job_id,
            before.status,
            state.status,
            Source::KafkaEvent,
            detail,
            event.timestamp.unwrap_or(received_at),
        ));
    }
    Ok(WriteOutcome::Queue(applied))
}

/// Writes everything; returns the indexes (among dead letters) that were already stored, and
/// how many job rows were written.
async fn write_out(
    txn: &DatabaseTransaction,
    changes: Changes,
    cx: &WriteContext<'_>,
    now: DateTime<Utc>,
) -> Result<(Vec<usize>, usize, Inserted), DbErr> {
    let mapping = cx.mapping;
    let mut inserted = Inserted {
        history: changes.history.len(),
        ..Inserted::default()
    };
    // Notifications are decided from what this batch is about to write, and written with it:
    // the transition and its message commit together or not at all.
    let notifications = outbox::rows_for(
        cx.notify,
        &changes.history,
        |kind, id| {
            (kind == SPARK)
                .then(|| changes.executions.get(id))
                .flatten()
                .map(|loaded| outbox::JobFacts {
                    name: loaded.row.job_name.clone(),
                    cluster: loaded.row.cluster.clone(),
                    submission_id: loaded.row.submission_id.clone(),
                })
        },
        now,
    );
    outbox::record(txn, &changes.attempts).await?;
    let facts_of = |id: &str| {
        changes.executions.get(id).map(|loaded| outbox::JobFacts {
            name: loaded.row.job_name.clone(),
            cluster: loaded.row.cluster.clone(),
            submission_id: loaded.row.submission_id.clone(),
        })
    };
    let mut once = outbox::warning_rows(cx.notify, &changes.warnings, facts_of, now);
    if !changes.settled.is_empty()
        && (cx.notify.wants(EventKind::StuckSoon) || cx.notify.wants(EventKind::RunningLong))
    {
        let settled: Vec<(String, Option<outbox::JobFacts>, bool)> = changes
            .settled
            .iter()
            .filter_map(|id| {
                let row = &changes.executions.get(id)?.row;
                let ended = row
                    .status
                    .parse::<crate::domain::JobStatus>()
                    .is_ok_and(|s| s.is_terminal());
                Some((id.clone(), facts_of(id), ended))
            })
            .collect();
        once.extend(outbox::resolved_rows(txn, cx.notify, &settled, now).await?);
    }
    outbox::insert_once(txn, once).await?;
    let mut app_rows_written = 0;
    if let Some(map) = &mapping.executions {
        for (id, loaded) in &changes.executions {
            if let Some(before) = changes.app_executions.get(id) {
                let after = app_view(&loaded.row, before, map);
                if mapped::write_execution(txn, map, id, before, &after).await? {
                    app_rows_written += 1;
                }
            }
        }
    }
    if let Some(map) = &mapping.queue {
        for (id, loaded) in &changes.queue {
            if let (Some(before), Ok(state)) =
                (changes.app_queue.get(id), rows::queue_state(&loaded.row))
            {
                let after = AppQueueJob {
                    status: Some(map.vocabulary.encode(state.status).clone()),
                    error_message: map.error_message.as_ref().and(state.error_message),
                    generated_fields: map.generated_fields.as_ref().and(state.generated_fields),
                    completed_at: map.completed_at.as_ref().and(state.completed_at),
                };
                if mapped::write_queue(txn, map, id, before, &after).await? {
                    app_rows_written += 1;
                }
            }
        }
    }
    // Every changed row goes out in multi-row statements (new rows on PostgreSQL inserted only
    // if still absent, the rest upserted) instead of one UPDATE per row. The rows were read
    // under lock in this transaction, so the upsert writes exactly what the domain rules
    // decided.
    let insert_if_absent = txn.get_database_backend() == DatabaseBackend::Postgres;
    let (fresh, rows) = split_changed(
        changes.executions.into_values(),
        insert_if_absent,
        &mut inserted.executions,
        |mut row| {
            row.updated_at = now;
            row.into_active_model().reset_all()
        },
    );
    let mut rows_written = rows.len() + fresh.len() + app_rows_written;
    insert_new_rows(txn, fresh).await?;
    bulk::write(
        txn,
        rows,
        &Conflict::Update {
            key: executions::Column::ExecutionId,
            // The key, the creation time and the lease are never the business of a status
            // change: an update leaves them as they are.
            keep: vec![
                executions::Column::CreatedAt,
                executions::Column::Owner,
                executions::Column::LeaseUntil,
            ],
        },
    )
    .await?;
    // A new row whose change was refused is not a job: a placeholder goes, rather than being
    // committed without a status, and a row only in memory is never written.
    let (empty, queue_rows): (Vec<_>, Vec<_>) = changes
        .queue
        .into_values()
        .partition(|loaded| loaded.row.status.is_empty());
    let empty: Vec<String> = empty.into_iter().map(|l| l.row.job_id).collect();
    if changes.queue_placeholders && !empty.is_empty() {
        queue::Entity::delete_many()
            .filter(queue::Column::JobId.is_in(empty))
            .exec(txn)
            .await?;
    }
    let (fresh, rows) = split_changed(
        queue_rows.into_iter(),
        insert_if_absent && !changes.queue_placeholders,
        &mut inserted.queue,
        |mut row| {
            row.updated_at = now;
            row.into_active_model().reset_all()
        },
    );
    rows_written += rows.len() + fresh.len();
    insert_new_rows(txn, fresh).await?;
    bulk::write(
        txn,
        rows,
        &Conflict::Update {
            key: queue::Column::JobId,
            keep: vec![queue::Column::CreatedAt],
        },
    )
    .await?;
    attempts::write(txn, changes.attempt_writes).await?;
    bulk::append(txn, changes.history).await?;
    bulk::append(txn, notifications).await?;
    let mut duplicates = Vec::new();
    let mut letter_notifications = Vec::new();
    for (i, letter) in changes.dead_letters.into_iter().enumerate() {
        // A redelivered bad message must not become a second dead letter.
        if let (Some(topic), Some(partition), Some(offset)) =
            (&letter.topic, letter.partition, letter.offset)
        {
            let seen = dead_letters::Entity::find()
                .filter(dead_letters::Column::Topic.eq(topic.as_str()))
                .filter(dead_letters::Column::Partition.eq(partition))
                .filter(dead_letters::Column::Offset.eq(offset))
                .one(txn)
                .await?;
            if seen.is_some() {
                duplicates.push(i);
                continue;
            }
        }
        letter_notifications.extend(outbox::dead_letter_rows(cx.notify, &letter, now));
        dead_letters::Entity::insert(dead_letters::ActiveModel {
            id: NotSet,
            source: Set(letter.source),
            topic: Set(letter.topic),
            partition: Set(letter.partition),
            offset: Set(letter.offset),
            key: Set(letter.key),
            payload: Set(letter.payload),
            error: Set(letter.error),
            received_at: Set(letter.received_at),
        })
        .exec_without_returning(txn)
        .await?;
    }
    if !letter_notifications.is_empty() {
        entity::jobwarden_outbox::Entity::insert_many(letter_notifications)
            .exec_without_returning(txn)
            .await?;
    }
    Ok((duplicates, rows_written, inserted))
}

/// A table's changed rows, made ready by `finish`: the new ones to insert only if still absent
/// (when `insert_if_absent`, see `insert_new_rows`), and the rest to upsert. Counts the new ones
/// into `new_rows`.
fn split_changed<M, A>(
    loaded: impl Iterator<Item = Loaded<M>>,
    insert_if_absent: bool,
    new_rows: &mut usize,
    finish: impl Fn(M) -> A,
) -> (Vec<A>, Vec<A>) {
    let mut fresh = Vec::new();
    let mut rows = Vec::new();
    for loaded in loaded.filter(|loaded| loaded.dirty) {
        *new_rows += usize::from(loaded.new);
        let row = finish(loaded.row);
        if insert_if_absent && loaded.new {
            fresh.push(row);
        } else {
            rows.push(row);
        }
    }
    (fresh, rows)
}

/// What a batch returns when a row it found absent was inserted by another writer before its
/// own insert: nothing of the batch is kept, and it runs again from a fresh read.
pub(crate) const RACED_FOR_NEW_ROW: &str =
    "another writer inserted a new job's row while this batch was writing it";

/// PostgreSQL: inserts the job rows the batch found absent, each only if it still is. A row
/// that another writer (another instance tracking the same id, or applying the same new job's
/// events around a rebalance) inserted meanwhile is never overwritten with this batch's view of
/// it: the batch fails as a conflict and is run again, and then reads that row under lock. For
/// a queue job that is one write, where a placeholder would take an insert, a lock and an
/// update.
async fn insert_new_rows<A>(txn: &DatabaseTransaction, rows: Vec<A>) -> Result<(), DbErr>
where
    A: ActiveModelTrait + Send,
{
    let expected = rows.len() as u64;
    if bulk::write(txn, rows, &Conflict::Skip).await? != expected {
        return Err(DbErr::Custom(RACED_FOR_NEW_ROW.into()));
    }
    Ok(())
}

fn mark_duplicate_letters(
    mut outcomes: Vec<Result<WriteOutcome, OpError>>,
    ops: &[WriteOp],
    duplicates: &[usize],
) -> Vec<Result<WriteOutcome, OpError>> {
    if duplicates.is_empty() {
        return outcomes;
    }
    let letter_positions: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, WriteOp::DeadLetter(_)))
        .map(|(i, _)| i)
        .collect();
    for &d in duplicates {
        if let Some(&i) = letter_positions.get(d) {
            outcomes[i] = Ok(WriteOutcome::DeadLettered { duplicate: true });
        }
    }
    outcomes
}
