//! A batch's write-out: every changed row in multi-row statements, the application's mapped
//! rows brought up to jobwarden's copy, history, attempts, dead letters and the notifications
//! the transitions call for, all in the batch's one transaction.

use chrono::{DateTime, Utc};
use entity::{dead_letters, spark_job_executions as executions, transformation_job_queue as queue};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, DbErr, EntityTrait,
    IntoActiveModel, ModelTrait, QueryFilter,
};

use crate::config::EventKind;
use crate::domain::Lifecycle as _;
use crate::store_api::{OpError, WriteOp, WriteOutcome};

use super::super::attempts;
use super::super::bulk::{self, Changed};
use super::super::changes::{Changes, Loaded, SPARK};
use super::super::mapped::{self, AppQueueJob};
use super::super::ordering;
use super::super::outbox;
use super::super::rows;
use super::application::app_view;
use super::{Inserted, WriteContext};

/// Writes everything; returns the indexes (among dead letters) that were already stored, how
/// many job rows were written, and whether a job others wait for ended.
pub(super) async fn write_out(
    txn: &DatabaseTransaction,
    mut changes: Changes,
    cx: &WriteContext<'_>,
    now: DateTime<Utc>,
) -> Result<(Vec<usize>, usize, Inserted, bool), DbErr> {
    let mapping = cx.mapping;
    let ended = ordering::ended_by(&changes.history);
    let dependencies = std::mem::take(&mut changes.ordering);
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
    let backend = txn.get_database_backend();
    let mut app_rows_written = 0;
    if let Some(map) = &mapping.executions {
        let rows = changes
            .executions
            .iter()
            .filter_map(|(id, loaded)| {
                let before = changes.app_executions.get(id)?;
                let after = app_view(&loaded.row, before, map);
                mapped::execution_changes(backend, map, id, before, &after)
            })
            .collect();
        app_rows_written +=
            mapped::write_rows(txn, &map.table.name(), &map.execution_id, rows).await?;
    }
    if let Some(map) = &mapping.queue {
        let rows = changes
            .queue
            .iter()
            .filter_map(|(id, loaded)| {
                let before = changes.app_queue.get(id)?;
                let state = rows::queue_state(&loaded.row).ok()?;
                let after = AppQueueJob {
                    status: Some(map.vocabulary.encode(state.status).clone()),
                    error_message: map.error_message.as_ref().and(state.error_message),
                    generated_fields: map.generated_fields.as_ref().and(state.generated_fields),
                    completed_at: map.completed_at.as_ref().and(state.completed_at),
                };
                mapped::queue_changes(backend, map, id, before, &after)
            })
            .collect();
        app_rows_written += mapped::write_rows(txn, &map.table.name(), &map.job_id, rows).await?;
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
        executions::Column::ExecutionId,
        |row| row.updated_at = now,
    );
    let mut rows_written = rows.len() + fresh.len() + app_rows_written;
    insert_new_rows(txn, fresh).await?;
    bulk::upsert(
        txn,
        rows,
        executions::Column::ExecutionId,
        // The creation time and the lease are never the business of a status change: an
        // update leaves them as they are.
        &[
            executions::Column::CreatedAt,
            executions::Column::Owner,
            executions::Column::LeaseUntil,
        ],
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
        queue::Column::JobId,
        |row| row.updated_at = now,
    );
    rows_written += rows.len() + fresh.len();
    insert_new_rows(txn, fresh).await?;
    bulk::upsert(txn, rows, queue::Column::JobId, &[queue::Column::CreatedAt]).await?;
    attempts::write(txn, changes.attempt_writes).await?;
    let woke = ordering::write(txn, dependencies, ended).await?;
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
    Ok((duplicates, rows_written, inserted, woke))
}

/// A table's changed rows, each touched by `touch`: the new ones to insert only if still
/// absent (when `insert_if_absent`, see `insert_new_rows`), and the rest to upsert, a row read
/// from the table as only what changed since. Counts the new ones into `new_rows`.
fn split_changed<M, A>(
    loaded: impl Iterator<Item = Loaded<M>>,
    insert_if_absent: bool,
    new_rows: &mut usize,
    key: <M::Entity as EntityTrait>::Column,
    touch: impl Fn(&mut M),
) -> (Vec<A>, Vec<Changed<A>>)
where
    M: ModelTrait + IntoActiveModel<A>,
    A: ActiveModelTrait<Entity = M::Entity>,
{
    let mut fresh = Vec::new();
    let mut rows = Vec::new();
    for loaded in loaded.filter(|loaded| loaded.dirty) {
        let mut row = loaded.row;
        touch(&mut row);
        match loaded.as_read {
            Some(before) => rows.push(Changed::since(&before, row, key)),
            None => {
                *new_rows += 1;
                if insert_if_absent {
                    fresh.push(row.into_active_model().reset_all());
                } else {
                    rows.push(Changed::whole(row.into_active_model()));
                }
            }
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
    if bulk::insert_if_absent(txn, rows).await? != expected {
        return Err(DbErr::Custom(RACED_FOR_NEW_ROW.into()));
    }
    Ok(())
}

pub(super) fn mark_duplicate_letters(
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
