//! Reading and writing the mapped columns of application rows: a batch loads them (locked) with
//! jobwarden's own rows, and writes back only the columns whose value changed.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use entity::spark_job_executions as own;
use entity::transformation_job_queue as own_queue;
use sea_orm::sea_query::{
    Alias, Condition, Expr, ExprTrait, Func, JoinType, LockType, Query, SelectStatement,
};
use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, QueryResult, Value};

use super::{id_value, read_expr, status_value, Column, ExecutionsMap, Kind, QueueMap};
use crate::config::StatusValue;
use crate::domain::{JobStatus, QueueStatus};
use crate::store_api::{DueJobs, DuePage};

const APP: &str = "a";
const OWN: &str = "b";

/// The mapped fields of one application execution row. Unmapped fields stay `None` and are
/// never written.
#[derive(Debug, Clone, PartialEq)]
pub struct AppExecution {
    pub submission_id: Option<String>,
    pub status: Option<StatusValue>,
    pub job_name: Option<String>,
    pub cluster: Option<String>,
    pub progress: Option<f64>,
    pub error_message: Option<String>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The mapped fields of one application queue row.
#[derive(Debug, Clone, PartialEq)]
pub struct AppQueueJob {
    pub status: Option<StatusValue>,
    pub error_message: Option<String>,
    pub generated_fields: Option<serde_json::Value>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The id as text, whatever the key's type, so it can meet jobwarden's own text keys.
fn id_text(column: &Column, qualifier: &str, backend: DatabaseBackend) -> Expr {
    let col = Expr::col((Alias::new(qualifier), Alias::new(&column.name)));
    match (column.kind, backend) {
        (Kind::Text, _) => col,
        (_, DatabaseBackend::MySql) => Func::cast_as(col, Alias::new("CHAR")).into(),
        _ => Func::cast_as(col, Alias::new("TEXT")).into(),
    }
}

fn own_key() -> Expr {
    Expr::col((Alias::new(OWN), own::Column::ExecutionId))
}

/// Columns added to a select one by one, remembering where each landed.
struct Selection<'q> {
    query: &'q mut SelectStatement,
    backend: DatabaseBackend,
    next: usize,
}

impl Selection<'_> {
    fn add(&mut self, column: Option<&Column>) -> Option<(usize, Column)> {
        let column = column?;
        self.query.expr(read_expr(column, APP, self.backend));
        self.next += 1;
        Some((self.next - 1, column.clone()))
    }
}

fn get_text(row: &QueryResult, at: &Option<(usize, Column)>) -> Result<Option<String>, DbErr> {
    match at {
        Some((i, _)) => row.try_get_by_index(*i),
        None => Ok(None),
    }
}

fn get_status(row: &QueryResult, at: &(usize, Column)) -> Result<Option<StatusValue>, DbErr> {
    let (i, column) = at;
    Ok(match column.kind {
        Kind::Integer => row
            .try_get_by_index::<Option<i64>>(*i)?
            .map(StatusValue::Integer),
        _ => row
            .try_get_by_index::<Option<String>>(*i)?
            .map(StatusValue::Name),
    })
}

/// A number as its kind travels (see `read_expr`): an integer column's value comes back as a
/// 64-bit integer, whatever width the application declared, and is widened here.
fn get_number(row: &QueryResult, at: &Option<(usize, Column)>) -> Result<Option<f64>, DbErr> {
    match at {
        Some((i, column)) if column.kind == Kind::Integer => {
            Ok(row.try_get_by_index::<Option<i64>>(*i)?.map(|n| n as f64))
        }
        Some((i, _)) => row.try_get_by_index(*i),
        None => Ok(None),
    }
}

fn get_time(
    row: &QueryResult,
    at: &Option<(usize, Column)>,
    backend: DatabaseBackend,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    let Some((i, column)) = at else {
        return Ok(None);
    };
    match (backend, column.kind) {
        (DatabaseBackend::Sqlite, _) | (_, Kind::Timestamp { zoned: true }) => {
            row.try_get_by_index(*i)
        }
        _ => Ok(row
            .try_get_by_index::<Option<NaiveDateTime>>(*i)?
            .map(|t| t.and_utc())),
    }
}

fn get_json(
    row: &QueryResult,
    at: &Option<(usize, Column)>,
) -> Result<Option<serde_json::Value>, DbErr> {
    let text = get_text(row, at)?;
    // Text that is not JSON is still the application's value: kept as a JSON string.
    Ok(text.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t))))
}

fn in_ids(column: &Column, ids: &[&str], backend: DatabaseBackend) -> Expr {
    let values: Vec<Expr> = ids
        .iter()
        .filter_map(|id| id_value(column, id, backend))
        .collect();
    Expr::col((Alias::new(APP), Alias::new(&column.name))).is_in(values)
}

