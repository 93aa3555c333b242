//! Read queries for the dashboard: job listings that stay cheap at any fleet size (keyset
//! pages over existing indexes, never OFFSET or a count over a table), recent durations for
//! ETAs, per-cluster last answers, a job's latest attempts and dead-letter previews.
//!
//! "Last change" is a job's latest status transition: `job_status_history` is walked newest
//! first along its primary key, keeping for each job only its latest row (an index probe into
//! `(job_kind, job_id, id)`). No time column of the job tables is indexed, so ordering those
//! by time would read and sort the whole table; the walk reads what the page shows, and a page
//! whose filter matches rarely reads at most [`WALK_BUDGET`] history rows before it stops and
//! offers to search further back.

use chrono::{DateTime, Utc};
use entity::{
    dead_letters, job_status_history as history, spark_job_attempts as attempts,
    spark_job_executions as executions, transformation_job_queue as queue,
};
use sea_orm::sea_query::{Alias, Condition, Expr, ExprTrait, Func, JoinType, Order, Query};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, FromQueryResult, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};

use crate::domain::JobStatus;

/// Rows on one page.
pub const PAGE: u64 = 50;
/// History rows one page of "last change" may read at most, whatever its filter matches.
pub const WALK_BUDGET: i64 = 20_000;
/// Successful runs the ETA figures are drawn from: the most recent ones, across all names.
pub const RECENT_SUCCESSES: u64 = 5_000;
/// How much of a dead letter's key and payload a listing reads.
pub const PREVIEW_BYTES: i64 = 1_024;
/// Attempts one job's page shows at most: a job's own retry policy may allow any number.
pub const MAX_ATTEMPTS_SHOWN: u64 = 100;

const SPARK: &str = "spark";
const QUEUE: &str = "queue";

/// Which table a job lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Spark,
    Queue,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Spark => SPARK,
            Kind::Queue => QUEUE,
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            SPARK => Some(Kind::Spark),
            QUEUE => Some(Kind::Queue),
            _ => None,
        }
    }
}

/// The jobs a listing keeps. Cluster and name exist on Spark executions only, so either one
/// leaves queue jobs out.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub kind: Option<Kind>,
    /// A status name of either kind (`Failed` and `Cancelled` exist in both).
    pub status: Option<String>,
    /// `Some(None)` is the default cluster (a NULL `cluster`).
    pub cluster: Option<Option<String>>,
    /// Part of the job name, any case.
    pub name: Option<String>,
}

impl JobFilter {
    fn spark_only(&self) -> bool {
        self.kind == Some(Kind::Spark) || self.cluster.is_some() || self.name.is_some()
    }

    fn wants(&self, kind: Kind) -> bool {
        match kind {
            Kind::Spark => self.kind != Some(Kind::Queue),
            Kind::Queue => self.kind != Some(Kind::Spark) && !self.spark_only(),
        }
    }
}

/// One job of a listing, with the transition that placed it there when listed by last change.
#[derive(Debug, Clone)]
pub enum JobRow {
    Spark(executions::Model),
    Queue(queue::Model),
}

impl JobRow {
    pub fn kind(&self) -> Kind {
        match self {
            JobRow::Spark(_) => Kind::Spark,
            JobRow::Queue(_) => Kind::Queue,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            JobRow::Spark(r) => &r.execution_id,
            JobRow::Queue(r) => &r.job_id,
        }
    }
}

