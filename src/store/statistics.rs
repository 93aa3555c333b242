//! Keeps PostgreSQL's statistics of jobwarden's own tables current while they grow fast.
//!
//! The store's statements are prepared once per connection, and PostgreSQL settles on one
//! generic plan per statement after a few runs. A statement first run while its table was
//! nearly empty keeps the plan made then, a scan of the whole table, until the table's
//! statistics change; autovacuum may take a minute or more to get there, and meanwhile every
//! batch reads every row (measured: 1,300 status changes/s instead of 24,000 over 30,000 fresh
//! rows), or forever where autovacuum is off. So when the rows the store inserted into a table
//! reach 1,000, 10,000 and 100,000, it looks at the row count the planner believes in, and
//! analyzes the table if that is under half of what it added itself. Once the statistics say a
//! table holds thousands of rows, a lookup of a batch's keys plans as an index scan and stays
//! one as the table grows, so at most three ANALYZEs per table over a process's life (on a big
//! table one can take a second of the server's time, hence the check first).

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, Statement};

use super::Inserted;

/// New rows at which a table is analyzed: below the first a whole-table scan costs little.
const ANALYZE_AT: [usize; 3] = [1_000, 10_000, 100_000];

/// jobwarden's tables that grow with the fleet and are read by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Executions,
    Queue,
    History,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Executions => "spark_job_executions",
            Table::Queue => "transformation_job_queue",
            Table::History => "job_status_history",
        }
    }
}

/// Rows inserted per table since the process started, and how many of `ANALYZE_AT` each
/// has passed.
#[derive(Debug)]
pub struct Growth {
    tables: [(Table, usize, usize); 3],
}

impl Default for Growth {
    fn default() -> Self {
        Growth {
            tables: [
                (Table::Executions, 0, 0),
                (Table::Queue, 0, 0),
                (Table::History, 0, 0),
            ],
        }
    }
}

impl Growth {
    /// Counts a committed batch's new rows; returns the tables due for a look at their
    /// statistics now, each with the rows inserted into it so far.
    pub fn note(&mut self, inserted: Inserted) -> Vec<(Table, usize)> {
        let mut due = Vec::new();
        for (table, count, passed) in &mut self.tables {
            *count += match table {
                Table::Executions => inserted.executions,
                Table::Queue => inserted.queue,
                Table::History => inserted.history,
            };
            let reached = ANALYZE_AT.iter().filter(|&&at| *count >= at).count();
            if reached > *passed {
                *passed = reached;
                due.push((*table, *count));
            }
        }
        due
    }
}

/// Refreshes `table`'s statistics if the planner believes it holds fewer than half of the
/// `inserted` rows this process added (a new statistic also makes every connection plan its
/// statements on the table afresh). `Ok(true)` when it analyzed.
pub async fn refresh_if_stale(
    db: &DatabaseConnection,
    table: Table,
    inserted: usize,
) -> Result<bool, DbErr> {
    let believed = db
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            format!(
                "SELECT reltuples::float8 AS n FROM pg_class WHERE oid = to_regclass('{}')",
                table.name()
            ),
        ))
        .await?
        .map(|row| row.try_get::<f64>("", "n"))
        .transpose()?
        // -1: never analyzed.
        .unwrap_or(-1.0);
    if believed >= inserted as f64 / 2.0 {
        return Ok(false);
    }
    db.execute_unprepared(&format!("ANALYZE {}", table.name()))
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executions(n: usize) -> Inserted {
        Inserted {
            executions: n,
            ..Inserted::default()
        }
    }

    #[test]
    fn a_table_is_analyzed_at_a_thousand_ten_thousand_and_a_hundred_thousand_new_rows() {
        let mut growth = Growth::default();
        assert!(growth.note(executions(999)).is_empty());
        assert_eq!(growth.note(executions(1)).len(), 1);
        assert!(growth.note(executions(8_999)).is_empty());
        assert_eq!(growth.note(executions(1)).len(), 1);
        assert!(growth.note(executions(89_999)).is_empty());
        assert_eq!(growth.note(executions(1)).len(), 1);
        assert!(
            growth.note(executions(1_000_000)).is_empty(),
            "then never again"
        );
    }

    #[test]
    fn a_batch_passing_two_marks_at_once_analyzes_once() {
        let mut growth = Growth::default();
        assert_eq!(
            growth.note(executions(20_000)),
            [(Table::Executions, 20_000)]
        );
        assert!(growth.note(executions(20_000)).is_empty());
    }

    #[test]
    fn tables_are_counted_apart() {
        let mut growth = Growth::default();
        let due = growth.note(Inserted {
            executions: 10,
            queue: 1_000,
            history: 1_010,
        });
        assert_eq!(due, [(Table::Queue, 1_000), (Table::History, 1_010)]);
    }
}
