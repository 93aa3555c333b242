//! One transaction for many changes: load the rows they touch, apply each change in order with
//! the domain rules, write the changed rows and their history rows, commit.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{
    dead_letters, job_status_history as history, spark_job_executions as executions,
    transformation_job_queue as queue,
};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, IntoActiveModel, Iterable, QueryFilter, QuerySelect, TransactionTrait,
};

use crate::domain::{
    poll_backoff, timeout_reason, Applied, EventApplied, ExecutionState, JobStatus, Lifecycle,
    Observation, Position, QueueState, StatusEvent, TimeoutPolicy,
};

use super::rows;

/// Who caused a transition; stored in `job_status_history.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    SparkPoll,
    KafkaEvent,
    TimeoutSweep,
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::SparkPoll => "spark_poll",
            Source::KafkaEvent => "kafka_event",
            Source::TimeoutSweep => "timeout_sweep",
            Source::Api => "api",
        }
    }
}

const SPARK: &str = "spark";
const QUEUE: &str = "queue";

/// Register a Spark submission to supervise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRequest {
    pub execution_id: String,
    pub submission_id: Option<String>,
    pub job_name: Option<String>,
    pub source: Source,
}

/// An event that could not be applied, kept as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeadLetter {
    pub source: String,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub error: String,
    pub received_at: DateTime<Utc>,
}

/// One change for the store to make durable.
#[derive(Debug, Clone)]
pub enum WriteOp {
    Track(TrackRequest),
    /// Spark answered about this execution.
    Observe {
        execution_id: String,
        observation: Observation,
    },
    /// A poll got no usable answer; `backoff` (interval, cap) delays this job's next poll.
    PollFailed {
        execution_id: String,
        at: DateTime<Utc>,
        error: String,
        backoff: Option<(Duration, Duration)>,
    },
    /// Fail the job if, by its state at write time, a timeout rule says so.
    TimeOut {
        execution_id: String,
        now: DateTime<Utc>,
        policy: TimeoutPolicy,
    },
    QueueEvent {
        event: StatusEvent,
        position: Option<Position>,
        received_at: DateTime<Utc>,
    },
    DeadLetter(NewDeadLetter),
}

/// What a change did, known once it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// `created` is false when an existing row without a submission id was given one.
    Tracked {
        created: bool,
    },
    Execution(Applied),
    Queue(EventApplied),
    /// `duplicate` when the same topic/partition/offset was already dead-lettered.
    DeadLettered {
        duplicate: bool,
    },
}

/// Why one change was refused (the rest of its batch is unaffected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("execution {execution_id} is already tracked")]
    Duplicate { execution_id: String },
    #[error("no execution {execution_id}")]
    UnknownExecution { execution_id: String },
    #[error("row {id} of {table} is unreadable: {reason}")]
    CorruptRow {
        table: &'static str,
        id: String,
        reason: String,
    },
    #[error("the database refused the change: {0}")]
    Refused(String),
}

struct Loaded<M> {
    row: M,
    new: bool,
    dirty: bool,
}

/// Everything one batch changes, gathered in memory before a single write-out.
#[derive(Default)]
struct Changes {
    executions: HashMap<String, Loaded<executions::Model>>,
    queue: HashMap<String, Loaded<queue::Model>>,
    history: Vec<history::ActiveModel>,
    dead_letters: Vec<NewDeadLetter>,
}

/// Largest id list in one `IN (…)`, well under every backend's bind-parameter limit.
const LOAD_CHUNK: usize = 500;
/// Rows per multi-row insert.
const INSERT_CHUNK: usize = 200;

/// Applies `ops` in one transaction. `Err` means nothing was written; `Ok` holds one result per op.
pub async fn apply_batch(
    db: &DatabaseConnection,
    ops: &[WriteOp],
    now: DateTime<Utc>,
) -> Result<Vec<Result<WriteOutcome, OpError>>, DbErr> {
    let txn = db.begin().await?;
    let mut changes = Changes::default();
    load_rows(&txn, ops, &mut changes).await?;
    let outcomes: Vec<_> = ops
        .iter()
        .map(|op| apply_one(op, &mut changes, now))
        .collect();
    let duplicates = write_out(&txn, changes, now).await?;
    txn.commit().await?;
    Ok(mark_duplicate_letters(outcomes, ops, &duplicates))
}

