//! Many rows of one table in few statements: multi-row inserts and upserts, and on PostgreSQL
//! an append of rows with generated keys as one statement of a single shape that unpacks a JSON
//! array of the rows.
//!
//! A multi-row `VALUES` list is a new statement text for every row count: PostgreSQL parses and
//! plans each one afresh whenever the small statement cache has dropped it. The JSON form is the
//! same text for any number of rows, with one parameter, so it is prepared once per connection.
//! It pays for that by reading every value from text: cheap for history and outbox rows (text
//! and one instant), dearer than the parse it saves for job rows full of instants, which stay
//! `VALUES` (measured: a job-row upsert as JSON cost PostgreSQL 10% more, and writes fell 10%).

use chrono::SecondsFormat;
use sea_orm::sea_query::{OnConflict, Value};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ConnectionTrait, DatabaseBackend, DatabaseTransaction, DbErr,
    EntityName, EntityTrait, IdenStatic, Iterable, Statement,
};

/// Rows per multi-row `VALUES` insert: a whole batch (`store.max_batch`, 500) in one statement;
/// the widest row (21 columns) keeps that at 10,500 parameters, under SQLite's 32,766.
const VALUES_CHUNK: usize = 500;

/// What a row whose key is already in the table does.
pub(super) enum Conflict<C> {
    /// It is skipped; the count returned says how many rows went in.
    Skip,
    /// It updates the existing row, except for its key and the columns in `keep`.
    Update { key: C, keep: Vec<C> },
}

/// Inserts or upserts `rows` as multi-row `VALUES` statements and returns how many rows were
/// inserted or updated.
pub(super) async fn write<A>(
    txn: &DatabaseTransaction,
    rows: Vec<A>,
    conflict: &Conflict<<A::Entity as EntityTrait>::Column>,
) -> Result<u64, DbErr>
where
    A: ActiveModelTrait + Send,
{
    let mut written = 0;
    for chunk in chunked(rows) {
        let insert = A::Entity::insert_many(chunk);
        written += match conflict {
            Conflict::Skip => match insert
                .on_conflict_do_nothing()
                .exec_without_returning(txn)
                .await?
            {
                sea_orm::TryInsertResult::Inserted(n) => n,
                sea_orm::TryInsertResult::Empty | sea_orm::TryInsertResult::Conflicted => 0,
            },
            Conflict::Update { key, keep } => {
                insert
                    .on_conflict(
                        OnConflict::column(*key)
                            .update_columns(updated_columns::<A>(*key, keep))
                            .to_owned(),
                    )
                    .exec_without_returning(txn)
                    .await?
            }
        };
    }
    Ok(written)
}

/// Inserts `rows` (all with the same columns set, the key generated) in the order given, so
/// their keys follow that order.
pub(super) async fn append<A>(txn: &DatabaseTransaction, rows: Vec<A>) -> Result<(), DbErr>
where
    A: ActiveModelTrait + Send,
{
    if rows.is_empty() {
        return Ok(());
    }
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        if let Some(statement) = json_append(&rows) {
            txn.execute_raw(statement).await?;
            return Ok(());
        }
    }
    for chunk in chunked(rows) {
        A::Entity::insert_many(chunk)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// Splits `items` into runs of at most `VALUES_CHUNK`.
fn chunked<T>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        out.push(items.by_ref().take(VALUES_CHUNK).collect());
    }
    out
}

fn updated_columns<A: ActiveModelTrait>(
    key: <A::Entity as EntityTrait>::Column,
    keep: &[<A::Entity as EntityTrait>::Column],
) -> Vec<<A::Entity as EntityTrait>::Column> {
    <A::Entity as EntityTrait>::Column::iter()
        .filter(|c| c.as_str() != key.as_str() && !keep.iter().any(|k| k.as_str() == c.as_str()))
        .collect()
}

