//! sea-orm entities: one module per table, plain data, no logic.

pub mod dead_letters;
pub mod job_status_history;
pub mod jobwarden_capacity_gates;
pub mod jobwarden_instances;
pub mod jobwarden_leases;
pub mod jobwarden_outbox;
pub mod prelude;
pub mod spark_job_attempts;
pub mod spark_job_dependencies;
pub mod spark_job_executions;
pub mod transformation_job_queue;
