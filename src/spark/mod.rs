//! Spark's standalone REST API as typed calls: driver status, the failure reason from the
//! worker's log, kill. No actor code here.

mod client;

pub use client::{DriverStatus, SparkClient, SparkError};
