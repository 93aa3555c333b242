//! `[store]`: how the JobStore batches and retries its writes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::{human, Problems, Validate};

/// More batches side by side than this only queue for the database's locks and connections.
const MAX_CONCURRENT_BATCHES: usize = 8;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub max_batch: usize,
    /// Batches written side by side on PostgreSQL and MySQL/MariaDB, each in its own
    /// transaction on its own pooled connection (SQLite writes one at a time).
    pub concurrent_batches: usize,
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Readiness fails once the database has refused every change for this long (a column
    /// of a type jobwarden cannot write, a missing permission): each change is refused alone
    /// and retried by its sender, but nothing lands.
    #[serde(with = "humantime_serde")]
    pub refusing_after: Duration,
}

impl Validate for StoreSettings {
    fn validate(&self, p: &mut Problems) {
        if self.max_batch == 0 {
            p.refuse("store.max_batch", "0", "must be at least 1");
        }
        if !(1..=MAX_CONCURRENT_BATCHES).contains(&self.concurrent_batches) {
            p.refuse(
                "store.concurrent_batches",
                self.concurrent_batches.to_string(),
                &format!("must be between 1 and {MAX_CONCURRENT_BATCHES}"),
            );
        }
        p.positive("store.retry_initial", self.retry_initial);
        p.positive("store.retry_max", self.retry_max);
        p.positive("store.sweep_interval", self.sweep_interval);
        p.positive("store.refusing_after", self.refusing_after);
        if self.retry_initial > self.retry_max {
            p.refuse(
                "store.retry_initial",
                format!("{:?}", human(self.retry_initial)),
                "must not exceed store.retry_max",
            );
        }
    }
}
