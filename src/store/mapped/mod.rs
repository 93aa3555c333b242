//! Application tables jobwarden keeps true in place: their resolved columns (checked against the
//! database's catalogue at start), the status vocabulary, and the reads and writes of their
//! mapped columns. jobwarden's own bookkeeping for those rows stays in its own tables.

mod catalogue;
mod rows;
mod writes;

use sea_orm::sea_query::{Alias, Expr, Func, TableName};
use sea_orm::{DatabaseBackend, Value};

use crate::config::{effective_statuses, StatusValue};
use crate::domain::{JobStatus, Lifecycle, QueueStatus};

pub use catalogue::{check, describe, MappingError, MappingProblem};
pub use rows::{
    adoptable_executions, due_executions, load_executions, load_queue, queue_drift, AppExecution,
    AppQueueJob,
};
pub use writes::{execution_changes, queue_changes, write_rows};

/// Which tables are the application's. The default is jobwarden's own tables for both.
#[derive(Debug, Default)]
pub struct Mapping {
    pub executions: Option<ExecutionsMap>,
    pub queue: Option<QueueMap>,
}

/// How a column's values travel, decided from its declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Integer,
    Float,
    /// `zoned`: stores an instant (timestamptz, MySQL TIMESTAMP); otherwise a UTC wall time.
    Timestamp {
        zoned: bool,
    },
    /// `type_name` is PostgreSQL's (`json`, `jsonb`); elsewhere JSON travels as text.
    Json {
        type_name: &'static str,
    },
    /// A key of PostgreSQL's `uuid` or MariaDB's `UUID` type (an Entity Framework `Guid`): read
    /// as text, compared against a value cast to the column's type so its index is used.
    Uuid,
}

/// One mapped column as the database declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
    /// The declared type, for messages.
    pub declared: String,
    /// A text column's length limit, in characters.
    pub max_chars: Option<usize>,
}

/// Where an application table is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTable {
    pub schema: Option<String>,
    pub table: String,
    pub backend: DatabaseBackend,
}

impl AppTable {
    pub(crate) fn name(&self) -> TableName {
        match &self.schema {
            Some(schema) => TableName::from((Alias::new(schema), Alias::new(&self.table))),
            None => TableName::from(Alias::new(&self.table)),
        }
    }
}

impl std::fmt::Display for AppTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// How each status of one set is stored in a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary<S> {
    pairs: Vec<(S, StatusValue)>,
}

impl<S: Lifecycle + Copy + Eq> Vocabulary<S> {
    fn new(
        all: &[S],
        name: fn(S) -> &'static str,
        configured: &std::collections::BTreeMap<String, StatusValue>,
    ) -> Self {
        let names: Vec<&'static str> = all.iter().map(|s| name(*s)).collect();
        let pairs = effective_statuses(configured, &names)
            .filter_map(|(n, value)| all.iter().find(|s| name(**s) == n).map(|s| (*s, value)))
            .collect();
        Vocabulary { pairs }
    }

    pub fn encode(&self, status: S) -> &StatusValue {
        &self
            .pairs
            .iter()
            .find(|(s, _)| *s == status)
            .expect("a vocabulary covers every status (checked when the settings load)")
            .1
    }

    pub fn decode(&self, stored: &StatusValue) -> Option<S> {
        self.pairs
            .iter()
            .find(|(_, v)| v == stored)
            .map(|(s, _)| *s)
    }

    pub fn stored_values(&self) -> impl Iterator<Item = &StatusValue> {
        self.pairs.iter().map(|(_, v)| v)
    }

    /// The stored values of the unfinished statuses, ready to bind.
    pub(crate) fn unfinished(&self) -> Vec<Value> {
        self.pairs
            .iter()
            .filter(|(s, _)| !s.is_terminal())
            .map(|(_, v)| status_value(v))
            .collect()
    }
}

pub(crate) fn status_value(stored: &StatusValue) -> Value {
    match stored {
        StatusValue::Integer(n) => Value::BigInt(Some(*n)),
        StatusValue::Name(s) => Value::String(Some(s.clone())),
    }
}

/// A Spark executions table of the application's.
#[derive(Debug, Clone)]
pub struct ExecutionsMap {
    pub table: AppTable,
    pub execution_id: Column,
    pub submission_id: Column,
    pub status: Column,
    pub job_name: Option<Column>,
    pub cluster: Option<Column>,
    pub progress: Option<Column>,
    pub error_message: Option<Column>,
    pub submitted_at: Option<Column>,
    pub started_at: Option<Column>,
    pub completed_at: Option<Column>,
    pub vocabulary: Vocabulary<JobStatus>,
}

