//! Pure rules of jobwarden: statuses, the transition table, and how observations and events
//! change a job. No I/O here, so every rule is unit-tested exhaustively.

pub mod execution;
pub mod queue_event;
pub mod spark_state;
pub mod status;
pub mod timeout;

pub use execution::{Applied, ExecutionState, Observation};
pub use queue_event::{parse_event, EventApplied, EventError, Position, QueueState, StatusEvent};
pub use spark_state::{failure_line, DriverState};
pub use status::{judge, JobStatus, Lifecycle, QueueStatus, Refusal, UnknownStatus, Verdict};
pub use timeout::{poll_backoff, timeout_reason, TimeoutPolicy};
