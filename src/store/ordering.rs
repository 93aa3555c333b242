//! Ordering inside a batch: a new job's dependencies registered (its parents checked under
//! lock), a waiting child released or cancelled once its parents ended, a parent's end waking
//! its children, and the capacity and placement an attempt is begun under, counted after the
//! cluster's gate is taken so that two deciders never both take the last free place. The
//! rules are the domain's (`dependency`, `placement`); this file reads what they need and
//! records what they decided.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{
    jobwarden_capacity_gates as gates, spark_job_dependencies as deps,
    spark_job_executions as executions,
};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseBackend,
    DatabaseTransaction, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::domain::dependency::{self, After, Parent, Settlement};
use crate::domain::placement::{self, Placement, Room};
use crate::domain::{Applied, HistoryEntry, JobStatus, Lifecycle as _};
use crate::store_api::{Candidate, OpError, Source, TrackRequest, WriteOp, WriteOutcome};

use super::changes::{history_row, Changes, Rules, SPARK};
use super::rows;

/// Dependency states as stored.
pub(crate) const WAITING: &str = "waiting";
pub(crate) const ENDED: &str = "ended";
pub(crate) const SETTLED: &str = "settled";

pub(crate) use crate::domain::placement::DEFAULT_CLUSTER;

/// Largest id list in one `IN (…)`.
const CHUNK: usize = 500;

/// What a batch reads and writes for ordering.
#[derive(Default)]
pub(crate) struct Ordering {
    /// Parents' statuses as read; a parent absent here has no row.
    parents: HashMap<String, JobStatus>,
    /// The dependencies of each child a batch releases.
    edges: HashMap<String, Vec<deps::Model>>,
    /// For each attempt to begin: the clusters it may take, as counted.
    rooms: HashMap<String, Vec<Room>>,
    inserts: Vec<deps::ActiveModel>,
    /// Dependencies (child, parents) the child has looked at.
    settles: Vec<(String, Vec<String>)>,
}

pub(crate) fn cluster_key(cluster: Option<&str>) -> &str {
    cluster.unwrap_or(DEFAULT_CLUSTER)
}

/// An allowed set as stored: `,a,default,`, so one `LIKE '%,a,%'` finds the jobs a cluster
/// may take.
pub(crate) fn allowed_text(clusters: &[Option<String>]) -> String {
    let mut text = String::from(",");
    for cluster in clusters {
        text.push_str(cluster_key(cluster.as_deref()));
        text.push(',');
    }
    text
}

/// The clusters a row may be placed on: its allowed set, or its one cluster.
pub(crate) fn allowed_of(row: &executions::Model) -> Vec<Option<String>> {
    match &row.allowed_clusters {
        Some(text) => text
            .split(',')
            .filter(|name| !name.is_empty())
            .map(|name| (name != DEFAULT_CLUSTER).then(|| name.to_owned()))
            .collect(),
        None => vec![row.cluster.clone()],
    }
}

fn cluster_is(cluster: Option<&str>) -> Condition {
    match cluster {
        Some(name) => Condition::all().add(executions::Column::Cluster.eq(name)),
        None => Condition::all().add(executions::Column::Cluster.is_null()),
    }
}

/// Rows a cluster may take: placed there alone, or allowing it among others.
pub(crate) fn placeable_on(cluster: Option<&str>) -> Condition {
    Condition::any()
        .add(cluster_is(cluster).add(executions::Column::AllowedClusters.is_null()))
        .add(executions::Column::AllowedClusters.like(format!("%,{},%", cluster_key(cluster))))
}

