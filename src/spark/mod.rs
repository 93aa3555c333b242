//! Spark's standalone REST API and web UIs as typed calls: driver status, the failure reason
//! from the worker's log, real progress from the driver's UI, kill. No actor code here.

mod client;
pub mod driver_ui;

pub use client::{compose_reason, DriverStatus, SparkClient, SparkError};
pub use driver_ui::DriverUi;
