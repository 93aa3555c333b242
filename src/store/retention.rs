//! Deleting what `[retention]` no longer keeps. History, dead letters, outbox rows and attempts
//! are walked oldest first along their generated keys (which follow time), a bounded page per
//! statement, stopping at the first row young enough to keep: no scan of what stays, and no
//! statement that holds many locks for long. Each delete re-checks its condition, so a row
//! that changed since it was read (a retried job, an attempt that started again) stays.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select, TransactionTrait,
};

use entity::{
    dead_letters, job_status_history as history, jobwarden_outbox as outbox,
    spark_job_attempts as attempts, spark_job_executions as executions,
    transformation_job_queue as queue,
};

use crate::config::RetentionSettings;
use crate::domain::{JobStatus, Lifecycle, QueueStatus};

use super::outbox::DELIVERED;

/// What ages out, table by table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aged {
    History,
    DeadLetters,
    DeliveredNotifications,
    FinishedAttempts,
    FinishedJobs,
}

impl Aged {
    pub const ALL: [Aged; 5] = [
        Aged::History,
        Aged::DeadLetters,
        Aged::DeliveredNotifications,
        Aged::FinishedAttempts,
        Aged::FinishedJobs,
    ];

    /// The `[retention]` key, also the metric's label.
    pub fn name(self) -> &'static str {
        match self {
            Aged::History => "history",
            Aged::DeadLetters => "dead_letters",
            Aged::DeliveredNotifications => "delivered_notifications",
            Aged::FinishedAttempts => "finished_attempts",
            Aged::FinishedJobs => "finished_jobs",
        }
    }
}

/// The instant before which each kind of record goes, for a prune at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cutoffs {
    history: Option<DateTime<Utc>>,
    dead_letters: Option<DateTime<Utc>>,
    delivered_notifications: Option<DateTime<Utc>>,
    finished_attempts: Option<DateTime<Utc>>,
    finished_jobs: Option<DateTime<Utc>>,
}

impl Cutoffs {
    /// `own_jobs`: whether the job rows are jobwarden's own (an application's mapped rows are
    /// never deleted).
    pub fn at(settings: &RetentionSettings, now: DateTime<Utc>, own_jobs: bool) -> Cutoffs {
        let before = |keep: crate::config::KeepFor| {
            keep.0
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .and_then(|d| now.checked_sub_signed(d))
        };
        Cutoffs {
            history: before(settings.history),
            dead_letters: before(settings.dead_letters),
            delivered_notifications: before(settings.delivered_notifications),
            finished_attempts: before(settings.finished_attempts),
            finished_jobs: before(settings.finished_jobs).filter(|_| own_jobs),
        }
    }

    pub fn of(&self, aged: Aged) -> Option<DateTime<Utc>> {
        match aged {
            Aged::History => self.history,
            Aged::DeadLetters => self.dead_letters,
            Aged::DeliveredNotifications => self.delivered_notifications,
            Aged::FinishedAttempts => self.finished_attempts,
            Aged::FinishedJobs => self.finished_jobs,
        }
    }
}

/// An outbox row as the walk reads it: key, creation, state, when it was settled.
type OutboxAge = (i64, DateTime<Utc>, String, Option<DateTime<Utc>>);

/// Where a table's walk stands after one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub deleted: u64,
    /// The last key looked at; the next batch starts after it.
    pub after: i64,
    /// Nothing older than the cutoff is left to look at.
    pub done: bool,
}

/// One table of jobs, as retention sees it: the key, the columns that say a job has finished
/// and since when, and the kind its history rows are filed under.
struct JobTable<E: EntityTrait> {
    key: E::Column,
    status: E::Column,
    completed_at: E::Column,
    finished: Vec<&'static str>,
    kind: &'static str,
}

fn spark_jobs() -> JobTable<executions::Entity> {
    JobTable {
        key: executions::Column::ExecutionId,
        status: executions::Column::Status,
        completed_at: executions::Column::CompletedAt,
        finished: JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(JobStatus::as_str)
            .collect(),
        kind: super::changes::SPARK,
    }
}

fn queue_jobs() -> JobTable<queue::Entity> {
    JobTable {
        key: queue::Column::JobId,
        status: queue::Column::Status,
        completed_at: queue::Column::CompletedAt,
        finished: QueueStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(QueueStatus::as_str)
            .collect(),
        kind: super::changes::QUEUE,
    }
}

impl<E: EntityTrait> JobTable<E> {
    /// The jobs that finished before `cutoff`.
    fn aged(&self, cutoff: DateTime<Utc>) -> Select<E> {
        E::find()
            .filter(self.status.is_in(self.finished.clone()))
            .filter(self.completed_at.lt(cutoff))
    }

    /// Up to `batch` keys of jobs that finished before `cutoff`.
    async fn aged_keys(
        &self,
        db: &impl ConnectionTrait,
        cutoff: DateTime<Utc>,
        batch: u64,
    ) -> Result<Vec<String>, DbErr> {
        self.aged(cutoff)
            .select_only()
            .column(self.key)
            .limit(batch)
            .into_tuple()
            .all(db)
            .await
    }

