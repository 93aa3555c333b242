//! jobwarden's integration tests: one binary, real databases, the real `jobwarden` executable.

mod attempts;
mod binary;
mod clusters;
mod dashboard;
mod helpers;
mod instances;
mod instances_kafka;
mod kafka;
mod kafka_e2e;
mod mapped;
mod mapped_e2e;
mod notification_channels;
mod notifications;
mod operating;
mod own_cluster;
mod readiness;
mod real_spark;
mod real_spark35;
mod real_spark_ha;
mod real_spark_restarts;
mod spark;
mod start_failures;
mod store;
mod submit;
mod upgrades;
mod warnings;