async fn load_rows(
    txn: &DatabaseTransaction,
    ops: &[WriteOp],
    changes: &mut Changes,
) -> Result<(), DbErr> {
    let mut execution_ids: Vec<&str> = Vec::new();
    let mut queue_ids: Vec<&str> = Vec::new();
    for op in ops {
        match op {
            WriteOp::Track(r) => execution_ids.push(&r.execution_id),
            WriteOp::Observe { execution_id, .. }
            | WriteOp::PollFailed { execution_id, .. }
            | WriteOp::TimeOut { execution_id, .. } => execution_ids.push(execution_id),
            WriteOp::QueueEvent { event, .. } => queue_ids.push(&event.job_id),
            WriteOp::DeadLetter(_) => {}
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
    Ok(())
}

fn apply_one(
    op: &WriteOp,
    changes: &mut Changes,
    now: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    match op {
        WriteOp::Track(request) => track(request, changes, now),
        WriteOp::Observe {
            execution_id,
            observation,
        } => with_execution(changes, execution_id, |state, _row| {
            let relaunch = observation.spark_state.as_deref() == Some("RELAUNCHING")
                && state.spark_state.as_deref() != Some("RELAUNCHING")
                && !state.status.is_terminal();
            let applied = state.observe(observation);
            let record = match &applied {
                Applied::Transitioned { from, to } => {
                    Some((*from, *to, describe_observation(observation)))
                }
                // Worth a line in the history although the status stays Running.
                Applied::Refreshed if relaunch => Some((
                    state.status,
                    state.status,
                    Some(
                        "RELAUNCHING: Spark is relaunching the driver (its worker was lost)".into(),
                    ),
                )),
                _ => None,
            };
            (WriteOutcome::Execution(applied), record)
        })
        .map(|(outcome, record)| {
            if let Some((from, to, detail)) = record {
                changes.history.push(history_row(
                    SPARK,
                    execution_id,
                    Some(from.as_str()),
                    to.as_str(),
                    Source::SparkPoll,
                    detail,
                    observation.at,
                ));
            }
            outcome
        }),
        WriteOp::PollFailed {
            execution_id,
            at,
            error,
            backoff,
        } => with_execution(changes, execution_id, |state, row| {
            let finished = state.status.is_terminal();
            state.poll_failed(*at);
            if !finished {
                row.last_poll_error = Some(error.clone());
                row.next_poll_at = backoff.and_then(|(interval, cap)| {
                    let delay = poll_backoff(state.consecutive_poll_failures, interval, cap);
                    chrono::Duration::from_std(delay).ok().map(|d| *at + d)
                });
            }
            (WriteOutcome::Execution(Applied::Refreshed), None)
        })
        .map(|(outcome, _)| outcome),
        WriteOp::TimeOut {
            execution_id,
            now,
            policy,
        } => {
            let result = with_execution(changes, execution_id, |state, row| {
                let Some(reason) = timeout_reason(state, row.created_at, *now, policy) else {
                    return (WriteOutcome::Execution(Applied::Refreshed), None);
                };
                match state.force_finish(JobStatus::Failed, *now, &reason) {
                    Ok((from, to)) => (
                        WriteOutcome::Execution(Applied::Transitioned { from, to }),
                        Some((from, to, Some(reason))),
                    ),
                    Err(refusal) => (WriteOutcome::Execution(Applied::Refused(refusal)), None),
                }
            })?;
            if let (_, Some((from, to, detail))) = &result {
                changes.history.push(history_row(
                    SPARK,
                    execution_id,
                    Some(from.as_str()),
                    to.as_str(),
                    Source::TimeoutSweep,
                    detail.clone(),
                    *now,
                ));
            }
            Ok(result.0)
        }
        WriteOp::QueueEvent {
            event,
            position,
            received_at,
        } => queue_event(event, position.as_ref(), *received_at, changes, now),
        WriteOp::DeadLetter(letter) => {
            changes.dead_letters.push(letter.clone());
            Ok(WriteOutcome::DeadLettered { duplicate: false })
        }
    }
}

type Record = (JobStatus, JobStatus, Option<String>);

/// Runs `f` on the execution's domain state and writes the state back to its row.
fn with_execution(
    changes: &mut Changes,
    execution_id: &str,
    f: impl FnOnce(&mut ExecutionState, &mut executions::Model) -> (WriteOutcome, Option<Record>),
) -> Result<(WriteOutcome, Option<Record>), OpError> {
    let loaded =
        changes
            .executions
            .get_mut(execution_id)
            .ok_or_else(|| OpError::UnknownExecution {
                execution_id: execution_id.to_owned(),
            })?;
    let mut state = rows::execution_state(&loaded.row)?;
    let before = state.clone();
    let before_row = loaded.row.clone();
    let (outcome, record) = f(&mut state, &mut loaded.row);
    if state.status.is_terminal() {
        // Nothing left to poll.
        loaded.row.next_poll_at = None;
    }
    if matches!(
        outcome,
        WriteOutcome::Execution(Applied::Refreshed | Applied::Transitioned { .. })
    ) && before.consecutive_poll_failures > 0
        && state.consecutive_poll_failures == 0
    {
        loaded.row.last_poll_error = None;
        loaded.row.next_poll_at = None;
    }
    rows::store_execution_state(&mut loaded.row, &state);
    if state != before || loaded.row != before_row {
        loaded.dirty = true;
    }
    Ok((outcome, record))
}

fn track(
    request: &TrackRequest,
    changes: &mut Changes,
    now: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    if let Some(existing) = changes.executions.get_mut(&request.execution_id) {
        // A row the submitter inserted before it knew Spark's id may be given one, once.
        if existing.row.submission_id.is_none() && request.submission_id.is_some() {
            existing
                .row
                .submission_id
                .clone_from(&request.submission_id);
            if existing.row.job_name.is_none() {
                existing.row.job_name.clone_from(&request.job_name);
            }
            existing.row.next_poll_at = None;
            existing.dirty = true;
            return Ok(WriteOutcome::Tracked { created: false });
        }
        return Err(OpError::Duplicate {
            execution_id: request.execution_id.clone(),
        });
    }
    let state = ExecutionState::queued();
    let mut row = executions::Model {
        execution_id: request.execution_id.clone(),
        job_name: request.job_name.clone(),
        submission_id: request.submission_id.clone(),
        status: String::new(),
        spark_state: None,
        progress: 0,
        submitted_at: None,
        started_at: None,
        completed_at: None,
        last_polled_at: None,
        last_confirmed_at: None,
        next_poll_at: None,
        status_changed_at: Some(now),
        error_message: None,
        consecutive_poll_failures: 0,
        last_poll_error: None,
        owner: None,
        lease_until: None,
        created_at: now,
        updated_at: now,
    };
    rows::store_execution_state(
        &mut row,
        &ExecutionState {
            status_changed_at: Some(now),
            ..state
        },
    );
    changes.history.push(history_row(
        SPARK,
        &request.execution_id,
        None,
        JobStatus::Queued.as_str(),
        request.source,
        request
            .submission_id
            .as_ref()
            .map(|s| format!("tracking submission {s}")),
        now,
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

fn queue_event(
    event: &StatusEvent,
    position: Option<&Position>,
    received_at: DateTime<Utc>,
    changes: &mut Changes,
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
        changes.history.push(history_row(
            QUEUE,
            &event.job_id,
            Some(before.status.as_str()),
            state.status.as_str(),
            Source::KafkaEvent,
            detail,
            event.timestamp.unwrap_or(received_at),
        ));
    }
    Ok(WriteOutcome::Queue(applied))
}

fn describe_observation(obs: &Observation) -> Option<String> {
    match (&obs.spark_state, &obs.message) {
        (Some(state), Some(msg)) => Some(format!("{state}: {msg}")),
        (Some(state), None) => Some(state.clone()),
        (None, Some(msg)) => Some(msg.clone()),
        (None, None) => None,
    }
}

fn history_row(
    kind: &str,
    job_id: &str,
    from: Option<&str>,
    to: &str,
    source: Source,
    detail: Option<String>,
    at: DateTime<Utc>,
) -> history::ActiveModel {
    history::ActiveModel {
        id: NotSet,
        job_kind: Set(kind.to_owned()),
        job_id: Set(job_id.to_owned()),
        from_status: Set(from.map(str::to_owned)),
        to_status: Set(to.to_owned()),
        source: Set(source.as_str().to_owned()),
        detail: Set(detail),
        at: Set(at),
    }
}

/// Writes everything; returns the indexes (among dead letters) that were already stored.
async fn write_out(
    txn: &DatabaseTransaction,
    changes: Changes,
    now: DateTime<Utc>,
) -> Result<Vec<usize>, DbErr> {
    // Every changed row, new or not, goes out in multi-row upserts: one statement per chunk
    // instead of one UPDATE per row. The rows were read under lock in this transaction, so
    // the upsert writes exactly what the domain rules decided.
    let rows: Vec<executions::ActiveModel> = changes
        .executions
        .into_values()
        .filter(|loaded| loaded.dirty)
        .map(|mut loaded| {
            loaded.row.updated_at = now;
            loaded.row.into_active_model().reset_all()
        })
        .collect();
    for chunk in chunked(rows) {
        executions::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::column(executions::Column::ExecutionId)
                    .update_columns(
                        executions::Column::iter()
                            .filter(|c| !matches!(c, executions::Column::ExecutionId)),
                    )
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    let rows: Vec<queue::ActiveModel> = changes
        .queue
        .into_values()
        .filter(|loaded| loaded.dirty)
        .map(|mut loaded| {
            loaded.row.updated_at = now;
            loaded.row.into_active_model().reset_all()
        })
        .collect();
    for chunk in chunked(rows) {
        queue::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::column(queue::Column::JobId)
                    .update_columns(
                        queue::Column::iter().filter(|c| !matches!(c, queue::Column::JobId)),
                    )
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    for chunk in chunked(changes.history) {
        history::Entity::insert_many(chunk)
            .exec_without_returning(txn)
            .await?;
    }
    let mut duplicates = Vec::new();
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
    Ok(duplicates)
}

fn chunked<T>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        out.push(items.by_ref().take(INSERT_CHUNK).collect());
    }
    out
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