/// Drivers on a cluster that have not ended, and submissions on their way there. Counted in
/// two index walks (drivers by status; jobs with no next attempt date), so that the jobs queued
/// for a place are never read to count who holds one.
pub(crate) async fn running_on(
    db: &impl ConnectionTrait,
    cluster: Option<&str>,
) -> Result<u64, DbErr> {
    let drivers = executions::Entity::find()
        .filter(cluster_is(cluster))
        .filter(
            executions::Column::Status
                .is_in([JobStatus::Submitting.as_str(), JobStatus::Running.as_str()]),
        )
        .count(db)
        .await?;
    let mut others = 0;
    for status in [JobStatus::Queued, JobStatus::Retrying] {
        others += executions::Entity::find()
            .filter(executions::Column::Status.eq(status.as_str()))
            .filter(executions::Column::NextAttemptAt.is_null())
            .filter(cluster_is(cluster))
            .filter(
                Condition::any()
                    .add(executions::Column::SubmissionId.is_not_null())
                    .add(
                        Condition::all()
                            .add(executions::Column::SubmitSpec.is_not_null())
                            .add(executions::Column::Attempt.gt(0)),
                    ),
            )
            .count(db)
            .await?;
    }
    Ok(drivers + others)
}

/// Stands in for a missing next-attempt date: never due (and within every database's range).
fn never() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("9999-12-31T00:00:00Z")
        .map(|at| at.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Jobs jobwarden is to submit now: due, not cancelled, no request out.
pub(crate) fn ready(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(executions::Column::SubmitSpec.is_not_null())
        .add(
            executions::Column::Status
                .is_in([JobStatus::Queued.as_str(), JobStatus::Retrying.as_str()]),
        )
        .add(executions::Column::SubmissionId.is_null())
        .add(executions::Column::CancelRequestedAt.is_null())
        // Due, and not without a date (a request out): behind a function, so that no planner
        // walks the next-attempt index for this range (it holds the whole queue) instead of
        // the queue's own index, in queue order.
        .add(
            Expr::expr(Func::coalesce([
                Expr::col(executions::Column::NextAttemptAt),
                Expr::val(never()),
            ]))
            .lte(now),
        )
}

fn begins(ops: &[WriteOp]) -> impl Iterator<Item = (&str, &[Candidate])> {
    ops.iter().filter_map(|op| match op {
        WriteOp::BeginAttempt {
            execution_id,
            candidates,
            ..
        } => Some((execution_id.as_str(), candidates.as_slice())),
        _ => None,
    })
}

/// Takes, first thing in the batch's transaction, the gate of every limited cluster an
/// attempt of the batch may be begun on. Two batches deciding about one cluster so take
/// turns, and each counts what the other committed (on MySQL/MariaDB the transaction's
/// snapshot is taken after the gate, by the first plain read that follows). SQLite has one
/// writer: nothing to take.
pub(super) async fn take_gates(
    txn: &DatabaseTransaction,
    ops: &[WriteOp],
    rules: &Rules,
) -> Result<(), DbErr> {
    if rules.capacity.is_empty() || txn.get_database_backend() == DatabaseBackend::Sqlite {
        return Ok(());
    }
    let mut names: Vec<String> = Vec::new();
    for (_, candidates) in begins(ops) {
        if candidates.is_empty() {
            // The row's clusters are not known before it is loaded: every limited one.
            names.extend(
                rules
                    .capacity
                    .keys()
                    .map(|c| cluster_key(c.as_deref()).to_owned()),
            );
        } else {
            names.extend(
                candidates
                    .iter()
                    .filter(|c| rules.capacity.contains_key(&c.cluster))
                    .map(|c| cluster_key(c.cluster.as_deref()).to_owned()),
            );
        }
    }
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return Ok(());
    }
    gates::Entity::insert_many(names.iter().map(|name| gates::ActiveModel {
        cluster: Set(name.clone()),
        decisions: Set(0),
    }))
    .on_conflict_do_nothing()
    .exec_without_returning(txn)
    .await?;
    // One at a time, in name order, so two batches taking the same gates never deadlock.
    for name in names {
        gates::Entity::update_many()
            .col_expr(
                gates::Column::Decisions,
                Expr::col(gates::Column::Decisions).add(1),
            )
            .filter(gates::Column::Cluster.eq(name))
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// Reads what the batch's ordering changes decide on, once its rows are loaded: new jobs'
/// parents (locked against a parent ending unseen beside them), waiting children's
/// dependencies and parents, and each attempt's rooms.
pub(super) async fn load(
    txn: &DatabaseTransaction,
    ops: &[WriteOp],
    changes: &mut Changes,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let lock = txn.get_database_backend() != DatabaseBackend::Sqlite;
    // A parent ending beside a new child's registration would wake the child's dependencies
    // before they exist: reading the parents under a shared lock waits for that end instead.
    let new_parents: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Track(request) => Some(request.after.iter().map(|(id, _)| id.as_str())),
            _ => None,
        })
        .flatten()
        .collect();
    read_parents(txn, &new_parents, lock, changes).await?;
    let releasing: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Release { execution_id, .. } => Some(execution_id.as_str()),
            _ => None,
        })
        .collect();
    let mut their_parents: Vec<String> = Vec::new();
    for chunk in releasing.chunks(CHUNK) {
        for edge in deps::Entity::find()
            .filter(deps::Column::ChildId.is_in(chunk.iter().copied()))
            .all(txn)
            .await?
        {
            their_parents.push(edge.parent_id.clone());
            changes
                .ordering
                .edges
                .entry(edge.child_id.clone())
                .or_default()
                .push(edge);
        }
    }
    let their_parents: Vec<&str> = their_parents.iter().map(String::as_str).collect();
    read_parents(txn, &their_parents, false, changes).await?;
    let mut running: HashMap<Option<String>, u64> = HashMap::new();
    for (id, offered) in begins(ops) {
        let Some(loaded) = changes.executions.get(id) else {
            continue;
        };
        let row = &loaded.row;
        let allowed = allowed_of(row);
        let candidates: Vec<Candidate> = if offered.is_empty() {
            allowed
                .iter()
                .map(|cluster| Candidate {
                    cluster: cluster.clone(),
                    away: false,
                    free_cores: None,
                })
                .collect()
        } else {
            offered
                .iter()
                .filter(|c| allowed.contains(&c.cluster))
                .cloned()
                .collect()
        };
        let mut rooms = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            let max_running = rules.capacity.get(&candidate.cluster).copied();
            let (now_running, ahead) = match max_running {
                Some(max) => {
                    let now_running = match running.get(&candidate.cluster) {
                        Some(n) => *n,
                        None => {
                            let n = running_on(txn, candidate.cluster.as_deref()).await?;
                            running.insert(candidate.cluster.clone(), n);
                            n
                        }
                    };
                    let free = max.saturating_sub(now_running);
                    let ahead = if free == 0 {
                        0
                    } else {
                        jobs_ahead(txn, row, candidate.cluster.as_deref(), free, now).await?
                    };
                    (now_running, ahead)
                }
                None => (0, 0),
            };
            rooms.push(Room {
                cluster: candidate.cluster,
                running: now_running,
                max_running,
                free_cores: candidate.free_cores,
                ahead,
                away: candidate.away,
            });
        }
        changes.ordering.rooms.insert(id.to_owned(), rooms);
    }
    Ok(())
}