/// A page of jobs by last change, newest first.
#[derive(Debug, Clone, Default)]
pub struct ChangedPage {
    /// Each job with the time of its latest transition.
    pub jobs: Vec<(JobRow, DateTime<Utc>)>,
    /// Pass back as `before` for the next page.
    pub next_before: Option<i64>,
    /// The walk's budget ran out here before the page filled: pass back as `before` to search
    /// older changes.
    pub searched_to: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct Change {
    id: i64,
    job_kind: String,
    job_id: String,
    at: DateTime<Utc>,
}

/// Jobs by their latest transition, newest first, strictly before history row `before` (the
/// newest when `None`). Reads at most [`WALK_BUDGET`] history rows.
pub async fn jobs_by_last_change(
    db: &DatabaseConnection,
    filter: &JobFilter,
    before: Option<i64>,
) -> Result<ChangedPage, DbErr> {
    let before = match before {
        Some(id) => id,
        None => match newest_change(db).await? {
            Some(id) => id + 1,
            None => return Ok(ChangedPage::default()),
        },
    };
    let floor = std::cmp::max(before.saturating_sub(WALK_BUDGET), 0);
    let (h, n, e, q) = (
        Alias::new("h"),
        Alias::new("n"),
        Alias::new("e"),
        Alias::new("q"),
    );
    let newer = Query::select()
        .expr(Expr::val(1))
        .from_as(history::Entity, n.clone())
        .and_where(
            Expr::col((n.clone(), history::Column::JobKind))
                .equals((h.clone(), history::Column::JobKind)),
        )
        .and_where(
            Expr::col((n.clone(), history::Column::JobId))
                .equals((h.clone(), history::Column::JobId)),
        )
        .and_where(
            Expr::col((n.clone(), history::Column::Id))
                .gt(Expr::col((h.clone(), history::Column::Id))),
        )
        .to_owned();
    let mut select = Query::select();
    select
        .column((h.clone(), history::Column::Id))
        .column((h.clone(), history::Column::JobKind))
        .column((h.clone(), history::Column::JobId))
        .column((h.clone(), history::Column::At))
        .from_as(history::Entity, h.clone())
        .and_where(Expr::col((h.clone(), history::Column::Id)).lt(before))
        .and_where(Expr::col((h.clone(), history::Column::Id)).gte(floor))
        .and_where(Expr::not_exists(newer));
    let (spark, queue_too) = (filter.wants(Kind::Spark), filter.wants(Kind::Queue));
    if !spark && !queue_too {
        // Queue jobs asked for by name or cluster, which only executions have: none match.
        return Ok(ChangedPage::default());
    }
    let mut present = Condition::any();
    let mut status = Condition::any();
    if spark {
        select.join_as(
            JoinType::LeftJoin,
            executions::Entity,
            e.clone(),
            Condition::all()
                .add(Expr::col((h.clone(), history::Column::JobKind)).eq(SPARK))
                .add(
                    Expr::col((e.clone(), executions::Column::ExecutionId))
                        .equals((h.clone(), history::Column::JobId)),
                ),
        );
        present =
            present.add(Expr::col((e.clone(), executions::Column::ExecutionId)).is_not_null());
        if let Some(wanted) = &filter.status {
            status =
                status.add(Expr::col((e.clone(), executions::Column::Status)).eq(wanted.as_str()));
        }
        if let Some(cluster) = &filter.cluster {
            select.and_where(match cluster {
                None => Expr::col((e.clone(), executions::Column::Cluster)).is_null(),
                Some(name) => Expr::col((e.clone(), executions::Column::Cluster)).eq(name.as_str()),
            });
        }
        if let Some(name) = &filter.name {
            select.and_where(
                Func::lower(Expr::col((e.clone(), executions::Column::JobName)))
                    .like(contains_pattern(name)),
            );
        }
    }
    if queue_too {
        select.join_as(
            JoinType::LeftJoin,
            queue::Entity,
            q.clone(),
            Condition::all()
                .add(Expr::col((h.clone(), history::Column::JobKind)).eq(QUEUE))
                .add(
                    Expr::col((q.clone(), queue::Column::JobId))
                        .equals((h.clone(), history::Column::JobId)),
                ),
        );
        present = present.add(Expr::col((q.clone(), queue::Column::JobId)).is_not_null());
        if let Some(wanted) = &filter.status {
            status = status.add(Expr::col((q.clone(), queue::Column::Status)).eq(wanted.as_str()));
        }
    }
    // A job whose row is gone (an application deleted it) has history but nothing to show.
    select.cond_where(present);
    if filter.status.is_some() {
        select.cond_where(status);
    }
    select
        .order_by((h.clone(), history::Column::Id), Order::Desc)
        .limit(PAGE + 1);
    let changes = Change::find_by_statement(db.get_database_backend().build(&select))
        .all(db)
        .await?;

    let more = changes.len() as u64 > PAGE;
    let changes: Vec<Change> = changes.into_iter().take(PAGE as usize).collect();
    let ids = |kind: &str| -> Vec<String> {
        changes
            .iter()
            .filter(|c| c.job_kind == kind)
            .map(|c| c.job_id.clone())
            .collect()
    };
    let (spark_ids, queue_ids) = (ids(SPARK), ids(QUEUE));
    let spark_rows = if spark_ids.is_empty() {
        Vec::new()
    } else {
        executions::Entity::find()
            .filter(executions::Column::ExecutionId.is_in(spark_ids))
            .all(db)
            .await?
    };
    let queue_rows = if queue_ids.is_empty() {
        Vec::new()
    } else {
        queue::Entity::find()
            .filter(queue::Column::JobId.is_in(queue_ids))
            .all(db)
            .await?
    };
    let mut jobs = Vec::with_capacity(changes.len());
    for change in &changes {
        let row = match change.job_kind.as_str() {
            SPARK => spark_rows
                .iter()
                .find(|r| r.execution_id == change.job_id)
                .cloned()
                .map(JobRow::Spark),
            _ => queue_rows
                .iter()
                .find(|r| r.job_id == change.job_id)
                .cloned()
                .map(JobRow::Queue),
        };
        // Deleted between the two reads: skipped, like one deleted before them.
        if let Some(row) = row {
            jobs.push((row, change.at));
        }
    }
    let next_before = more.then(|| changes.last().map(|c| c.id)).flatten();
    let searched_to = (!more && floor > 0).then_some(floor);
    Ok(ChangedPage {
        jobs,
        next_before,
        searched_to,
    })
}

async fn newest_change(db: &DatabaseConnection) -> Result<Option<i64>, DbErr> {
    history::Entity::find()
        .select_only()
        .column(history::Column::Id)
        .order_by_desc(history::Column::Id)
        .limit(1)
        .into_tuple::<i64>()
        .one(db)
        .await
}

/// `%text%` for `LIKE`, lower-cased (compared with `LOWER(column)`, so any case matches on
/// every database), with the pattern characters in `text` taken literally.
fn contains_pattern(text: &str) -> sea_orm::sea_query::LikeExpr {
    let mut pattern = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    sea_orm::sea_query::LikeExpr::new(pattern).escape('\\')
}

/// A page of Spark executions by id after `after` (exclusive): the API's order.
pub async fn executions_by_id(
    db: &DatabaseConnection,
    filter: &JobFilter,
    after: Option<&str>,
) -> Result<(Vec<executions::Model>, Option<String>), DbErr> {
    let mut query = executions::Entity::find();
    if let Some(status) = &filter.status {
        query = query.filter(executions::Column::Status.eq(status.as_str()));
    }
    if let Some(cluster) = &filter.cluster {
        query = query.filter(match cluster {
            None => executions::Column::Cluster.is_null(),
            Some(name) => executions::Column::Cluster.eq(name.as_str()),
        });
    }
    if let Some(name) = &filter.name {
        query = query.filter(
            Func::lower(Expr::col(executions::Column::JobName)).like(contains_pattern(name)),
        );
    }
    if let Some(after) = after {
        query = query.filter(executions::Column::ExecutionId.gt(after));
    }
    let mut rows = query
        .order_by_asc(executions::Column::ExecutionId)
        .limit(PAGE + 1)
        .all(db)
        .await?;
    let next = next_cursor(&mut rows, |r| r.execution_id.clone());
    Ok((rows, next))
}

/// A page of queue jobs by id after `after` (exclusive).
pub async fn queue_jobs_by_id(
    db: &DatabaseConnection,
    status: Option<&str>,
    after: Option<&str>,
) -> Result<(Vec<queue::Model>, Option<String>), DbErr> {
    let mut query = queue::Entity::find();
    if let Some(status) = status {
        query = query.filter(queue::Column::Status.eq(status));
    }
    if let Some(after) = after {
        query = query.filter(queue::Column::JobId.gt(after));
    }
    let mut rows = query
        .order_by_asc(queue::Column::JobId)
        .limit(PAGE + 1)
        .all(db)
        .await?;
    let next = next_cursor(&mut rows, |r| r.job_id.clone());
    Ok((rows, next))
}

fn next_cursor<T>(rows: &mut Vec<T>, key: impl Fn(&T) -> String) -> Option<String> {
    if rows.len() as u64 > PAGE {
        rows.truncate(PAGE as usize);
        rows.last().map(key)
    } else {
        None
    }
}

/// Jobs of either kind whose id starts with `prefix` (a range over each primary key), exact
/// matches first, at most one page.
pub async fn jobs_with_id_prefix(
    db: &DatabaseConnection,
    prefix: &str,
) -> Result<Vec<JobRow>, DbErr> {
    let upper = prefix_upper_bound(prefix);
    let mut spark = executions::Entity::find().filter(executions::Column::ExecutionId.gte(prefix));
    if let Some(upper) = &upper {
        spark = spark.filter(executions::Column::ExecutionId.lt(upper.as_str()));
    }
    let spark = spark
        .order_by_asc(executions::Column::ExecutionId)
        .limit(PAGE)
        .all(db)
        .await?;
    let mut queued = queue::Entity::find().filter(queue::Column::JobId.gte(prefix));
    if let Some(upper) = &upper {
        queued = queued.filter(queue::Column::JobId.lt(upper.as_str()));
    }
    let queued = queued
        .order_by_asc(queue::Column::JobId)
        .limit(PAGE)
        .all(db)
        .await?;
    let mut rows: Vec<JobRow> = spark
        .into_iter()
        .map(JobRow::Spark)
        .chain(queued.into_iter().map(JobRow::Queue))
        // A collation that orders linguistically may let a neighbour into the range.
        .filter(|r| r.id().starts_with(prefix))
        .collect();
    rows.sort_by_key(|r| (r.id() != prefix, r.id().to_owned()));
    rows.truncate(PAGE as usize);
    Ok(rows)
}

/// The smallest string above every string starting with `prefix`, if there is one.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `(job_name, started_at, completed_at)` of the most recent successful executions, newest
/// first: an ordered walk of the `(status, last_polled_at)` index that stops after
/// [`RECENT_SUCCESSES`] rows.
pub async fn recent_successes(
    db: &DatabaseConnection,
) -> Result<Vec<(String, DateTime<Utc>, DateTime<Utc>)>, DbErr> {
    type Sample = (Option<String>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let rows: Vec<Sample> = executions::Entity::find()
        .select_only()
        .column(executions::Column::JobName)
        .column(executions::Column::StartedAt)
        .column(executions::Column::CompletedAt)
        .filter(executions::Column::Status.eq(JobStatus::Succeeded.as_str()))
        .order_by_desc(executions::Column::LastPolledAt)
        .limit(RECENT_SUCCESSES)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(name, started, completed)| Some((name?, started?, completed?)))
        .collect())
}

