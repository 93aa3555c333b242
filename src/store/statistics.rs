//! Keeps PostgreSQL's statistics of jobwarden's own tables current while they grow fast.
//!
//! The store's statements are prepared once per connection, and PostgreSQL settles on one
//! generic plan per statement after a few runs. A statement first run while its table was
//! nearly empty keeps the plan made then, a scan of the whole table, until the table's
//! statistics change; autovacuum may take a minute or more to get there, and meanwhile every
//! batch reads every row (measured: 1,300 status changes/s instead of 24,000 over 30,000 fresh
//! rows). So the store analyzes a table itself each time the rows it inserted into it have
//! doubled since the last time: a handful of ANALYZEs over a process's life, each bounded by
//! PostgreSQL's sample size, and a cached plan is never made on less than half the rows the
//! store has added.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

use super::Inserted;

/// Rows a table gains before its first ANALYZE: below this a whole-table scan costs little.
const FIRST_AT: usize = 1_000;

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

/// Rows inserted per table since the process started, and when each is next analyzed.
#[derive(Debug)]
pub struct Growth {
    tables: [(Table, usize, usize); 3],
}

impl Default for Growth {
    fn default() -> Self {
        Growth {
            tables: [
                (Table::Executions, 0, FIRST_AT),
                (Table::Queue, 0, FIRST_AT),
                (Table::History, 0, FIRST_AT),
            ],
        }
    }
}

impl Growth {
    /// Counts a committed batch's new rows; returns the tables that are due for an ANALYZE
    /// now (each is due again once its count has doubled).
    pub fn note(&mut self, inserted: Inserted) -> Vec<Table> {
        let mut due = Vec::new();
        for (table, count, next) in &mut self.tables {
            *count += match table {
                Table::Executions => inserted.executions,
                Table::Queue => inserted.queue,
                Table::History => inserted.history,
            };
            if *count >= *next {
                *next = count.saturating_mul(2);
                due.push(*table);
            }
        }
        due
    }
}

/// Refreshes `table`'s statistics, which also makes every connection plan its statements on
/// the table afresh.
pub async fn analyze(db: &DatabaseConnection, table: Table) -> Result<(), DbErr> {
    db.execute_unprepared(&format!("ANALYZE {}", table.name()))
        .await
        .map(|_| ())
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
    fn a_table_is_analyzed_each_time_its_new_rows_double() {
        let mut growth = Growth::default();
        assert!(growth.note(executions(999)).is_empty());
        assert_eq!(growth.note(executions(1)), [Table::Executions]);
        assert!(growth.note(executions(999)).is_empty());
        assert_eq!(growth.note(executions(1)), [Table::Executions]);
        assert!(growth.note(executions(1_999)).is_empty());
        assert_eq!(growth.note(executions(1)), [Table::Executions]);
    }

    #[test]
    fn tables_are_counted_apart() {
        let mut growth = Growth::default();
        let due = growth.note(Inserted {
            executions: 10,
            queue: 1_000,
            history: 1_010,
        });
        assert_eq!(due, [Table::Queue, Table::History]);
    }
}
