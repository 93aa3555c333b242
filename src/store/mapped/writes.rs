//! Writing what jobwarden decided into the application's mapped rows: only the columns that
//! changed, and rows that change the same columns together, in one `UPDATE … SET column =
//! CASE key WHEN … END` per group, so that a cycle where every job moves costs a few
//! statements rather than one per row.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, CaseStatement, Expr, ExprTrait, Func, Query, TableName};
use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, Value};

use super::rows::{AppExecution, AppQueueJob};
use super::{id_value, status_value, Column, ExecutionsMap, Kind, QueueMap};
use crate::config::StatusValue;

/// Rows per statement: parameters stay far below every backend's limit (SQLite's 32,766)
/// with every mapped column changing.
const ROWS_PER_STATEMENT: usize = 500;

/// One row's changed columns, keyed by the value of its key column.
pub struct RowChanges {
    key: Expr,
    sets: Vec<(String, Expr)>,
}

/// Writes `rows` of `table` (keyed by `key`); returns how many rows were written.
pub async fn write_rows(
    txn: &impl ConnectionTrait,
    table: &TableName,
    key: &Column,
    rows: Vec<RowChanges>,
) -> Result<usize, DbErr> {
    let written = rows.len();
    // Rows alike in which columns they change share a statement.
    let mut shapes: BTreeMap<Vec<String>, Vec<RowChanges>> = BTreeMap::new();
    for row in rows {
        let shape = row.sets.iter().map(|(column, _)| column.clone()).collect();
        shapes.entry(shape).or_default().push(row);
    }
    for (columns, rows) in shapes {
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<RowChanges> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
            txn.execute(&update(table, key, &columns, chunk)).await?;
        }
    }
    Ok(written)
}

/// `UPDATE table SET c = CASE WHEN key = k1 THEN v1 … END, … WHERE key IN (k1, …)`; a lone
/// row gets the plain `SET c = v1 WHERE key = k1`.
fn update(
    table: &TableName,
    key: &Column,
    columns: &[String],
    rows: Vec<RowChanges>,
) -> sea_orm::sea_query::UpdateStatement {
    let key_column = || Expr::col(Alias::new(&key.name));
    let mut update = Query::update();
    update.table(table.clone());
    if let [row] = &rows[..] {
        for (column, value) in &row.sets {
            update.value(Alias::new(column), value.clone());
        }
        update.and_where(key_column().eq(row.key.clone()));
        return update;
    }
    for (i, column) in columns.iter().enumerate() {
        let case = rows.iter().fold(CaseStatement::new(), |case, row| {
            case.case(key_column().eq(row.key.clone()), row.sets[i].1.clone())
        });
        update.value(Alias::new(column), case);
    }
    update.and_where(key_column().is_in(rows.into_iter().map(|row| row.key)));
    update
}

/// A value as written into `column`.
fn text_value(column: &Column, value: &Option<String>) -> Expr {
    let value = value.as_ref().map(|v| match column.max_chars {
        // A long failure reason is cut to what the column holds rather than refused.
        Some(max) if v.chars().count() > max => v.chars().take(max).collect(),
        _ => v.clone(),
    });
    Expr::val(Value::String(value))
}

fn time_value(column: &Column, backend: DatabaseBackend, value: Option<DateTime<Utc>>) -> Expr {
    Expr::val(match (backend, column.kind) {
        (DatabaseBackend::Sqlite, _) => {
            Value::String(value.map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string()))
        }
        (_, Kind::Timestamp { zoned: true }) => Value::ChronoDateTimeUtc(value),
        _ => Value::ChronoDateTime(value.map(|t| t.naive_utc())),
    })
}

fn number_value(column: &Column, value: Option<f64>) -> Expr {
    Expr::val(match column.kind {
        Kind::Integer => Value::BigInt(value.map(|v| v.round() as i64)),
        _ => Value::Double(value),
    })
}

fn json_value(
    column: &Column,
    backend: DatabaseBackend,
    value: &Option<serde_json::Value>,
) -> Expr {
    let text = Expr::val(Value::String(value.as_ref().map(|v| v.to_string())));
    match (column.kind, backend) {
        (Kind::Json { type_name }, DatabaseBackend::Postgres) => {
            Func::cast_as(text, Alias::new(type_name)).into()
        }
        _ => text,
    }
}

/// Collects `SET` pairs for the columns whose value changed.
struct Changes(Vec<(String, Expr)>);

impl Changes {
    /// The row's changes, if any, with its key as the column compares it.
    fn of_row(self, key: &Column, id: &str, backend: DatabaseBackend) -> Option<RowChanges> {
        if self.0.is_empty() {
            return None;
        }
        Some(RowChanges {
            key: id_value(key, id, backend)?,
            sets: self.0,
        })
    }

