//! Servers and clients that speak the protocols jobwarden talks to, on loopback, for its tests
//! and benchmarks. Nothing here is part of the service.

pub mod fuzz;
pub mod kafka;
pub mod spark_server;

pub use spark_server::{Answer, SparkServer};
