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

/// An execution the scheduler should ask its backend about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueExecution {
    pub execution_id: String,
    pub submission_id: String,
}

/// One page of executions due for a poll, in execution id order.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<DueExecution>, StoreError>")]
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
    pub pending: usize,
    pub database_up: bool,
}
