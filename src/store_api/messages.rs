//! The messages the JobStore actor answers, and its errors. Callers use them through
//! [`StoreHandle`](super::StoreHandle) rather than one by one.

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::changes::{OpError, WriteOp, WriteOutcome};

/// Why a request to the store did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The change itself was refused; retrying it will not help.
    #[error(transparent)]
    Refused(#[from] OpError),
    /// A read failed (writes are retried, reads are not).
    #[error("database read failed: {0}")]
    Read(String),
    /// The store stopped before it could answer: the change may or may not be durable, so the
    /// sender must treat it as not done.
    #[error("the job store is gone: {0}")]
    Gone(String),
}

impl From<MailboxError> for StoreError {
    fn from(e: MailboxError) -> Self {
        StoreError::Gone(e.to_string())
    }
}

/// Make one change durable.
#[derive(Message, Debug)]
#[rtype(result = "Result<WriteOutcome, StoreError>")]
pub struct Write(pub WriteOp);

/// The lease a poll was dispatched under: its result is written only if this instance still
/// holds that lease with that token (a paused instance that wakes up cannot overwrite what
/// the instance that took over has written since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub bucket: u16,
    pub token: i64,
}

/// An execution the scheduler should ask its backend about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueExecution {
    pub execution_id: String,
    pub submission_id: String,
    /// The Spark cluster it runs on; none is the default one.
    pub cluster: Option<String>,
    /// Present when several instances share the database.
    pub fence: Option<Fence>,
    /// When the poll cycle that found it due began: a master listing asked for since then
    /// is as fresh as this cycle needs, however long the cycle runs.
    pub cycle_started: Option<DateTime<Utc>>,
    /// The row as the page read it; `None` when unknown (the poll is then always written).
    pub seen: Option<crate::domain::Seen>,
}

/// One page of due executions: those of this instance's share, and where the page ended in
/// the whole table (the next page starts after `last`; `full` says there may be more).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DuePage {
    pub jobs: Vec<DueExecution>,
    pub last: Option<String>,
    pub full: bool,
}

/// Make one change durable, only if the lease it was made under still holds.
#[derive(Message, Debug)]
#[rtype(result = "Result<WriteOutcome, StoreError>")]
pub struct FencedWrite {
    pub op: WriteOp,
    pub fence: Fence,
}

/// The oldest outbox messages waiting for delivery, at most `per_channel` of each channel
/// (none on an instance that does not lead).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<OutboxRow>, StoreError>")]
pub struct PendingNotifications {
    pub per_channel: u64,
}

/// One outbox message for one channel.
pub type OutboxRow = entity::jobwarden_outbox::Model;

/// One page of executions due for a poll, in execution id order.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<DuePage, StoreError>")]
pub struct DueJobs {
    pub now: DateTime<Utc>,
    /// Only jobs not polled since this instant (the start of the current poll cycle).
    pub polled_before: DateTime<Utc>,
    /// Only ids after this one: the last id of the previous page of the same cycle.
    pub after: Option<String>,
    pub limit: u64,
}

/// Resolves once every change accepted so far is durable (used at shutdown).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Drain;

/// Apply the timeout rules as of `now`; answers how many jobs were failed.
#[derive(Message, Debug)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct SweepTimeouts {
    pub now: DateTime<Utc>,
}

/// A snapshot of the store's counters.
#[derive(Message, Debug)]
#[rtype(result = "StoreStats")]
pub struct GetStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, MessageResponse)]
pub struct StoreStats {
    pub transactions: u64,
    pub changes: u64,
    pub retries: u64,
    pub largest_batch: usize,
    /// Most batches that were being written at the same moment.
    pub most_in_flight: usize,
    pub pending: usize,
    pub database_up: bool,
}

/// Something the Submitter must do for one job.
#[derive(Debug, Clone, PartialEq)]
pub struct DueAction {
    pub execution_id: String,
    /// The Spark cluster it runs on; none is the default one.
    pub cluster: Option<String>,
    pub kind: ActionKind,
    /// Present when several instances share the database.
    pub fence: Option<Fence>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    /// Submit attempt `attempt` (after killing `kill_first`, a timed-out attempt's driver).
    Submit {
        attempt: u32,
        spec: crate::domain::SubmitSpec,
        name: Option<String>,
        kill_first: Option<String>,
        /// The clusters it may be placed on (the default one as `None`).
        clusters: Vec<Option<String>>,
    },
    /// Attempt `attempt` was requested but its driver never recorded (jobwarden stopped, or
    /// the answer was lost): find the driver carrying `mark`, or prove there is none.
    Reconcile {
        attempt: u32,
        mark: String,
        requested_at: DateTime<Utc>,
        spec: crate::domain::SubmitSpec,
    },
    /// A cancel was asked for: kill this driver.
    Kill { submission_id: String },
    /// A parent of this waiting job ended: it is to look at its parents.
    Release,
    /// The row's spec cannot be read: the job cannot be submitted.
    Unusable { reason: String },
}

/// The actions due now (of this instance's share).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<DueAction>, StoreError>")]
pub struct DueActions {
    pub now: DateTime<Utc>,
    pub limit: u64,
}

/// Puts failed notifications back in the outbox, each with a fresh `give_up_after`: those
/// that failed at or after `since` (every one when absent), of `channel` (every channel when
/// absent). Answers how many were put back.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct ResendFailed {
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub channel: Option<String>,
    pub now: chrono::DateTime<chrono::Utc>,
}

impl ResendFailed {
    /// `since` as an operator writes it: an RFC 3339 instant, or a duration ago ("2h").
    pub fn since_from(
        text: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<chrono::DateTime<chrono::Utc>, String> {
        let text = text.trim();
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
            return Ok(at.with_timezone(&chrono::Utc));
        }
        humantime::parse_duration(text)
            .ok()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| now.checked_sub_signed(d))
            .ok_or_else(|| {
                format!("since {text:?} is neither an RFC 3339 instant (2026-12-01T08:00:00Z) nor a duration ago (\"2h\")")
            })
    }
}