    /// Deletes the jobs of `keys` that are still finished and old, with their history; the
    /// rows are locked first, so a job retried since the read is running again and stays.
    /// `before` deletes what else belongs to the jobs that go, ahead of their rows.
    async fn delete_aged<'a, F, Fut>(
        &self,
        txn: &'a DatabaseTransaction,
        keys: Vec<String>,
        cutoff: DateTime<Utc>,
        before: F,
    ) -> Result<u64, DbErr>
    where
        F: FnOnce(&'a DatabaseTransaction, Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<(), DbErr>>,
    {
        if keys.is_empty() {
            return Ok(0);
        }
        let gone: Vec<String> = self
            .aged(cutoff)
            .select_only()
            .column(self.key)
            .filter(self.key.is_in(keys))
            .lock_exclusive()
            .into_tuple()
            .all(txn)
            .await?;
        if gone.is_empty() {
            return Ok(0);
        }
        history::Entity::delete_many()
            .filter(history::Column::JobKind.eq(self.kind))
            .filter(history::Column::JobId.is_in(gone.clone()))
            .exec(txn)
            .await?;
        before(txn, gone.clone()).await?;
        Ok(E::delete_many()
            .filter(self.key.is_in(gone))
            .exec(txn)
            .await?
            .rows_affected)
    }
}

/// How many rows a prune at these cutoffs would delete now (for `prune --dry-run`).
pub async fn count(
    db: &DatabaseConnection,
    aged: Aged,
    cutoff: DateTime<Utc>,
) -> Result<u64, DbErr> {
    match aged {
        Aged::History => {
            history::Entity::find()
                .filter(history::Column::At.lt(cutoff))
                .count(db)
                .await
        }
        Aged::DeadLetters => {
            dead_letters::Entity::find()
                .filter(dead_letters::Column::ReceivedAt.lt(cutoff))
                .count(db)
                .await
        }
        Aged::DeliveredNotifications => {
            outbox::Entity::find()
                .filter(outbox::Column::State.eq(DELIVERED))
                .filter(outbox::Column::FinishedAt.lt(cutoff))
                .count(db)
                .await
        }
        Aged::FinishedAttempts => {
            attempts::Entity::find()
                .filter(attempts::Column::EndedAt.lt(cutoff))
                .count(db)
                .await
        }
        Aged::FinishedJobs => {
            let spark = spark_jobs().aged(cutoff).count(db).await?;
            let queued = queue_jobs().aged(cutoff).count(db).await?;
            Ok(spark + queued)
        }
    }
}

/// The rows of one page that go, and where the walk stands: a row as young as the cutoff
/// ends it (the rows after it are younger still).
fn judge_page(
    page: &[(i64, DateTime<Utc>, bool)],
    cutoff: DateTime<Utc>,
    batch: u64,
    after: i64,
) -> (Vec<i64>, Step) {
    let young = page.iter().position(|&(_, age, _)| age >= cutoff);
    let old = &page[..young.unwrap_or(page.len())];
    let gone: Vec<i64> = old.iter().filter(|r| r.2).map(|r| r.0).collect();
    let step = Step {
        deleted: gone.len() as u64,
        after: old.last().map_or(after, |r| r.0),
        done: young.is_some() || (page.len() as u64) < batch,
    };
    (gone, step)
}

/// The next `batch` rows of a table walked along its generated `key`, after `after`: the key
/// and `columns`, in key order.
fn page_after<E: EntityTrait>(
    key: E::Column,
    columns: impl IntoIterator<Item = E::Column>,
    after: i64,
    batch: u64,
) -> Select<E> {
    E::find()
        .select_only()
        .column(key)
        .columns(columns)
        .filter(key.gt(after))
        .order_by_asc(key)
        .limit(batch)
}

