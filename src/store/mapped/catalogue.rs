//! The start-up check of a mapping: every mapped table and column is looked up in the
//! database's own catalogue, and each must hold what jobwarden will write there.

use std::collections::BTreeMap;
use std::fmt;

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, Statement, Value};

use super::{AppTable, Column, ExecutionsMap, Kind, Mapping, QueueMap, Vocabulary};
use crate::config::{ColumnList, MappedTable, StatusValue, TablesSettings};
use crate::domain::{JobStatus, QueueStatus};

/// One reason a mapping cannot work, naming the setting, the table and column, and what was
/// expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingProblem {
    pub key: String,
    pub table: String,
    pub column: Option<String>,
    pub problem: String,
}

impl fmt::Display for MappingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(
                f,
                "  {}: column {:?} of table {}: {}",
                self.key, column, self.table, self.problem
            ),
            None => write!(f, "  {}: table {}: {}", self.key, self.table, self.problem),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("the mapped tables do not fit their [tables] settings:\n{}", list(.0))]
    Mismatch(Vec<MappingProblem>),
    #[error("cannot read the database catalogue to check the mapped tables: {0}")]
    Catalogue(#[from] DbErr),
}

fn list(problems: &[MappingProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A column as the catalogue declares it.
#[derive(Debug, Clone)]
struct Declared {
    data_type: String,
    max_chars: Option<usize>,
}

/// Looks every mapped table and column up and resolves the mapping, or says all that is wrong.
pub async fn check(
    db: &DatabaseConnection,
    tables: &TablesSettings,
) -> Result<Mapping, MappingError> {
    let backend = db.get_database_backend();
    let mut problems = Vec::new();
    let mut mapping = Mapping::default();
    if let Some(settings) = &tables.executions {
        let declared = columns_of(db, settings.schema.as_deref(), &settings.table).await?;
        let mut table = TableCheck::new("tables.executions", settings, backend, declared);
        let vocabulary =
            Vocabulary::new(&JobStatus::WATCHED, JobStatus::as_str, &settings.statuses);
        let c = &settings.columns;
        // Every field is looked at, so one start names every mistake.
        let execution_id = table.id("execution_id", &c.execution_id);
        let submission_id = table.text("submission_id", &c.submission_id);
        let status = table.status("status", &c.status, vocabulary.stored_values());
        let job_name = table.optional(c.job_name.as_deref(), |t, col| t.text("job_name", col));
        let cluster = table.optional(c.cluster.as_deref(), |t, col| t.text("cluster", col));
        let progress = table.optional(c.progress.as_deref(), |t, col| {
            t.one_of("progress", col, &[Kind::Integer, Kind::Float], "a number")
        });
        let error_message = table.optional(c.error_message.as_deref(), |t, col| {
            t.text("error_message", col)
        });
        let submitted_at = table.optional(c.submitted_at.as_deref(), |t, col| {
            t.time("submitted_at", col)
        });
        let started_at =
            table.optional(c.started_at.as_deref(), |t, col| t.time("started_at", col));
        let completed_at = table.optional(c.completed_at.as_deref(), |t, col| {
            t.time("completed_at", col)
        });
        let resolved = match (execution_id, submission_id, status) {
            (Some(execution_id), Some(submission_id), Some(status)) => Some(ExecutionsMap {
                table: table.app.clone(),
                execution_id,
                submission_id,
                status,
                job_name,
                cluster,
                progress,
                error_message,
                submitted_at,
                started_at,
                completed_at,
                vocabulary,
            }),
            _ => None,
        };
        problems.append(&mut table.problems);
        mapping.executions = resolved;
    }
    if let Some(settings) = &tables.queue {
        let declared = columns_of(db, settings.schema.as_deref(), &settings.table).await?;
        let mut table = TableCheck::new("tables.queue", settings, backend, declared);
        let vocabulary =
            Vocabulary::new(&QueueStatus::ALL, QueueStatus::as_str, &settings.statuses);
        let c = &settings.columns;
        let job_id = table.id("job_id", &c.job_id);
        let status = table.status("status", &c.status, vocabulary.stored_values());
        let error_message = table.optional(c.error_message.as_deref(), |t, col| {
            t.text("error_message", col)
        });
        let generated_fields = table.optional(c.generated_fields.as_deref(), |t, col| {
            t.one_of(
                "generated_fields",
                col,
                &[Kind::Json { type_name: "json" }, Kind::Text],
                "JSON or text",
            )
        });
        let completed_at = table.optional(c.completed_at.as_deref(), |t, col| {
            t.time("completed_at", col)
        });
        let resolved = match (job_id, status) {
            (Some(job_id), Some(status)) => Some(QueueMap {
                table: table.app.clone(),
                job_id,
                status,
                error_message,
                generated_fields,
                completed_at,
                vocabulary,
            }),
            _ => None,
        };
        problems.append(&mut table.problems);
        mapping.queue = resolved;
    }
    if problems.is_empty() {
        Ok(mapping)
    } else {
        Err(MappingError::Mismatch(problems))
    }
}

/// The resolved mapping, for `check-config` and the start-up log.
pub fn describe(mapping: &Mapping) -> String {
    let mut out = String::new();
    let line = |out: &mut String, field: &str, column: &Option<Column>| {
        if let Some(c) = column {
            out.push_str(&format!("  {field:<17} -> {:?} ({})\n", c.name, c.declared));
        }
    };
    if let Some(m) = &mapping.executions {
        out.push_str(&format!("tables.executions -> {}\n", m.table));
        for (field, column) in [
            ("execution_id", Some(m.execution_id.clone())),
            ("submission_id", Some(m.submission_id.clone())),
            ("status", Some(m.status.clone())),
            ("job_name", m.job_name.clone()),
            ("cluster", m.cluster.clone()),
            ("progress", m.progress.clone()),
            ("error_message", m.error_message.clone()),
            ("submitted_at", m.submitted_at.clone()),
            ("started_at", m.started_at.clone()),
            ("completed_at", m.completed_at.clone()),
        ] {
            line(&mut out, field, &column);
        }
        let statuses: Vec<String> = JobStatus::WATCHED
            .iter()
            .map(|s| format!("{s}={}", m.vocabulary.encode(*s)))
            .collect();
        out.push_str(&format!("  statuses          {}\n", statuses.join(" ")));
    } else {
        out.push_str("tables.executions -> spark_job_executions (jobwarden's own)\n");
    }
    if let Some(m) = &mapping.queue {
        out.push_str(&format!("tables.queue -> {}\n", m.table));
        for (field, column) in [
            ("job_id", Some(m.job_id.clone())),
            ("status", Some(m.status.clone())),
            ("error_message", m.error_message.clone()),
            ("generated_fields", m.generated_fields.clone()),
            ("completed_at", m.completed_at.clone()),
        ] {
            line(&mut out, field, &column);
        }
        let statuses: Vec<String> = QueueStatus::ALL
            .iter()
            .map(|s| format!("{s}={}", m.vocabulary.encode(*s)))
            .collect();
        out.push_str(&format!("  statuses          {}\n", statuses.join(" ")));
    } else {
        out.push_str("tables.queue -> transformation_job_queue (jobwarden's own)\n");
    }
    out
}

/// Checks the fields of one table against what its catalogue declares.
struct TableCheck {
    section: &'static str,
    app: AppTable,
    /// `None`: the table does not exist (one problem says so; its columns are not checked).
    declared: Option<BTreeMap<String, Declared>>,
    problems: Vec<MappingProblem>,
}

impl TableCheck {
    fn new<C: ColumnList>(
        section: &'static str,
        settings: &MappedTable<C>,
        backend: DatabaseBackend,
        declared: BTreeMap<String, Declared>,
    ) -> Self {
        let app = AppTable {
            schema: settings.schema.clone(),
            table: settings.table.clone(),
            backend,
        };
        let mut check = TableCheck {
            section,
            app,
            declared: Some(declared),
            problems: Vec::new(),
        };
        if check.declared.as_ref().is_some_and(BTreeMap::is_empty) {
            check.declared = None;
            check.problems.push(MappingProblem {
                key: format!("{section}.table"),
                table: check.app.to_string(),
                column: None,
                problem: "no such table in the database (names are case-sensitive; set the \
                          schema if it is not the connection's default)"
                    .into(),
            });
        }
        check
    }

    fn refuse(&mut self, field: &str, column: &str, problem: String) {
        self.problems.push(MappingProblem {
            key: format!("{}.columns.{field}", self.section),
            table: self.app.to_string(),
            column: Some(column.to_owned()),
            problem,
        });
    }

    /// The column's kind, or `None` (with a problem) when it is missing or of a kind jobwarden
    /// cannot use.
    fn lookup(&mut self, field: &str, column: &str) -> Option<(Kind, Declared)> {
        let declared = self.declared.as_ref()?.get(column).cloned();
        let Some(declared) = declared else {
            let known: Vec<String> = self
                .declared
                .iter()
                .flat_map(|d| d.keys().cloned())
                .collect();
            self.refuse(
                field,
                column,
                format!("no such column (the table has: {})", known.join(", ")),
            );
            return None;
        };
        match classify(self.app.backend, &declared.data_type) {
            Some(kind) => Some((kind, declared)),
            None => {
                self.refuse(
                    field,
                    column,
                    format!(
                        "declared {}, which jobwarden cannot read or write",
                        declared.data_type
                    ),
                );
                None
            }
        }
    }

    fn one_of(
        &mut self,
        field: &str,
        column: &str,
        accepted: &[Kind],
        expected: &str,
    ) -> Option<Column> {
        let (kind, declared) = self.lookup(field, column)?;
        let fits = accepted
            .iter()
            .any(|a| std::mem::discriminant(a) == std::mem::discriminant(&kind));
        if !fits {
            self.refuse(
                field,
                column,
                format!("declared {}; expected {expected}", declared.data_type),
            );
            return None;
        }
        Some(Column {
            name: column.to_owned(),
            kind,
            declared: declared.data_type,
            max_chars: declared.max_chars,
        })
    }

    fn id(&mut self, field: &str, column: &str) -> Option<Column> {
        self.one_of(
            field,
            column,
            &[Kind::Text, Kind::Integer, Kind::Uuid],
            "a text, integer or uuid key",
        )
    }

    fn text(&mut self, field: &str, column: &str) -> Option<Column> {
        self.one_of(field, column, &[Kind::Text], "text")
    }

    /// A time column; on SQLite an application's times are usually text, read as UTC.
    fn time(&mut self, field: &str, column: &str) -> Option<Column> {
        let mut accepted = vec![Kind::Timestamp { zoned: false }];
        if self.app.backend == DatabaseBackend::Sqlite {
            accepted.push(Kind::Text);
        }
        let mut resolved = self.one_of(field, column, &accepted, "a timestamp")?;
        if resolved.kind == Kind::Text {
            resolved.kind = Kind::Timestamp { zoned: false };
        }
        Some(resolved)
    }

    fn status<'v>(
        &mut self,
        field: &str,
        column: &str,
        stored: impl Iterator<Item = &'v StatusValue>,
    ) -> Option<Column> {
        let (kind, declared) = self.lookup(field, column)?;
        let stored: Vec<&StatusValue> = stored.collect();
        let integers = stored.iter().any(|v| matches!(v, StatusValue::Integer(_)));
        match kind {
            Kind::Integer if !integers => {
                self.refuse(
                    field,
                    column,
                    format!(
                        "declared {}, but the statuses are names; give every status an \
                         integer in [{}.statuses]",
                        declared.data_type, self.section
                    ),
                );
                return None;
            }
            Kind::Integer => {
                let (low, high) = integer_range(&declared.data_type);
                for v in &stored {
                    if let StatusValue::Integer(n) = v {
                        if *n < low || *n > high {
                            self.refuse(
                                field,
                                column,
                                format!(
                                    "declared {}, which cannot hold the status value {n}",
                                    declared.data_type
                                ),
                            );
                        }
                    }
                }
            }
            Kind::Text if integers => {
                self.refuse(
                    field,
                    column,
                    format!(
                        "declared {}, but [{}.statuses] gives integers; give names, or map an \
                         integer column",
                        declared.data_type, self.section
                    ),
                );
                return None;
            }
            Kind::Text => {
                if let Some(max) = declared.max_chars {
                    for v in &stored {
                        if let StatusValue::Name(s) = v {
                            if s.chars().count() > max {
                                self.refuse(
                                    field,
                                    column,
                                    format!(
                                        "declared {}({max}), which cannot hold the status \
                                         value {s:?}",
                                        declared.data_type
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            _ => {
                self.refuse(
                    field,
                    column,
                    format!(
                        "declared {}; expected text or an integer",
                        declared.data_type
                    ),
                );
                return None;
            }
        }
        Some(Column {
            name: column.to_owned(),
            kind,
            declared: declared.data_type,
            max_chars: declared.max_chars,
        })
    }

    fn optional(
        &mut self,
        column: Option<&str>,
        resolve: impl FnOnce(&mut Self, &str) -> Option<Column>,
    ) -> Option<Column> {
        column.and_then(|c| resolve(self, c))
    }
}

/// The values an integer type holds (SQLite's integers are 64-bit whatever they are called).
fn integer_range(declared: &str) -> (i64, i64) {
    match declared.to_ascii_lowercase().as_str() {
        "tinyint" => (-128, 127),
        "smallint" => (i64::from(i16::MIN), i64::from(i16::MAX)),
        "mediumint" => (-8_388_608, 8_388_607),
        "integer" | "int" | "int4" => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => (i64::MIN, i64::MAX),
    }
}

/// What a declared type means to jobwarden; `None` for types it cannot use (boolean, bytes…).
fn classify(backend: DatabaseBackend, declared: &str) -> Option<Kind> {
    let t = declared.to_ascii_lowercase();
    match backend {
        DatabaseBackend::Postgres => match t.as_str() {
            "text" | "character varying" | "character" | "citext" => Some(Kind::Text),
            "smallint" | "integer" | "bigint" => Some(Kind::Integer),
            "double precision" | "real" | "numeric" => Some(Kind::Float),
            "timestamp with time zone" => Some(Kind::Timestamp { zoned: true }),
            "timestamp without time zone" => Some(Kind::Timestamp { zoned: false }),
            "json" => Some(Kind::Json { type_name: "json" }),
            "jsonb" => Some(Kind::Json { type_name: "jsonb" }),
            "uuid" => Some(Kind::Uuid),
            _ => None,
        },
        DatabaseBackend::MySql => match t.as_str() {
            "varchar" | "char" | "text" | "tinytext" | "mediumtext" | "longtext" => {
                Some(Kind::Text)
            }
            "tinyint" | "smallint" | "mediumint" | "int" | "bigint" => Some(Kind::Integer),
            "double" | "float" | "decimal" => Some(Kind::Float),
            "datetime" => Some(Kind::Timestamp { zoned: false }),
            "timestamp" => Some(Kind::Timestamp { zoned: true }),
            "json" => Some(Kind::Json { type_name: "json" }),
            // MariaDB's own UUID type (10.7 and later).
            "uuid" => Some(Kind::Uuid),
            _ => None,
        },
        // SQLite's type affinity rules, in its own order.
        _ => {
            let has = |parts: &[&str]| parts.iter().any(|p| t.contains(p));
            if has(&["int"]) {
                Some(Kind::Integer)
            } else if has(&["char", "clob", "text", "json"]) {
                Some(Kind::Text)
            } else if has(&["date", "time"]) {
                Some(Kind::Timestamp { zoned: false })
            } else if has(&["real", "floa", "doub", "numeric", "decimal"]) {
                Some(Kind::Float)
            } else {
                None
            }
        }
    }
}

/// The columns of one table (empty when there is no such table).
async fn columns_of(
    db: &DatabaseConnection,
    schema: Option<&str>,
    table: &str,
) -> Result<BTreeMap<String, Declared>, DbErr> {
    let backend = db.get_database_backend();
    let schema_value = Value::String(schema.map(str::to_owned));
    let table_value = Value::String(Some(table.to_owned()));
    let statement = match backend {
        DatabaseBackend::Postgres => Statement::from_sql_and_values(
            backend,
            "SELECT column_name::text, data_type::text, character_maximum_length::bigint \
             FROM information_schema.columns \
             WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2",
            [schema_value, table_value],
        ),
        DatabaseBackend::MySql => Statement::from_sql_and_values(
            backend,
            "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), \
             CAST(CHARACTER_MAXIMUM_LENGTH AS SIGNED) \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
            [schema_value, table_value],
        ),
        _ => Statement::from_sql_and_values(
            backend,
            "SELECT name, type, NULL FROM pragma_table_info(?, COALESCE(?, 'main'))",
            [table_value, schema_value],
        ),
    };
    let mut out = BTreeMap::new();
    for row in db.query_all_raw(statement).await? {
        let name: String = row.try_get_by_index(0)?;
        let data_type: String = row.try_get_by_index(1)?;
        let max: Option<i64> = row.try_get_by_index(2)?;
        out.insert(
            name,
            Declared {
                data_type,
                max_chars: max.and_then(|m| usize::try_from(m).ok()),
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orm_types_are_understood_on_every_backend() {
        assert_eq!(
            classify(DatabaseBackend::Postgres, "timestamp without time zone"),
            Some(Kind::Timestamp { zoned: false })
        );
        assert_eq!(
            classify(DatabaseBackend::Postgres, "jsonb"),
            Some(Kind::Json { type_name: "jsonb" })
        );
        assert_eq!(
            classify(DatabaseBackend::MySql, "longtext"),
            Some(Kind::Text)
        );
        assert_eq!(
            classify(DatabaseBackend::Sqlite, "INTEGER"),
            Some(Kind::Integer)
        );
        assert_eq!(classify(DatabaseBackend::Sqlite, "TEXT"), Some(Kind::Text));
        assert_eq!(
            classify(DatabaseBackend::Postgres, "uuid"),
            Some(Kind::Uuid)
        );
        assert_eq!(classify(DatabaseBackend::MySql, "bit"), None);
    }

    #[test]
    fn small_integer_types_know_their_range() {
        assert_eq!(integer_range("tinyint"), (-128, 127));
        assert_eq!(integer_range("smallint").1, 32767);
        assert_eq!(integer_range("bigint").1, i64::MAX);
    }
}
