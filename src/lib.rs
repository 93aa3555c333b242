//! jobwarden: supervises Spark and enrichment batch jobs and keeps their database rows true.

pub mod actors;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod spark;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod testkit;