/// Deletes at most `batch` rows of one kind older than `cutoff`, looking only at keys after
/// `after` (finished jobs ignore it: their rows are found by status, each batch anew).
pub async fn delete_batch(
    db: &DatabaseConnection,
    aged: Aged,
    cutoff: DateTime<Utc>,
    after: i64,
    batch: u64,
) -> Result<Step, DbErr> {
    let (ids, mut step) = match aged {
        Aged::History => {
            let page: Vec<(i64, DateTime<Utc>)> = page_after::<history::Entity>(
                history::Column::Id,
                [history::Column::At],
                after,
                batch,
            )
            .into_tuple()
            .all(db)
            .await?;
            let page: Vec<_> = page.into_iter().map(|(id, at)| (id, at, true)).collect();
            judge_page(&page, cutoff, batch, after)
        }
        Aged::DeadLetters => {
            let page: Vec<(i64, DateTime<Utc>)> = page_after::<dead_letters::Entity>(
                dead_letters::Column::Id,
                [dead_letters::Column::ReceivedAt],
                after,
                batch,
            )
            .into_tuple()
            .all(db)
            .await?;
            let page: Vec<_> = page.into_iter().map(|(id, at)| (id, at, true)).collect();
            judge_page(&page, cutoff, batch, after)
        }
        Aged::DeliveredNotifications => {
            let page: Vec<OutboxAge> = page_after::<outbox::Entity>(
                outbox::Column::Id,
                [
                    outbox::Column::CreatedAt,
                    outbox::Column::State,
                    outbox::Column::FinishedAt,
                ],
                after,
                batch,
            )
            .into_tuple()
            .all(db)
            .await?;
            let page: Vec<_> = page
                .into_iter()
                .map(|(id, created, state, finished)| {
                    let gone = state == DELIVERED && finished.is_some_and(|f| f < cutoff);
                    (id, created, gone)
                })
                .collect();
            judge_page(&page, cutoff, batch, after)
        }
        Aged::FinishedAttempts => {
            let page: Vec<(i64, DateTime<Utc>, Option<DateTime<Utc>>)> =
                page_after::<attempts::Entity>(
                    attempts::Column::Id,
                    [attempts::Column::RequestedAt, attempts::Column::EndedAt],
                    after,
                    batch,
                )
                .into_tuple()
                .all(db)
                .await?;
            let page: Vec<_> = page
                .into_iter()
                .map(|(id, requested, ended)| (id, requested, ended.is_some_and(|e| e < cutoff)))
                .collect();
            judge_page(&page, cutoff, batch, after)
        }
        Aged::FinishedJobs => return delete_finished_jobs(db, cutoff, batch).await,
    };
    if ids.is_empty() {
        return Ok(step);
    }
    let deleted = match aged {
        Aged::History => {
            history::Entity::delete_many()
                .filter(history::Column::Id.is_in(ids))
                .exec(db)
                .await?
        }
        Aged::DeadLetters => {
            dead_letters::Entity::delete_many()
                .filter(dead_letters::Column::Id.is_in(ids))
                .exec(db)
                .await?
        }
        Aged::DeliveredNotifications => {
            outbox::Entity::delete_many()
                .filter(outbox::Column::Id.is_in(ids))
                .filter(outbox::Column::State.eq(DELIVERED))
                .exec(db)
                .await?
        }
        Aged::FinishedAttempts => {
            attempts::Entity::delete_many()
                .filter(attempts::Column::Id.is_in(ids))
                .filter(attempts::Column::EndedAt.lt(cutoff))
                .exec(db)
                .await?
        }
        Aged::FinishedJobs => unreachable!("returned above"),
    };
    step.deleted = deleted.rows_affected;
    Ok(step)
}

/// Finished jobs with all that belongs to them, each batch in one transaction: a job is gone
/// whole or not at all.
async fn delete_finished_jobs(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    batch: u64,
) -> Result<Step, DbErr> {
    let (spark, queue) = (spark_jobs(), queue_jobs());
    let spark_keys = spark.aged_keys(db, cutoff, batch).await?;
    let queue_keys = queue.aged_keys(db, cutoff, batch).await?;
    let done = (spark_keys.len() as u64) < batch && (queue_keys.len() as u64) < batch;
    let txn = db.begin().await?;
    let mut deleted = spark
        .delete_aged(&txn, spark_keys, cutoff, |txn, gone| async move {
            attempts::Entity::delete_many()
                .filter(attempts::Column::ExecutionId.is_in(gone))
                .exec(txn)
                .await
                .map(drop)
        })
        .await?;
    deleted += queue
        .delete_aged(&txn, queue_keys, cutoff, |_, _| async { Ok(()) })
        .await?;
    txn.commit().await?;
    Ok(Step {
        deleted,
        after: 0,
        done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn a_page_goes_up_to_the_first_row_young_enough_to_keep() {
        let page = [
            (1, at(10), true),
            (2, at(20), false),
            (3, at(30), true),
            (4, at(100), true),
            (5, at(40), true),
        ];
        let (gone, step) = judge_page(&page, at(50), 10, 0);
        assert_eq!(gone, vec![1, 3]);
        assert_eq!(
            step,
            Step {
                deleted: 2,
                after: 3,
                done: true
            }
        );
    }

    #[test]
    fn a_full_page_of_old_rows_asks_for_another() {
        let page = [(7, at(10), true), (8, at(11), true)];
        let (gone, step) = judge_page(&page, at(50), 2, 6);
        assert_eq!(gone, vec![7, 8]);
        assert_eq!(
            step,
            Step {
                deleted: 2,
                after: 8,
                done: false
            }
        );
    }

    #[test]
    fn an_empty_page_ends_the_walk_where_it_was() {
        let (gone, step) = judge_page(&[], at(50), 2, 6);
        assert!(gone.is_empty());
        assert_eq!(
            step,
            Step {
                deleted: 0,
                after: 6,
                done: true
            }
        );
    }

    #[test]
    fn mapped_job_rows_never_age_out() {
        let settings = RetentionSettings {
            finished_jobs: crate::config::KeepFor::days(1),
            ..RetentionSettings::default()
        };
        assert!(Cutoffs::at(&settings, Utc::now(), true)
            .of(Aged::FinishedJobs)
            .is_some());
        assert!(Cutoffs::at(&settings, Utc::now(), false)
            .of(Aged::FinishedJobs)
            .is_none());
    }
}