async fn read_parents(
    txn: &DatabaseTransaction,
    ids: &[&str],
    lock: bool,
    changes: &mut Changes,
) -> Result<(), DbErr> {
    for chunk in ids.chunks(CHUNK) {
        let mut query = executions::Entity::find()
            .select_only()
            .column(executions::Column::ExecutionId)
            .column(executions::Column::Status)
            .filter(executions::Column::ExecutionId.is_in(chunk.iter().copied()));
        if lock {
            query = query.lock_shared();
        }
        let found: Vec<(String, String)> = query.into_tuple().all(txn).await?;
        for (id, status) in found {
            if let Ok(status) = status.parse() {
                changes.ordering.parents.insert(id, status);
            }
        }
    }
    Ok(())
}

/// Up to `enough` ready jobs ahead of `row` in the queue that `cluster` may also take. One
/// walk of the queue's index per status, from its head: it reads at most the jobs ahead.
async fn jobs_ahead(
    txn: &DatabaseTransaction,
    row: &executions::Model,
    cluster: Option<&str>,
    enough: u64,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let mut ahead = 0;
    for status in [JobStatus::Queued, JobStatus::Retrying] {
        let found: Vec<String> = executions::Entity::find()
            .select_only()
            .column(executions::Column::ExecutionId)
            .filter(executions::Column::Status.eq(status.as_str()))
            // A plain bound first, which every planner takes as the end of the index walk.
            .filter(executions::Column::QueueRank.lte(row.queue_rank))
            .filter(
                Condition::any()
                    .add(executions::Column::QueueRank.lt(row.queue_rank))
                    .add(
                        Condition::all()
                            .add(executions::Column::QueueRank.eq(row.queue_rank))
                            .add(executions::Column::ExecutionId.lt(row.execution_id.as_str())),
                    ),
            )
            .filter(ready(now))
            .filter(placeable_on(cluster))
            .order_by_asc(executions::Column::QueueRank)
            // A LIMIT is a signed 64-bit number on every database.
            .limit(std::cmp::min(enough - ahead, i64::MAX as u64))
            .into_tuple()
            .all(txn)
            .await?;
        ahead += found.len() as u64;
        if ahead >= enough {
            break;
        }
    }
    Ok(ahead)
}

