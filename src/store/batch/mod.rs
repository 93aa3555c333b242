//! One transaction for many changes: load the rows they touch (`load`), apply each change in
//! order (`apply`, `track`, `queue`, `application`: each runs the domain's rule and records what
//! it decided), then write the changed rows, their history and their notifications, and commit
//! (`write`). The rules themselves live in `crate::domain`; nothing here decides a transition.

mod application;
mod apply;
mod load;
mod queue;
mod track;
mod write;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};

use crate::notify::NotifyRules;
use crate::store_api::{Fence, OpError, WriteOp, WriteOutcome};

use super::changes::Changes;
pub use super::changes::Rules;
use super::leases;
use super::mapped::Mapping;
use super::ordering;

pub(crate) use write::RACED_FOR_NEW_ROW;

/// What one committed batch did.
#[derive(Debug)]
pub struct Committed {
    /// One result per change, in order.
    pub outcomes: Vec<Result<WriteOutcome, OpError>>,
    /// Job rows inserted or updated (changes that changed nothing write none).
    pub rows_written: usize,
    /// Rows added to jobwarden's own tables.
    pub inserted: Inserted,
    /// Each history line the batch wrote, for the log once it is durable.
    pub history: Vec<HistoryLine>,
    /// It ended a job that others wait for: they are to look at their parents.
    pub woke: bool,
}

/// One line of a job's history as the log tells it: whose, from what to what, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryLine {
    /// `spark` (an execution) or `queue` (a transformation queue job).
    pub kind: String,
    pub job_id: String,
    pub from: Option<String>,
    pub to: String,
    pub source: String,
    pub detail: Option<String>,
    /// The execution's Spark cluster, when it names one.
    pub cluster: Option<String>,
    /// The Spark run this line ends, when it moves an execution into an ending status.
    pub ended: Option<EndedRun>,
}

/// A Spark run as it ended, for the job-duration histogram once the line is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedRun {
    pub job_name: Option<String>,
    /// Driver start to end; none when it never started.
    pub ran: Option<std::time::Duration>,
}

impl HistoryLine {
    fn of(row: &entity::job_status_history::ActiveModel, changes: &Changes) -> Self {
        let text = |v: &sea_orm::ActiveValue<String>| v.clone().unwrap();
        let kind = text(&row.job_kind);
        let job_id = text(&row.job_id);
        let execution = (kind == super::changes::SPARK)
            .then(|| changes.executions.get(&job_id))
            .flatten()
            .map(|loaded| &loaded.row);
        let cluster = execution.and_then(|row| row.cluster.clone());
        let from = row.from_status.clone().unwrap();
        let to = text(&row.to_status);
        let ends = crate::analytics::Outcome::of_status(&to).is_some()
            && from.as_deref() != Some(to.as_str());
        let ended = execution.filter(|_| ends).map(|row| EndedRun {
            job_name: row.job_name.clone(),
            ran: row
                .started_at
                .zip(row.completed_at)
                .and_then(|(started, completed)| (completed - started).to_std().ok()),
        });
        HistoryLine {
            from,
            to,
            source: text(&row.source),
            detail: row.detail.clone().unwrap(),
            kind,
            job_id,
            cluster,
            ended,
        }
    }
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
    ordering::take_gates(&txn, ops, cx.rules).await?;
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
    load::load_rows(&txn, ops, &mut changes, cx.mapping).await?;
    ordering::load(&txn, ops, &mut changes, cx.rules, now).await?;
    if let Some(map) = &cx.mapping.executions {
        application::reconcile_executions(&mut changes, map, now);
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
            apply::apply_one(op, &mut changes, cx.rules, cx.mapping, now)
        })
        .collect();
    let history = changes
        .history
        .iter()
        .map(|row| HistoryLine::of(row, &changes))
        .collect();
    let (duplicates, rows_written, inserted, woke) =
        write::write_out(&txn, changes, cx, now).await?;
    txn.commit().await?;
    Ok(Committed {
        outcomes: write::mark_duplicate_letters(outcomes, ops, &duplicates),
        rows_written,
        inserted,
        history,
        woke,
    })
}