/// A select of the application rows with these ids, their id as text first, locked for the
/// transaction where the backend locks rows; callers add the columns they read.
fn locked_rows(
    table: &super::AppTable,
    key: &Column,
    ids: &[&str],
    backend: DatabaseBackend,
) -> SelectStatement {
    let mut query = Query::select();
    query
        .expr(id_text(key, APP, backend))
        .from_as(table.name(), Alias::new(APP))
        .and_where(in_ids(key, ids, backend));
    if backend != DatabaseBackend::Sqlite {
        query.lock(LockType::Update);
    }
    query
}

/// The application rows with these ids, locked for the transaction where the backend locks
/// rows.
pub async fn load_executions(
    txn: &impl ConnectionTrait,
    map: &ExecutionsMap,
    ids: &[&str],
) -> Result<HashMap<String, AppExecution>, DbErr> {
    let backend = txn.get_database_backend();
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut query = locked_rows(&map.table, &map.execution_id, chunk, backend);
        let mut s = Selection {
            query: &mut query,
            backend,
            next: 1,
        };
        let submission = s.add(Some(&map.submission_id));
        let status = s.add(Some(&map.status)).expect("status is always mapped");
        let job_name = s.add(map.job_name.as_ref());
        let cluster = s.add(map.cluster.as_ref());
        let progress = s.add(map.progress.as_ref());
        let error = s.add(map.error_message.as_ref());
        let submitted = s.add(map.submitted_at.as_ref());
        let started = s.add(map.started_at.as_ref());
        let completed = s.add(map.completed_at.as_ref());
        for row in txn.query_all(&query).await? {
            let id: String = row.try_get_by_index(0)?;
            let found = AppExecution {
                submission_id: get_text(&row, &submission)?,
                status: get_status(&row, &status)?,
                job_name: get_text(&row, &job_name)?,
                cluster: get_text(&row, &cluster)?,
                progress: get_number(&row, &progress)?,
                error_message: get_text(&row, &error)?,
                submitted_at: get_time(&row, &submitted, backend)?,
                started_at: get_time(&row, &started, backend)?,
                completed_at: get_time(&row, &completed, backend)?,
            };
            out.insert(id, found);
        }
    }
    Ok(out)
}

/// The application queue rows with these ids, locked like [`load_executions`].
pub async fn load_queue(
    txn: &impl ConnectionTrait,
    map: &QueueMap,
    ids: &[&str],
) -> Result<HashMap<String, AppQueueJob>, DbErr> {
    let backend = txn.get_database_backend();
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut query = locked_rows(&map.table, &map.job_id, chunk, backend);
        let mut s = Selection {
            query: &mut query,
            backend,
            next: 1,
        };
        let status = s.add(Some(&map.status)).expect("status is always mapped");
        let error = s.add(map.error_message.as_ref());
        let fields = s.add(map.generated_fields.as_ref());
        let completed = s.add(map.completed_at.as_ref());
        for row in txn.query_all(&query).await? {
            let id: String = row.try_get_by_index(0)?;
            let found = AppQueueJob {
                status: get_status(&row, &status)?,
                error_message: get_text(&row, &error)?,
                generated_fields: get_json(&row, &fields)?,
                completed_at: get_time(&row, &completed, backend)?,
            };
            out.insert(id, found);
        }
    }
    Ok(out)
}

/// The application's rows joined with jobwarden's bookkeeping for them.
fn joined(map: &ExecutionsMap, backend: DatabaseBackend, join: JoinType) -> SelectStatement {
    let mut query = Query::select();
    query.from_as(map.table.name(), Alias::new(APP)).join_as(
        join,
        own::Entity,
        Alias::new(OWN),
        Condition::all().add(id_text(&map.execution_id, APP, backend).eq(own_key())),
    );
    query
}

fn app_status(map: &ExecutionsMap) -> Expr {
    Expr::col((Alias::new(APP), Alias::new(&map.status.name)))
}

