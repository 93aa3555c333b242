//! Servers and clients that speak the protocols jobwarden talks to, on loopback, and the real
//! `jobwarden` executable started the one way its tests and benchmarks need, for those tests
//! and benchmarks. Nothing here is part of the service.

pub mod fuzz;
pub mod kafka;
pub mod process;
pub mod receiver;
pub mod spark_server;
pub mod tansu;

pub use spark_server::{Answer, SparkServer};

/// A loopback port nobody listened on a moment ago, for a server that must be told its port
/// before it starts (or that must come back on the same one). Another process may take it in
/// between; the servers here are started right after.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}
