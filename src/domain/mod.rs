//! Pure rules of jobwarden: statuses, the transition table, and how observations, failed
//! polls, timeouts, events, attempts, relaunches, early warnings and an application's own rows
//! change a job. No I/O and no backend's vocabulary here, so every rule is unit-tested by
//! table; the store only loads rows, runs these and persists what they decided.

pub mod application;
pub mod attempt;
pub mod dependency;
pub mod execution;
pub mod placement;
pub mod policy;
pub mod queue_event;
pub mod relaunch;
pub mod status;
pub mod submission;
pub mod timeout;
pub mod warning;

pub use execution::{Applied, Effect, ExecutionState, HistoryEntry, Observation, Seen};
pub use policy::{poll_backoff, PollPolicy, TimeoutPolicy};
pub use queue_event::{parse_event, EventApplied, EventError, Position, QueueState, StatusEvent};
pub use status::{judge, JobStatus, Lifecycle, QueueStatus, Refusal, UnknownStatus, Verdict};
pub use submission::{
    attempt_mark, Ending, RetryOverrides, RetryPolicy, SpecError, SubmitSpec, MARK_PROPERTY,
};
pub use timeout::timeout_reason;
