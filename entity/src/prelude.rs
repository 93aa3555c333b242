//! The entities under short names.

pub use super::dead_letters::Entity as DeadLetters;
pub use super::job_status_history::Entity as JobStatusHistory;
pub use super::jobwarden_capacity_gates::Entity as JobwardenCapacityGates;
pub use super::jobwarden_instances::Entity as JobwardenInstances;
pub use super::jobwarden_leases::Entity as JobwardenLeases;
pub use super::jobwarden_outbox::Entity as JobwardenOutbox;
pub use super::spark_job_attempts::Entity as SparkJobAttempts;
pub use super::spark_job_dependencies::Entity as SparkJobDependencies;
pub use super::spark_job_executions::Entity as SparkJobExecutions;
pub use super::transformation_job_queue::Entity as TransformationJobQueue;
