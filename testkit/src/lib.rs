//! Servers and clients that speak the protocols jobwarden talks to, on loopback, and the real
//! `jobwarden` executable started the one way its tests and benchmarks need, for those tests
//! and benchmarks. Nothing here is part of the service.

pub mod fuzz;
pub mod kafka;
pub mod process;
pub mod spark_server;

pub use spark_server::{Answer, SparkServer};
