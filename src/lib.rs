//! jobwarden: supervises Spark and enrichment batch jobs and keeps their database rows true.

pub mod actors;
pub mod allocator;
pub mod analytics;
pub mod backend;
pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod error_text;
pub mod events;
pub mod health;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod notify;
pub mod startup;
pub mod store;
pub mod store_api;
pub mod telemetry;