/// A new job's place in the queue and its dependencies, on the row `track` builds. Every
/// parent must exist; a child whose parents have not all ended waits.
pub(super) fn register(
    changes: &mut Changes,
    request: &TrackRequest,
    row: &mut executions::Model,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<(), OpError> {
    for (parent, _) in &request.after {
        if parent == &request.execution_id {
            return Err(OpError::Dependency(format!(
                "job {parent:?} would wait for itself"
            )));
        }
        if !changes.ordering.parents.contains_key(parent) {
            return Err(OpError::Dependency(format!(
                "job {:?} waits for {parent:?}, which is not a known execution: submit the parent first",
                request.execution_id
            )));
        }
    }
    row.priority = request.priority;
    row.queue_rank = placement::queue_rank(now, request.priority, rules.aging);
    if let Some(allowed) = &request.allowed {
        row.allowed_clusters = Some(allowed_text(allowed));
        if let [only] = allowed.as_slice() {
            row.cluster.clone_from(only);
        }
    }
    for (parent, after) in &request.after {
        let ended = changes
            .ordering
            .parents
            .get(parent)
            .is_some_and(|s| s.is_terminal());
        changes.ordering.inserts.push(deps::ActiveModel {
            child_id: Set(request.execution_id.clone()),
            parent_id: Set(parent.clone()),
            mode: Set(after.as_str().to_owned()),
            state: Set(if ended { ENDED } else { WAITING }.to_owned()),
        });
    }
    Ok(())
}

/// A waiting child looks at its parents: it goes on waiting, joins the queue, or ends.
pub(super) fn release(
    changes: &mut Changes,
    execution_id: &str,
    at: DateTime<Utc>,
    rules: &Rules,
) -> Result<WriteOutcome, OpError> {
    let edges = changes
        .ordering
        .edges
        .get(execution_id)
        .cloned()
        .unwrap_or_default();
    let parents: Vec<Parent> = edges
        .iter()
        .map(|edge| Parent {
            id: edge.parent_id.clone(),
            after: After::from_stored(&edge.mode),
            status: changes.ordering.parents.get(&edge.parent_id).copied(),
        })
        .collect();
    let all: Vec<String> = edges.iter().map(|e| e.parent_id.clone()).collect();
    let Some(loaded) = changes
        .executions
        .get_mut(execution_id)
        .filter(|l| l.row.status == JobStatus::Waiting.as_str())
    else {
        // Decided already, cancelled by an operator, or its row deleted by retention since:
        // nothing to wake any more, and it is not offered again.
        changes
            .ordering
            .settles
            .push((execution_id.to_owned(), all));
        return Ok(WriteOutcome::Execution(Applied::Refreshed));
    };
    let mut state = rows::execution_state(&loaded.row)?;
    let (to, detail) = match dependency::settle(&parents) {
        Settlement::Wait => {
            let ended: Vec<String> = parents
                .iter()
                .filter(|p| p.status.is_some_and(|s| s.is_terminal()))
                .map(|p| p.id.clone())
                .collect();
            changes
                .ordering
                .settles
                .push((execution_id.to_owned(), ended));
            return Ok(WriteOutcome::Execution(Applied::Refreshed));
        }
        Settlement::Release { detail } => {
            state.status = JobStatus::Queued;
            state.status_changed_at = Some(at);
            loaded.row.next_attempt_at = Some(at);
            loaded.row.queue_rank = placement::queue_rank(at, loaded.row.priority, rules.aging);
            (JobStatus::Queued, detail)
        }
        Settlement::Cancel { reason, .. } => {
            if let Err(refusal) = state.force_finish(JobStatus::Cancelled, at, &reason) {
                return Ok(WriteOutcome::Execution(Applied::Refused(refusal)));
            }
            loaded.row.next_attempt_at = None;
            (JobStatus::Cancelled, reason)
        }
    };
    rows::store_execution_state(&mut loaded.row, &state);
    loaded.dirty = true;
    changes.history.push(history_row(
        SPARK,
        execution_id,
        &HistoryEntry {
            from: Some(JobStatus::Waiting),
            to,
            detail: Some(detail),
            at,
        },
        Source::Submitter,
    ));
    changes
        .ordering
        .settles
        .push((execution_id.to_owned(), all));
    Ok(WriteOutcome::Execution(Applied::Transitioned {
        from: JobStatus::Waiting,
        to,
    }))
}

/// Where the attempt about to begin goes: the cluster, and the history's note of why when
/// it was chosen among several. `NotNow` while there is no free place for it.
pub(super) fn place(
    changes: &Changes,
    execution_id: &str,
) -> Result<(Option<String>, Option<String>), OpError> {
    let Some(rooms) = changes.ordering.rooms.get(execution_id) else {
        return Err(OpError::NotNow(format!(
            "execution {execution_id} has no cluster to be placed on"
        )));
    };
    if rooms.is_empty() {
        return Err(OpError::NotNow(format!(
            "none of the clusters offered for execution {execution_id} is one it may run on"
        )));
    }
    match placement::place(rooms) {
        Placement::On { cluster, detail } => {
            let chosen = rooms.len() > 1;
            Ok((cluster, chosen.then_some(detail)))
        }
        Placement::Full { detail } => Err(OpError::NotNow(detail)),
    }
}

/// Writes the batch's dependency changes, and wakes the children of every job it ended;
/// `true` when it woke any.
pub(super) async fn write(
    txn: &DatabaseTransaction,
    ordering: Ordering,
    ended: Vec<String>,
) -> Result<bool, DbErr> {
    for chunk in ordering.inserts.chunks(CHUNK) {
        deps::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    for (child, parents) in ordering.settles {
        if parents.is_empty() {
            continue;
        }
        deps::Entity::update_many()
            .col_expr(deps::Column::State, Expr::value(SETTLED))
            .filter(deps::Column::ChildId.eq(child))
            .filter(deps::Column::ParentId.is_in(parents))
            .exec(txn)
            .await?;
    }
    let mut woke = false;
    for chunk in ended.chunks(CHUNK) {
        let result = deps::Entity::update_many()
            .col_expr(deps::Column::State, Expr::value(ENDED))
            .filter(deps::Column::ParentId.is_in(chunk.iter().map(String::as_str)))
            .exec(txn)
            .await?;
        woke |= result.rows_affected > 0;
    }
    Ok(woke)
}

/// The executions a batch's history ends.
pub(super) fn ended_by(history: &[entity::job_status_history::ActiveModel]) -> Vec<String> {
    history
        .iter()
        .filter(|row| row.job_kind.clone().unwrap() == SPARK)
        .filter(|row| {
            row.to_status
                .clone()
                .unwrap()
                .parse::<JobStatus>()
                .is_ok_and(|s| s.is_terminal())
        })
        .map(|row| row.job_id.clone().unwrap())
        .collect()
}
