//! The rows a batch touches, read (and locked where other writers may come) in as few queries
//! as the ids allow, before any change is applied.

use chrono::Utc;
use entity::{spark_job_executions as executions, transformation_job_queue as queue};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, DbErr,
    EntityTrait, QueryFilter, QuerySelect,
};

use crate::store_api::WriteOp;

use super::super::changes::{Changes, Loaded};
use super::super::mapped::{self, Mapping};

/// Largest id list in one `IN (…)`, well under every backend's bind-parameter limit.
const LOAD_CHUNK: usize = 500;

pub(super) async fn load_rows(
    txn: &DatabaseTransaction,
    ops: &[WriteOp],
    changes: &mut Changes,
    mapping: &Mapping,
) -> Result<(), DbErr> {
    let mut execution_ids: Vec<&str> = ops.iter().filter_map(WriteOp::execution_id).collect();
    let mut queue_ids: Vec<&str> = ops.iter().filter_map(WriteOp::queue_job_id).collect();
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
            changes
                .executions
                .insert(row.execution_id.clone(), Loaded::read(row));
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
                changes.queue.insert(row.job_id.clone(), Loaded::read(row));
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
            let loaded = if row.status.is_empty() {
                Loaded::created(row)
            } else {
                Loaded::read(row)
            };
            changes.queue.insert(loaded.row.job_id.clone(), loaded);
        }
    }
    Ok(())
}