/// For each cluster with unfinished executions (`None` is the default cluster): the latest
/// time Spark's answer about one of them changed its row. Reads the unfinished jobs only.
pub async fn last_answer_per_cluster(
    db: &DatabaseConnection,
) -> Result<Vec<(Option<String>, Option<DateTime<Utc>>)>, DbErr> {
    executions::Entity::find()
        .select_only()
        .column(executions::Column::Cluster)
        .column_as(
            Expr::col(executions::Column::LastConfirmedAt).max(),
            "last_confirmed_at",
        )
        .filter(
            executions::Column::Status.is_in(JobStatus::NON_TERMINAL.iter().map(|s| s.as_str())),
        )
        .group_by(executions::Column::Cluster)
        .into_tuple()
        .all(db)
        .await
}

/// The latest attempts of one execution (at most [`MAX_ATTEMPTS_SHOWN`]), oldest first, and
/// how many it has in all. Both read the `(execution_id, attempt)` index, whatever the count.
pub async fn latest_attempts(
    db: &DatabaseConnection,
    execution_id: &str,
) -> Result<(Vec<attempts::Model>, u64), DbErr> {
    let mut rows = attempts::Entity::find()
        .filter(attempts::Column::ExecutionId.eq(execution_id))
        .order_by_desc(attempts::Column::Attempt)
        .limit(MAX_ATTEMPTS_SHOWN + 1)
        .all(db)
        .await?;
    // Counted only when there are more than a page shows: the usual job needs one query.
    let total = if rows.len() as u64 > MAX_ATTEMPTS_SHOWN {
        rows.truncate(MAX_ATTEMPTS_SHOWN as usize);
        attempts::Entity::find()
            .filter(attempts::Column::ExecutionId.eq(execution_id))
            .count(db)
            .await?
    } else {
        rows.len() as u64
    };
    rows.reverse();
    Ok((rows, total))
}

