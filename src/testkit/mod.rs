//! Servers that speak the protocols jobwarden talks to, on loopback, for tests and benchmarks.

pub mod spark_server;

pub use spark_server::{Answer, SparkServer};
