//! `[database]`: where jobwarden keeps its rows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::DatabaseUrl;
use super::validate::{Problems, Validate};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    /// The pool's size; unset, [`DatabaseSettings::pool_size`] picks one for the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a start waits for a database that does not answer before giving up.
    #[serde(with = "humantime_serde")]
    pub startup_wait: Duration,
}

/// The pool's size on SQLite unless set: one connection for the writer (SQLite writes one
/// transaction at a time) and one for the reads beside it. Each SQLite connection holds its
/// own page cache, compiled statements and a worker thread whose malloc arena keeps what it
/// once held: over 100,000 jobs five connections held 46 MB of heap where two held 30 MB, at
/// the same throughput.
pub const SQLITE_POOL: u32 = 2;

/// The pool's size on PostgreSQL and MySQL/MariaDB unless set: two batches in flight
/// (`store.concurrent_batches`) and the reads beside them.
pub const SERVER_POOL: u32 = 5;

impl DatabaseSettings {
    /// Connections the pool may open: `max_connections` where set, else the backend's default.
    pub fn pool_size(&self) -> u32 {
        self.max_connections.unwrap_or_else(|| {
            if self.url.expose().starts_with("sqlite:") {
                SQLITE_POOL
            } else {
                SERVER_POOL
            }
        })
    }
}

impl Validate for DatabaseSettings {
    fn validate(&self, p: &mut Problems) {
        let url = self.url.expose();
        let scheme = url.split("://").next().unwrap_or_default();
        if !url.contains("://")
            || !matches!(
                scheme,
                "sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb"
            )
        {
            p.refuse(
                "database.url",
                format!("{:?}", self.url.masked()),
                "expected a sqlite://, postgres:// or mysql:// URL",
            );
        }
        if self.max_connections == Some(0) {
            p.refuse("database.max_connections", "0", "must be at least 1");
        }
        p.positive("database.connect_timeout", self.connect_timeout);
    }
}
