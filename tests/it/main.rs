//! jobwarden's integration tests: one binary, real databases, the real `jobwarden` executable.

mod binary;
mod clusters;
mod helpers;
mod instances;
mod instances_kafka;
mod kafka;
mod kafka_e2e;
mod mapped;
mod mapped_e2e;
mod operating;
mod readiness;
mod real_spark;
mod spark;
mod start_failures;
mod store;