/// A page of due jobs on a mapped table: the page is read from jobwarden's own copy (keyset
/// by id on its own index, so a page costs the same whatever the fleet), then each row is
/// looked up in the application's table by key, which has the last word on whether it is
/// unfinished and what its submission id is. The copy is kept in step by
/// [`adoptable_executions`] at the start of every cycle.
pub async fn due_executions(
    db: &sea_orm::DatabaseConnection,
    map: &ExecutionsMap,
    page: &DueJobs,
) -> Result<DuePage, DbErr> {
    let copies = crate::store::read::due_executions(db, page).await?;
    let last = copies.last().map(|j| j.execution_id.clone());
    let full = copies.len() as u64 >= page.limit;
    let backend = db.get_database_backend();
    let ids: Vec<&str> = copies.iter().map(|j| j.execution_id.as_str()).collect();
    let mut current: HashMap<String, String> = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut query = Query::select();
        query
            .expr(id_text(&map.execution_id, APP, backend))
            .expr(read_expr(&map.submission_id, APP, backend))
            .from_as(map.table.name(), Alias::new(APP))
            .and_where(in_ids(&map.execution_id, chunk, backend))
            .and_where(app_status(map).is_in(map.vocabulary.unfinished()));
        for row in db.query_all(&query).await? {
            let id: String = row.try_get_by_index(0)?;
            let submission: Option<String> = row.try_get_by_index(1)?;
            if let Some(submission) = submission.filter(|s| !s.trim().is_empty()) {
                current.insert(id, submission);
            }
        }
    }
    let jobs = copies
        .into_iter()
        .filter_map(|mut job| {
            job.submission_id = current.remove(&job.execution_id)?;
            // The store's rules start from the application's row, which the copy may not
            // match (the application writes its own statuses): every answer goes to the store.
            job.seen = None;
            Some(job)
        })
        .collect();
    Ok(DuePage { jobs, last, full })
}

/// Application rows whose bookkeeping must catch up with them: unfinished rows jobwarden has
/// none for yet (the application inserted them since the last look), and rows whose copy no
/// longer agrees with the application's row on what decides polling — finished or not (the
/// application cancelled a job, or started one again), and the submission id (set once the
/// application has submitted). Each is brought in step by one write at the cycle's start.
pub async fn adoptable_executions(
    db: &impl ConnectionTrait,
    map: &ExecutionsMap,
    limit: u64,
) -> Result<Vec<String>, DbErr> {
    let backend = db.get_database_backend();
    let mut inserted = joined(map, backend, JoinType::LeftJoin);
    inserted
        .expr(id_text(&map.execution_id, APP, backend))
        .and_where(app_status(map).is_in(map.vocabulary.unfinished()))
        .and_where(own_key().is_null())
        .limit(limit);
    let unfinished_copy = JobStatus::NON_TERMINAL.map(|s| s.as_str());
    let own_col = |c: own::Column| Expr::col((Alias::new(OWN), c));
    let app_submission = Expr::col((Alias::new(APP), Alias::new(&map.submission_id.name)));
    let mut drifted = joined(map, backend, JoinType::InnerJoin);
    drifted
        .expr(own_key())
        .cond_where(
            Condition::any()
                .add(
                    Condition::all()
                        .add(app_status(map).is_not_in(map.vocabulary.unfinished()))
                        .add(own_col(own::Column::Status).is_in(unfinished_copy)),
                )
                .add(
                    Condition::all()
                        .add(app_status(map).is_in(map.vocabulary.unfinished()))
                        .add(own_col(own::Column::Status).is_not_in(unfinished_copy)),
                )
                .add(
                    Condition::all()
                        .add(app_submission.clone().is_not_null())
                        .add(own_col(own::Column::SubmissionId).is_null()),
                )
                .add(app_submission.ne(own_col(own::Column::SubmissionId))),
        )
        .limit(limit);
    let mut out = Vec::new();
    for query in [inserted, drifted] {
        for row in db.query_all(&query).await? {
            out.push(row.try_get_by_index(0)?);
        }
    }
    Ok(out)
}

/// Mapped queue rows whose status differs from jobwarden's copy of them: an event applied
/// before the application inserted its row, or a status the application set itself.
pub async fn queue_drift(
    db: &impl ConnectionTrait,
    map: &QueueMap,
    limit: u64,
) -> Result<Vec<String>, DbErr> {
    let backend = db.get_database_backend();
    let own_key = Expr::col((Alias::new(OWN), own_queue::Column::JobId));
    let own_status = Expr::col((Alias::new(OWN), own_queue::Column::Status));
    // jobwarden's status name, spelled as the application's column stores it.
    let mut spelled = Expr::case(
        own_status.clone().eq(QueueStatus::ALL[0].as_str()),
        status_value(map.vocabulary.encode(QueueStatus::ALL[0])),
    );
    for status in &QueueStatus::ALL[1..] {
        spelled = spelled.case(
            own_status.clone().eq(status.as_str()),
            status_value(map.vocabulary.encode(*status)),
        );
    }
    let mut query = Query::select();
    query
        .expr(own_key.clone())
        .from_as(map.table.name(), Alias::new(APP))
        .join_as(
            JoinType::InnerJoin,
            own_queue::Entity,
            Alias::new(OWN),
            Condition::all().add(id_text(&map.job_id, APP, backend).eq(own_key)),
        )
        .and_where(own_status.ne(""))
        .and_where(
            Expr::col((Alias::new(APP), Alias::new(&map.status.name)))
                .ne(Expr::Case(Box::new(spelled.finally(Value::String(None))))),
        )
        .limit(limit);
    let mut out = Vec::new();
    for row in db.query_all(&query).await? {
        out.push(row.try_get_by_index(0)?);
    }
    Ok(out)
}
