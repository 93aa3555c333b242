//! What one batch changes, gathered in memory before its single write-out, and what every
//! rule's application in the store shares: the rows as loaded, the history row of a
//! transition, the job kinds, the domain rules given at start.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{
    job_status_history as history, spark_job_attempts as attempts,
    spark_job_executions as executions, transformation_job_queue as queue,
};
use sea_orm::ActiveValue::{NotSet, Set};

use crate::config::SparkSettings;
use crate::domain::{HistoryEntry, PollPolicy, TimeoutPolicy};
use crate::store_api::{Attempt, NewDeadLetter, Source};

use super::mapped::{AppExecution, AppQueueJob};
use super::outbox;

pub(super) const SPARK: &str = "spark";
pub(super) const QUEUE: &str = "queue";

/// The domain policies the store applies changes with, given once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub poll: PollPolicy,
    pub timeouts: TimeoutPolicy,
    /// For jobs jobwarden submits: the configured retry policy (a spec may override it).
    pub retry: crate::domain::RetryPolicy,
    /// Each cluster's `max_running` (the default cluster under `None`); absent: no limit.
    pub capacity: HashMap<Option<String>, u64>,
    /// The head start one priority point gives in the submission queue (`submit.aging`).
    pub aging: std::time::Duration,
}

impl Rules {
    /// The policies `[spark]` configures, with `[submit]`'s default retry policy.
    pub fn from_settings(spark: &SparkSettings) -> Rules {
        Rules {
            poll: spark.poll_policy(),
            timeouts: spark.timeout_policy(),
            retry: crate::config::SubmitSettings::default().retry_policy(),
            capacity: spark.capacities(),
            aging: crate::config::SubmitSettings::default().aging,
        }
    }

    /// The retry policy and the queue's aging `[submit]` configures.
    pub fn with_submit(self, submit: &crate::config::SubmitSettings) -> Rules {
        let mut rules = self.with_retry(submit.retry_policy());
        rules.aging = submit.aging;
        rules
    }

    pub fn with_retry(mut self, retry: crate::domain::RetryPolicy) -> Rules {
        self.retry = retry;
        self
    }
}

pub(super) struct Loaded<M> {
    pub(super) row: M,
    pub(super) dirty: bool,
    /// The row as this batch read it from the table (none for a row the batch creates): the
    /// write-out sends only the columns that differ from it.
    pub(super) as_read: Option<M>,
}

impl<M: Clone> Loaded<M> {
    /// A row as read from its table, unchanged so far.
    pub(super) fn read(row: M) -> Loaded<M> {
        Loaded {
            as_read: Some(row.clone()),
            row,
            dirty: false,
        }
    }

    /// A row this batch creates: written whole.
    pub(super) fn created(row: M) -> Loaded<M> {
        Loaded {
            row,
            dirty: true,
            as_read: None,
        }
    }

    /// Whether the table did not hold this row when the batch read it.
    pub(super) fn is_new(&self) -> bool {
        self.as_read.is_none()
    }
}

/// Everything one batch changes, gathered in memory before a single write-out.
#[derive(Default)]
pub(super) struct Changes {
    pub(super) executions: HashMap<String, Loaded<executions::Model>>,
    pub(super) attempt_writes: Vec<AttemptWrite>,
    pub(super) queue: HashMap<String, Loaded<queue::Model>>,
    pub(super) history: Vec<history::ActiveModel>,
    pub(super) dead_letters: Vec<NewDeadLetter>,
    pub(super) attempts: Vec<Attempt>,
    /// Warnings that hold, to be sent once per run.
    pub(super) warnings: Vec<outbox::Warned>,
    /// Executions a warning may no longer hold for: they ended, or Spark confirms them again.
    pub(super) settled: std::collections::HashSet<String>,
    /// Mapped application rows as loaded: what their columns hold before this batch.
    pub(super) app_executions: HashMap<String, AppExecution>,
    pub(super) app_queue: HashMap<String, AppQueueJob>,
    /// Application rows whose mapped values jobwarden cannot read, with the reason.
    pub(super) unreadable: HashMap<String, String>,
    /// Of the ids a relaunched driver may have become, those another row already tracks.
    pub(super) tracked_successors: std::collections::HashSet<String>,
    /// New queue rows were inserted as placeholders when the batch loaded (MySQL/MariaDB).
    pub(super) queue_placeholders: bool,
    /// Dependencies: parents as read, the waiting children's rows, and what to write.
    pub(super) ordering: super::ordering::Ordering,
}

/// A change to the attempts table, written with the batch.
pub(super) enum AttemptWrite {
    Insert(attempts::ActiveModel),
    Update {
        execution_id: String,
        attempt: i32,
        patch: Patch,
    },
    Delete {
        execution_id: String,
        attempt: i32,
    },
}

/// The columns an update sets; `None` leaves a column as it is.
#[derive(Default)]
pub(super) struct Patch {
    pub(super) state: Option<&'static str>,
    pub(super) submission_id: Option<String>,
    pub(super) submitted_at: Option<DateTime<Utc>>,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) ended_at: Option<DateTime<Utc>>,
    pub(super) outcome: Option<String>,
    pub(super) reason: Option<String>,
}

pub(super) fn history_row(
    kind: &str,
    job_id: &str,
    entry: &HistoryEntry,
    source: Source,
) -> history::ActiveModel {
    history::ActiveModel {
        id: NotSet,
        job_kind: Set(kind.to_owned()),
        job_id: Set(job_id.to_owned()),
        from_status: Set(entry.from.map(|s| s.as_str().to_owned())),
        to_status: Set(entry.to.as_str().to_owned()),
        source: Set(source.as_str().to_owned()),
        detail: Set(entry.detail.clone()),
        at: Set(entry.at),
    }
}

/// The history row of a queue job's transition.
pub(super) fn queue_history(
    job_id: &str,
    from: crate::domain::QueueStatus,
    to: crate::domain::QueueStatus,
    source: Source,
    detail: Option<String>,
    at: DateTime<Utc>,
) -> history::ActiveModel {
    history::ActiveModel {
        id: NotSet,
        job_kind: Set(QUEUE.to_owned()),
        job_id: Set(job_id.to_owned()),
        from_status: Set(Some(from.as_str().to_owned())),
        to_status: Set(to.as_str().to_owned()),
        source: Set(source.as_str().to_owned()),
        detail: Set(detail),
        at: Set(at),
    }
}
