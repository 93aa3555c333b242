//! jobwarden's schema changes, in order. The service runs pending ones at start;
//! `jobwarden migrate` runs them alone.

pub use sea_orm_migration::prelude::*;

mod columns;
mod m20261128_000001_create_spark_job_executions;
mod m20261128_000002_create_transformation_job_queue;
mod m20261128_000003_create_job_status_history;
mod m20261128_000004_create_dead_letters;
mod m20261129_000005_add_failing_since;
mod m20261129_000006_create_leases;
mod m20261129_000007_add_cluster;
mod m20261129_000008_create_notification_outbox;
mod m20261129_000009_create_attempts;
mod m20261207_000010_add_ordering;
mod m20261207_000011_add_due_page_index;

pub use m20261129_000006_create_leases::BUCKETS;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_create_spark_job_executions::Migration),
            Box::new(m20261128_000002_create_transformation_job_queue::Migration),
            Box::new(m20261128_000003_create_job_status_history::Migration),
            Box::new(m20261128_000004_create_dead_letters::Migration),
            Box::new(m20261129_000005_add_failing_since::Migration),
            Box::new(m20261129_000006_create_leases::Migration),
            Box::new(m20261129_000007_add_cluster::Migration),
            Box::new(m20261129_000008_create_notification_outbox::Migration),
            Box::new(m20261129_000009_create_attempts::Migration),
            Box::new(m20261207_000010_add_ordering::Migration),
            Box::new(m20261207_000011_add_due_page_index::Migration),
        ]
    }
}
