//! One transaction for many changes: load the rows they touch, apply each change in order with
//! the domain rules, write the changed rows and their history rows, commit.

use std::collections::HashMap;

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

use crate::config::SparkSettings;
use crate::domain::{
    Effect, ExecutionState, HistoryEntry, PollPolicy, Position, QueueState, StatusEvent,
    TimeoutPolicy,
};
use crate::store_api::{NewDeadLetter, OpError, Source, TrackRequest, WriteOp, WriteOutcome};

use super::rows;

const SPARK: &str = "spark";
const QUEUE: &str = "queue";

/// The domain policies the store applies changes with, given once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub poll: PollPolicy,
    pub timeouts: TimeoutPolicy,
}

impl Rules {
    /// The policies `[spark]` configures.
    pub fn from_settings(spark: &SparkSettings) -> Rules {
        Rules {
            poll: spark.poll_policy(),
            timeouts: spark.timeout_policy(),
        }
    }
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
/// Rows per multi-row insert: a whole batch (`store.max_batch`, 500) in one statement; the
/// widest row (21 columns) keeps that at 10,500 parameters, under SQLite's 32,766.
const INSERT_CHUNK: usize = 500;

/// What one committed batch did.
#[derive(Debug)]
pub struct Committed {
    /// One result per change, in order.
    pub outcomes: Vec<Result<WriteOutcome, OpError>>,
    /// Job rows inserted or updated (changes that changed nothing write none).
    pub rows_written: usize,
}

/// Applies `ops` in one transaction. `Err` means nothing was written.
pub async fn apply_batch(
    db: &DatabaseConnection,
    ops: &[WriteOp],
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<Committed, DbErr> {
    let txn = db.begin().await?;
    let mut changes = Changes::default();
    load_rows(&txn, ops, &mut changes).await?;
    let outcomes: Vec<_> = ops
        .iter()
        .map(|op| apply_one(op, &mut changes, rules, now))
        .collect();
    let (duplicates, rows_written) = write_out(&txn, changes, now).await?;
    txn.commit().await?;
    Ok(Committed {
        outcomes: mark_duplicate_letters(outcomes, ops, &duplicates),
        rows_written,
    })
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
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    match op {
        WriteOp::Track(request) => track(request, changes, now),
        WriteOp::Observe {
            execution_id,
            observation,
        } => with_execution(changes, execution_id, Source::SparkPoll, |state| {
            state.observe(observation)
        }),
        WriteOp::PollFailed {
            execution_id,
            at,
            error,
        } => with_execution(changes, execution_id, Source::SparkPoll, |state| {
            state.poll_failed(*at, error, &rules.poll)
        }),
        WriteOp::TimeOut { execution_id, now } => {
            with_execution(changes, execution_id, Source::TimeoutSweep, |state| {
                state.time_out(*now, &rules.timeouts)
            })
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

/// Runs one domain rule on the execution's state, writes the state back to its row and the
/// history line the rule asked for.
fn with_execution(
    changes: &mut Changes,
    execution_id: &str,
    source: Source,
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
    let effect = rule(&mut state);
    if state != before {
        rows::store_execution_state(&mut loaded.row, &state);
        loaded.dirty = true;
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
            existing.dirty = true;
            return Ok(WriteOutcome::Tracked { created: false });
        }
        return Err(OpError::Duplicate {
            execution_id: request.execution_id.clone(),
        });
    }
    let state = ExecutionState::queued(now);
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
        status_changed_at: None,
        error_message: None,
        consecutive_poll_failures: 0,
        last_poll_error: None,
        owner: None,
        lease_until: None,
        created_at: now,
        updated_at: now,
        failing_since: None,
    };
    rows::store_execution_state(&mut row, &state);
    let registered = state.registered(
        request
            .submission_id
            .as_ref()
            .map(|s| format!("tracking submission {s}")),
    );
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
        changes.history.push(history::ActiveModel {
            id: NotSet,
            job_kind: Set(QUEUE.to_owned()),
            job_id: Set(event.job_id.clone()),
            from_status: Set(Some(before.status.as_str().to_owned())),
            to_status: Set(state.status.as_str().to_owned()),
            source: Set(Source::KafkaEvent.as_str().to_owned()),
            detail: Set(detail),
            at: Set(event.timestamp.unwrap_or(received_at)),
        });
    }
    Ok(WriteOutcome::Queue(applied))
}

fn history_row(
    kind: &str,
    job_id: &str,
    entry: &HistoryEntry,
    source: Source,
) -> history::ActiveModel {
    history::ActiveModel {
        id: NotSet,
        job_kind: Set(kind.to_owned()),
        job_id: Set(job_id.to_owned()),
        from_status: Set(entry.from.map(|s| s.as_str().to_owned())),
        to_status: Set(entry.to.as_str().to_owned()),
        source: Set(source.as_str().to_owned()),
        detail: Set(entry.detail.clone()),
        at: Set(entry.at),
    }
}

/// Writes everything; returns the indexes (among dead letters) that were already stored, and
/// how many job rows were written.
async fn write_out(
    txn: &DatabaseTransaction,
    changes: Changes,
    now: DateTime<Utc>,
) -> Result<(Vec<usize>, usize), DbErr> {
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
    let mut rows_written = rows.len();
    for chunk in chunked(rows) {
        executions::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::column(executions::Column::ExecutionId)
                    .update_columns(executions::Column::iter().filter(|c| {
                        // The key, the creation time and the lease are never the business of
                        // a status change: an update leaves them as they are.
                        !matches!(
                            c,
                            executions::Column::ExecutionId
                                | executions::Column::CreatedAt
                                | executions::Column::Owner
                                | executions::Column::LeaseUntil
                        )
                    }))
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
    rows_written += rows.len();
    for chunk in chunked(rows) {
        queue::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::column(queue::Column::JobId)
                    .update_columns(
                        queue::Column::iter().filter(|c| {
                            !matches!(c, queue::Column::JobId | queue::Column::CreatedAt)
                        }),
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
    Ok((duplicates, rows_written))
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
