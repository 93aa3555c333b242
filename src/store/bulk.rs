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

use std::collections::BTreeMap;

use chrono::SecondsFormat;
use sea_orm::sea_query::{OnConflict, Value};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ConnectionTrait, DatabaseBackend, DatabaseTransaction, DbErr,
    EntityName, EntityTrait, IdenStatic, IntoActiveModel, Iterable, ModelTrait, Statement,
};

/// Rows per multi-row `VALUES` insert: a whole batch (`store.max_batch`, 500) in one statement;
/// the widest row (29 columns) keeps that at 14,500 parameters, under SQLite's 32,766.
const VALUES_CHUNK: usize = 500;

/// Inserts `rows`, skipping those whose key is already in the table, as multi-row `VALUES`
/// statements, and returns how many went in.
pub(super) async fn insert_if_absent<A>(
    txn: &DatabaseTransaction,
    rows: Vec<A>,
) -> Result<u64, DbErr>
where
    A: ActiveModelTrait + Send,
{
    let mut inserted = 0;
    for chunk in chunked(rows) {
        inserted += match A::Entity::insert_many(chunk)
            .on_conflict_do_nothing()
            .exec_without_returning(txn)
            .await?
        {
            sea_orm::TryInsertResult::Inserted(n) => n,
            sea_orm::TryInsertResult::Empty | sea_orm::TryInsertResult::Conflicted => 0,
        };
    }
    Ok(inserted)
}

/// A row to upsert with the columns it sets: every column for a row the table may not hold
/// yet, only the key and what changed for a row read (and locked) in the same transaction.
pub(super) struct Changed<A> {
    /// Bit `i` stands for the entity's `i`-th column.
    columns: u64,
    row: A,
}

impl<A: ActiveModelTrait> Changed<A> {
    /// The whole row.
    pub(super) fn whole(row: A) -> Changed<A> {
        Changed {
            columns: u64::MAX,
            row: row.reset_all(),
        }
    }

    /// `after` as its key and the columns whose values differ from `before`, the same row as
    /// it was read. Writing only those leaves every index on an unchanged column alone (SQLite
    /// rewrites an index entry for every column an upsert assigns, changed or not) and sends a
    /// quarter of the values for a status change.
    pub(super) fn since<M>(before: &M, after: M, key: <A::Entity as EntityTrait>::Column) -> Self
    where
        M: ModelTrait<Entity = A::Entity> + IntoActiveModel<A>,
    {
        debug_assert!(<A::Entity as EntityTrait>::Column::iter().count() <= 64);
        let mut columns = 0u64;
        let mut row = after.into_active_model();
        for (i, column) in <A::Entity as EntityTrait>::Column::iter().enumerate() {
            let now = row.get(column).into_value();
            if column.as_str() == key.as_str() || now.as_ref() != Some(&before.get(column)) {
                columns |= 1 << i;
                row.reset(column);
            } else {
                row.not_set(column);
            }
        }
        Changed { columns, row }
    }
}

/// Upserts `rows` on `key`: rows that set the same columns go out together as multi-row
/// `VALUES` statements whose conflict branch assigns those columns, except the key and `keep`.
/// Returns how many rows were written.
pub(super) async fn upsert<A>(
    txn: &DatabaseTransaction,
    rows: Vec<Changed<A>>,
    key: <A::Entity as EntityTrait>::Column,
    keep: &[<A::Entity as EntityTrait>::Column],
) -> Result<u64, DbErr>
where
    A: ActiveModelTrait + Send,
{
    let mut groups: BTreeMap<u64, Vec<A>> = BTreeMap::new();
    for changed in rows {
        groups.entry(changed.columns).or_default().push(changed.row);
    }
    let mut written = 0;
    for (columns, rows) in groups {
        let assigned: Vec<_> = <A::Entity as EntityTrait>::Column::iter()
            .enumerate()
            .filter(|(i, c)| {
                columns & (1 << i) != 0
                    && c.as_str() != key.as_str()
                    && !keep.iter().any(|k| k.as_str() == c.as_str())
            })
            .map(|(_, c)| c)
            .collect();
        if assigned.is_empty() {
            // Only columns an update leaves alone differ: there is nothing to write.
            continue;
        }
        for chunk in chunked(rows) {
            written += A::Entity::insert_many(chunk)
                .on_conflict(
                    OnConflict::column(key)
                        .update_columns(assigned.clone())
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
        }
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

    fn queue_row() -> entity::transformation_job_queue::Model {
        let t = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        entity::transformation_job_queue::Model {
            job_id: "q-1".into(),
            status: "Processing".into(),
            error_message: None,
            generated_fields: None,
            completed_at: None,
            last_event_at: Some(t),
            last_event_id: Some("e-1".into()),
            last_topic: Some("status".into()),
            last_partition: Some(0),
            last_offset: Some(7),
            created_at: t,
            updated_at: t,
        }
    }

    #[test]
    fn a_row_read_in_the_batch_is_upserted_as_its_key_and_what_changed() {
        use entity::transformation_job_queue::{ActiveModel, Column};
        let before = queue_row();
        let mut after = before.clone();
        after.status = "Completed".into();
        after.completed_at = Some(Utc.timestamp_opt(1_800_000_060, 0).unwrap());
        let changed: Changed<ActiveModel> = Changed::since(&before, after, Column::JobId);
        let set: Vec<&str> = Column::iter()
            .filter(|c| changed.row.get(*c).is_set())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(set, ["job_id", "status", "completed_at"]);
        assert_eq!(
            changed.columns.count_ones(),
            3,
            "the columns that group rows are the ones set"
        );
    }

    #[test]
    fn rows_with_the_same_changes_share_a_statement_and_a_whole_row_sets_everything() {
        use entity::transformation_job_queue::{ActiveModel, Column};
        let before = queue_row();
        let mut a = before.clone();
        a.status = "Failed".into();
        let mut b = before.clone();
        b.job_id = "q-2".into();
        let mut b_before = before.clone();
        b_before.job_id = "q-2".into();
        b.status = "Completed".into();
        let a: Changed<ActiveModel> = Changed::since(&before, a, Column::JobId);
        let b: Changed<ActiveModel> = Changed::since(&b_before, b, Column::JobId);
        assert_eq!(a.columns, b.columns);
        let whole: Changed<ActiveModel> = Changed::whole(before.into_active_model());
        assert!(Column::iter().all(|c| whole.row.get(c).is_set()));
    }

    #[test]
    fn rows_are_cut_into_runs_of_at_most_the_chunk_size() {
        let runs = chunked((0..1201).collect());
        let sizes: Vec<usize> = runs.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![500, 500, 201]);
    }
}