/// A dead letter as a listing shows it: the start of its key and payload only.
#[derive(Debug, Clone, FromQueryResult)]
pub struct DeadLetterPreview {
    pub id: i64,
    pub source: String,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<Vec<u8>>,
    /// The first [`PREVIEW_BYTES`] + 1 bytes: one more than shown says there is more.
    pub payload: Vec<u8>,
    pub error: String,
    pub received_at: DateTime<Utc>,
}

/// Dead letters newest first, strictly before id `before`; the next page's `before`.
pub async fn dead_letters(
    db: &DatabaseConnection,
    before: Option<i64>,
) -> Result<(Vec<DeadLetterPreview>, Option<i64>), DbErr> {
    let head = |column: dead_letters::Column, bytes: i64| {
        Expr::from(
            Func::cust(Alias::new("SUBSTR"))
                .arg(Expr::col(column))
                // PostgreSQL has substr(bytea, integer, integer) only: no bigint arguments.
                .arg(1i32)
                .arg(bytes as i32),
        )
    };
    let mut query = dead_letters::Entity::find()
        .select_only()
        .column(dead_letters::Column::Id)
        .column(dead_letters::Column::Source)
        .column(dead_letters::Column::Topic)
        .column(dead_letters::Column::Partition)
        .column(dead_letters::Column::Offset)
        .column_as(head(dead_letters::Column::Key, PREVIEW_BYTES), "key")
        .column_as(
            head(dead_letters::Column::Payload, PREVIEW_BYTES + 1),
            "payload",
        )
        .column(dead_letters::Column::Error)
        .column(dead_letters::Column::ReceivedAt);
    if let Some(before) = before {
        query = query.filter(dead_letters::Column::Id.lt(before));
    }
    let mut rows = query
        .order_by_desc(dead_letters::Column::Id)
        .limit(PAGE + 1)
        .into_model::<DeadLetterPreview>()
        .all(db)
        .await?;
    let next = if rows.len() as u64 > PAGE {
        rows.truncate(PAGE as usize);
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok((rows, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upper_bound_of_a_prefix_is_above_every_string_starting_with_it() {
        assert_eq!(prefix_upper_bound("exec-1").as_deref(), Some("exec-2"));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
    }

    #[test]
    fn pattern_characters_in_a_name_filter_are_taken_literally() {
        let like = contains_pattern("50%_A\\b");
        let rendered = format!("{like:?}");
        assert!(rendered.contains(r"%50\\%\\_a\\\\b%"), "{rendered}");
    }
}
