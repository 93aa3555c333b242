//! The actors and the messages between them.
//!
//! ```text
//! Scheduler --tick--> JobStore (due jobs) --> SparkPoller pool --observation--> JobStore
//! KafkaListener --event--> JobStore --durable--> KafkaListener (stores the offset)
//! ```
//! `JobStore` is the only writer to the database; everything else sends it messages and waits
//! for the answer that says the change is durable.

pub mod job_store;
pub mod kafka_listener;
pub mod scheduler;
pub mod spark_poller;
pub mod supervision;

pub use job_store::{
    Drain, DueJobs, GetStats, JobStore, StoreError, StoreHealth, StoreStats, SweepTimeouts, Write,
};
pub use supervision::Crash;