/// A transformation queue table of the application's.
#[derive(Debug, Clone)]
pub struct QueueMap {
    pub table: AppTable,
    pub job_id: Column,
    pub status: Column,
    pub error_message: Option<Column>,
    pub generated_fields: Option<Column>,
    pub completed_at: Option<Column>,
    pub vocabulary: Vocabulary<QueueStatus>,
}

/// A column read as the value type its kind travels as (integers as BIGINT, numbers as double,
/// JSON as text), so decoding never depends on the exact declared width.
pub(crate) fn read_expr(column: &Column, qualifier: &str, backend: DatabaseBackend) -> Expr {
    let col = Expr::col((Alias::new(qualifier), Alias::new(&column.name)));
    let cast = |to: &str| Expr::from(Func::cast_as(col.clone(), Alias::new(to)));
    match (column.kind, backend) {
        (Kind::Text | Kind::Timestamp { .. }, _) => col,
        (Kind::Integer, DatabaseBackend::Postgres) => cast("BIGINT"),
        (Kind::Integer, DatabaseBackend::MySql) => cast("SIGNED"),
        (Kind::Integer, _) => cast("INTEGER"),
        (Kind::Float, DatabaseBackend::Postgres) => cast("DOUBLE PRECISION"),
        (Kind::Float, DatabaseBackend::MySql) => cast("DOUBLE"),
        (Kind::Float, _) => cast("REAL"),
        (Kind::Json { .. }, DatabaseBackend::Postgres) => cast("TEXT"),
        (Kind::Json { .. }, DatabaseBackend::MySql) => cast("CHAR"),
        (Kind::Json { .. }, _) => col,
        (Kind::Uuid, DatabaseBackend::MySql) => cast("CHAR"),
        (Kind::Uuid, _) => cast("TEXT"),
    }
}

/// An id as compared against the id column: an integer for an integer column, a value cast to
/// `uuid` for a PostgreSQL uuid column; `None` for an id that column cannot hold (no row has it).
pub(crate) fn id_value(column: &Column, id: &str, backend: DatabaseBackend) -> Option<Expr> {
    match column.kind {
        Kind::Integer => id
            .parse::<i64>()
            .ok()
            .map(|n| Expr::val(Value::BigInt(Some(n)))),
        Kind::Uuid => {
            let id = uuid::Uuid::parse_str(id).ok()?.hyphenated().to_string();
            let text = Expr::val(Value::String(Some(id)));
            Some(match backend {
                DatabaseBackend::Postgres => Func::cast_as(text, Alias::new("uuid")).into(),
                // MariaDB compares its UUID type with the text form as it is.
                _ => text,
            })
        }
        _ => Some(Expr::val(Value::String(Some(id.to_owned())))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn configured(pairs: &[(&str, StatusValue)]) -> BTreeMap<String, StatusValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn integer_statuses_round_trip() {
        let ints: Vec<(&str, StatusValue)> = JobStatus::WATCHED
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), StatusValue::Integer(i as i64)))
            .collect();
        let vocabulary =
            Vocabulary::new(&JobStatus::WATCHED, JobStatus::as_str, &configured(&ints));
        for status in JobStatus::WATCHED {
            assert_eq!(vocabulary.decode(vocabulary.encode(status)), Some(status));
        }
        assert_eq!(
            vocabulary.decode(&StatusValue::Integer(2)),
            Some(JobStatus::Running)
        );
        assert_eq!(vocabulary.decode(&StatusValue::Integer(99)), None);
    }

    #[test]
    fn unnamed_statuses_keep_their_own_names() {
        let vocabulary = Vocabulary::new(
            &QueueStatus::ALL,
            QueueStatus::as_str,
            &configured(&[("Processing", StatusValue::Name("InProgress".into()))]),
        );
        assert_eq!(
            vocabulary.encode(QueueStatus::Processing),
            &StatusValue::Name("InProgress".into())
        );
        assert_eq!(
            vocabulary.decode(&StatusValue::Name("Completed".into())),
            Some(QueueStatus::Completed)
        );
        assert_eq!(
            vocabulary.decode(&StatusValue::Name("Processing".into())),
            None,
            "the renamed status is only known by its new name"
        );
    }

    #[test]
    fn only_unfinished_statuses_are_due() {
        let vocabulary = Vocabulary::new(&JobStatus::WATCHED, JobStatus::as_str, &BTreeMap::new());
        let unfinished: Vec<Value> = vocabulary.unfinished();
        assert_eq!(
            unfinished,
            ["Queued", "Submitting", "Running"]
                .map(|s| Value::String(Some(s.to_owned())))
                .to_vec()
        );
    }
}
