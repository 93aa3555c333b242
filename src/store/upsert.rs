//! Writes a batch's changed rows back in multi-row upserts that carry only the columns that
//! changed: a status change touches a handful of a row's thirty columns, and binding, sending
//! and applying the other twenty-odd for every row of every batch was most of the write.

use std::collections::BTreeMap;

use sea_orm::sea_query::{OnConflict, Query, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, IdenStatic,
    IntoActiveModel, Iterable, ModelTrait,
};

/// Rows per statement: a whole batch (`store.max_batch`, 500) in one; the widest row keeps
/// that under SQLite's 32,766 parameters.
const CHUNK: usize = 500;

/// One row to write: as the batch leaves it, and as it was read (none for a new row).
pub struct RowWrite<M> {
    pub after: M,
    pub before: Option<M>,
}

/// Writes `rows` of entity `E`. New rows are inserted whole; a row that exists is upserted
/// with its key, the columns that differ from what was read, and `touched` (its update time).
/// Columns in `keep` (the key, the creation time, lease columns) are never updated. Answers
/// how many rows were written.
pub async fn write_rows<E>(
    txn: &DatabaseTransaction,
    rows: Vec<RowWrite<E::Model>>,
    key: E::Column,
    touched: E::Column,
    keep: &[E::Column],
) -> Result<usize, DbErr>
where
    E: EntityTrait,
    E::Model: IntoActiveModel<E::ActiveModel> + Clone,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    let columns: Vec<E::Column> = E::Column::iter().collect();
    let position = |c: &E::Column| {
        columns
            .iter()
            .position(|x| x.as_str() == c.as_str())
            .unwrap_or(usize::MAX)
    };
    let keep: Vec<usize> = keep.iter().map(position).collect();
    let key_at = position(&key);
    let touched_at = position(&touched);
    let written = rows.len();
    let mut whole: Vec<E::Model> = Vec::new();
    // Rows grouped by the set of columns they change: one statement per group and chunk.
    let mut groups: BTreeMap<Vec<usize>, Vec<E::Model>> = BTreeMap::new();
    for row in rows {
        match row.before {
            None => whole.push(row.after),
            Some(before) => {
                let mut changed: Vec<usize> = columns
                    .iter()
                    .enumerate()
                    .filter(|(i, c)| {
                        !keep.contains(i)
                            && *i != touched_at
                            && before.get(**c) != row.after.get(**c)
                    })
                    .map(|(i, _)| i)
                    .collect();
                changed.push(touched_at);
                groups.entry(changed).or_default().push(row.after);
            }
        }
    }
    let update_all: Vec<E::Column> = columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !keep.contains(i))
        .map(|(_, c)| *c)
        .collect();
    for chunk in whole.chunks(CHUNK) {
        let models: Vec<E::ActiveModel> = chunk
            .iter()
            .cloned()
            .map(|m| m.into_active_model().reset_all())
            .collect();
        E::insert_many(models)
            .on_conflict(
                OnConflict::column(key)
                    .update_columns(update_all.clone())
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    for (changed, models) in groups {
        let set: Vec<E::Column> = changed.iter().map(|i| columns[*i]).collect();
        let mut written_columns = vec![columns[key_at]];
        written_columns.extend(set.iter().copied());
        for chunk in models.chunks(CHUNK) {
            let mut insert = Query::insert();
            insert
                .into_table(E::default())
                .columns(written_columns.iter().copied());
            for model in chunk {
                let values: Vec<SimpleExpr> = written_columns
                    .iter()
                    .map(|c| SimpleExpr::Value(model.get(*c)))
                    .collect();
                insert.values_panic(values);
            }
            insert.on_conflict(
                OnConflict::column(key)
                    .update_columns(set.clone())
                    .to_owned(),
            );
            txn.execute(&insert).await?;
        }
    }
    Ok(written)
}