    fn set<T: PartialEq>(
        &mut self,
        column: &Option<Column>,
        before: &T,
        after: &T,
        value: impl FnOnce(&Column) -> Expr,
    ) {
        if let Some(column) = column {
            if before != after {
                self.0.push((column.name.clone(), value(column)));
            }
        }
    }

    /// The status column is always mapped.
    fn set_status(
        &mut self,
        column: &Column,
        before: &Option<StatusValue>,
        after: &Option<StatusValue>,
    ) {
        if before != after {
            let value = after.as_ref().map_or(Value::String(None), status_value);
            self.0.push((column.name.clone(), Expr::val(value)));
        }
    }
}

/// The mapped columns that differ between `before` (as loaded) and `after`, for
/// [`write_rows`]; `None` when nothing differs (or the id cannot be a key of the column).
pub fn execution_changes(
    backend: DatabaseBackend,
    map: &ExecutionsMap,
    id: &str,
    before: &AppExecution,
    after: &AppExecution,
) -> Option<RowChanges> {
    let mut changes = Changes(Vec::new());
    changes.set_status(&map.status, &before.status, &after.status);
    let progress_of = |p: Option<f64>| p.map(|v| v.round() as i64);
    changes.set(
        &map.progress,
        &progress_of(before.progress),
        &progress_of(after.progress),
        |c| number_value(c, after.progress),
    );
    changes.set(
        &map.error_message,
        &before.error_message,
        &after.error_message,
        |c| text_value(c, &after.error_message),
    );
    for (column, b, a) in [
        (&map.submitted_at, before.submitted_at, after.submitted_at),
        (&map.started_at, before.started_at, after.started_at),
        (&map.completed_at, before.completed_at, after.completed_at),
    ] {
        changes.set(column, &b, &a, |c| time_value(c, backend, a));
    }
    changes.of_row(&map.execution_id, id, backend)
}

/// Like [`execution_changes`], for a queue row.
pub fn queue_changes(
    backend: DatabaseBackend,
    map: &QueueMap,
    id: &str,
    before: &AppQueueJob,
    after: &AppQueueJob,
) -> Option<RowChanges> {
    let mut changes = Changes(Vec::new());
    changes.set_status(&map.status, &before.status, &after.status);
    changes.set(
        &map.error_message,
        &before.error_message,
        &after.error_message,
        |c| text_value(c, &after.error_message),
    );
    changes.set(
        &map.generated_fields,
        &before.generated_fields,
        &after.generated_fields,
        |c| json_value(c, backend, &after.generated_fields),
    );
    changes.set(
        &map.completed_at,
        &before.completed_at,
        &after.completed_at,
        |c| time_value(c, backend, after.completed_at),
    );
    changes.of_row(&map.job_id, id, backend)
}

#[cfg(test)]
mod tests {
    use sea_orm::sea_query::PostgresQueryBuilder;

    use super::*;

    fn column(name: &str, kind: Kind) -> Column {
        Column {
            name: name.into(),
            kind,
            declared: "int".into(),
            max_chars: None,
        }
    }

    fn row(id: i64, status: i64, message: &str) -> RowChanges {
        RowChanges {
            key: Expr::val(id),
            sets: vec![
                ("Status".into(), Expr::val(status)),
                ("ErrorMessage".into(), Expr::val(message)),
            ],
        }
    }

    fn sql(rows: Vec<RowChanges>) -> String {
        let key = column("Id", Kind::Integer);
        let columns = ["Status".to_owned(), "ErrorMessage".to_owned()];
        update(&TableName::from(Alias::new("Jobs")), &key, &columns, rows)
            .to_string(PostgresQueryBuilder)
    }

    #[test]
    fn rows_changing_the_same_columns_share_one_update_with_each_value_under_its_own_key() {
        assert_eq!(
            sql(vec![row(1, 3, "a"), row(2, 4, "b")]),
            r#"UPDATE "Jobs" SET "Status" = (CASE WHEN ("Id" = 1) THEN 3 WHEN ("Id" = 2) THEN 4 END), "ErrorMessage" = (CASE WHEN ("Id" = 1) THEN 'a' WHEN ("Id" = 2) THEN 'b' END) WHERE "Id" IN (1, 2)"#
        );
    }

    #[test]
    fn a_lone_row_gets_a_plain_update() {
        assert_eq!(
            sql(vec![row(7, 3, "a")]),
            r#"UPDATE "Jobs" SET "Status" = 3, "ErrorMessage" = 'a' WHERE "Id" = 7"#
        );
    }
}
