//! Spark standalone: a master's REST submission server for a driver's state, the worker's log
//! for why a driver failed, and the driver's own UI for real progress.

mod client;
mod driver_ui;
mod observe;
mod state;
mod worker_page;

pub use client::{compose_reason, DriverStatus, SparkClient, SparkError, SparkSetupError};
pub use driver_ui::{parse_driver_ui, progress_of, DriverUi, UiJob};
pub use observe::SparkStandalone;
pub use state::{failure_line, DriverState};
