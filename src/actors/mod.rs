//! The actors and the messages between them.
//!
//! ```text
//! Scheduler --DueJobs--> JobStore --page--> Scheduler --Poll--> SparkPoller (one of the pool)
//! SparkPoller --asks--> backend (crate::backend) --Observation--> SparkPoller --Write--> JobStore
//! SparkPoller --PollSettled (once durable)--> Scheduler
//! Submitter --DueActions--> JobStore; Submitter --BeginAttempt (durable)--> create on Spark
//!   --AttemptSubmitted--> JobStore (then polled like any job)
//! KafkaListener --Write(event)--> JobStore --durable--> KafkaListener (stores the offset)
//! ```
//! `JobStore` is the only writer to the database; everything else talks to it through a
//! `crate::store_api::StoreHandle` and waits for the answer that says the change is durable.

mod backlog;
mod batching;
pub mod job_store;
pub mod kafka_listener;
pub mod notifier;
pub mod polling;
pub mod scheduler;
pub mod spark_poller;
mod store_health;
pub mod submitter;
pub mod supervision;

pub use job_store::{JobStore, StoreHealth};
#[cfg(feature = "fault-injection")]
pub use supervision::{Crash, Stall};