/// The PostgreSQL statement that inserts `rows` from one JSON parameter, or `None` when a row
/// holds a value JSON cannot carry unchanged (then the `VALUES` form is used).
///
/// `json_populate_recordset` converts each field to the table's own column type, so the
/// statement names no types; a `json` column keeps the text it is given.
fn json_append<A>(rows: &[A]) -> Option<Statement>
where
    A: ActiveModelTrait,
{
    let set_count = |row: &A| {
        <A::Entity as EntityTrait>::Column::iter()
            .filter(|c| !row.get(*c).is_not_set())
            .count()
    };
    let columns: Vec<_> = <A::Entity as EntityTrait>::Column::iter()
        .filter(|c| !rows[0].get(*c).is_not_set())
        .collect();
    let mut objects = Vec::with_capacity(rows.len());
    for row in rows {
        // Rows that set different columns would need different statements.
        if set_count(row) != columns.len() {
            return None;
        }
        let mut object = serde_json::Map::with_capacity(columns.len());
        for column in &columns {
            let value = match row.get(*column) {
                ActiveValue::Set(v) | ActiveValue::Unchanged(v) => to_json(v)?,
                ActiveValue::NotSet => return None,
            };
            object.insert(column.as_str().to_owned(), value);
        }
        objects.push(serde_json::Value::Object(object));
    }
    let json = serde_json::Value::Array(objects).to_string();
    let table = quoted(A::Entity::default().table_name());
    let names: Vec<String> = columns.iter().map(|c| quoted(c.as_str())).collect();
    let names = names.join(", ");
    let sql = format!(
        "INSERT INTO {table} ({names}) SELECT {names} \
         FROM json_populate_recordset(NULL::{table}, $1::json) WITH ORDINALITY AS r \
         ORDER BY r.ordinality"
    );
    Some(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        sql,
        [Value::String(Some(json))],
    ))
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column value as JSON that PostgreSQL reads back as the same value, or `None`.
fn to_json(value: Value) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match value {
        Value::Bool(v) => v.map_or(J::Null, J::Bool),
        Value::SmallInt(v) => v.map_or(J::Null, J::from),
        Value::Int(v) => v.map_or(J::Null, J::from),
        Value::BigInt(v) => v.map_or(J::Null, J::from),
        Value::String(v) => v.map_or(J::Null, J::String),
        // A JSON `null` inside a json column is not SQL NULL; only the `VALUES` form keeps it.
        Value::Json(Some(v)) if v.is_null() => return None,
        Value::Json(v) => v.map_or(J::Null, |v| *v),
        // Microseconds, as PostgreSQL keeps them and as the bound form truncates to.
        Value::ChronoDateTimeUtc(v) => v.map_or(J::Null, |t| {
            J::String(t.to_rfc3339_opts(SecondsFormat::Micros, true))
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn instants_go_out_in_utc_with_microseconds() {
        let t = Utc.timestamp_opt(1_800_000_000, 123_456_789).unwrap();
        assert_eq!(
            to_json(Value::ChronoDateTimeUtc(Some(t))),
            Some(serde_json::json!("2027-01-15T08:00:00.123456Z"))
        );
    }

    #[test]
    fn a_json_null_inside_a_json_column_is_left_to_the_values_form() {
        assert_eq!(
            to_json(Value::Json(Some(Box::new(serde_json::Value::Null)))),
            None
        );
        assert_eq!(
            to_json(Value::Json(None)),
            Some(serde_json::Value::Null),
            "SQL NULL is JSON null"
        );
    }

    #[test]
    fn bytes_are_left_to_the_values_form() {
        assert_eq!(to_json(Value::Bytes(Some(vec![1, 2]))), None);
    }

    #[test]
    fn rows_are_cut_into_runs_of_at_most_the_chunk_size() {
        let runs = chunked((0..1201).collect());
        let sizes: Vec<usize> = runs.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![500, 500, 201]);
    }
}
