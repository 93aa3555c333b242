//! What the store's transactions come to.

use std::time::Duration;

use tracing::{debug, error, info};

use super::InternalEvent;
use crate::metrics::Metrics;
use crate::store_api::Source;

/// A batch of changes is durable.
pub struct BatchCommitted<'a> {
    pub size: usize,
    /// Job rows the batch inserted or updated.
    pub rows_written: usize,
    pub elapsed: Duration,
    /// One entry per change that moved a job's status (or registered a job).
    pub transitions: &'a [Source],
}

impl InternalEvent for BatchCommitted<'_> {
    fn emit(self, m: &Metrics) {
        m.store_batch_size.observe(self.size as f64);
        m.store_rows_written.inc_by(self.rows_written as u64);
        m.store_commit_seconds.observe(self.elapsed.as_secs_f64());
        for source in self.transitions {
            m.transitions.with_label_values(&[source.as_str()]).inc();
            if *source == Source::TimeoutSweep {
                m.timeouts.inc();
            }
        }
    }
}

/// A transaction failed because the database is away or busy; it is retried.
pub struct DatabaseUnreachable<'a> {
    pub error: &'a dyn std::error::Error,
    pub retry_in: Duration,
    /// The first failure of this outage: worth an error line; later ones are debug.
    pub first: bool,
}

impl InternalEvent for DatabaseUnreachable<'_> {
    fn emit(self, m: &Metrics) {
        m.store_retries.inc();
        m.database_up.set(0.0);
        if self.first {
            error!(actor = "job_store", error = %self.error, retry_in = ?self.retry_in,
                "database unreachable; holding changes and retrying");
        } else {
            debug!(error = %self.error, retry_in = ?self.retry_in, "database still unreachable");
        }
    }
}

/// The database took a transaction again after an outage.
pub struct DatabaseBack;

impl InternalEvent for DatabaseBack {
    fn emit(self, m: &Metrics) {
        m.database_up.set(1.0);
        info!(
            actor = "job_store",
            "database reachable again; pending changes written"
        );
    }
}

/// The timeout sweep failed jobs.
pub struct TimeoutsSwept {
    pub failed: usize,
}

impl InternalEvent for TimeoutsSwept {
    fn emit(self, _: &Metrics) {
        // Each failed job is counted with its committed transition.
        if self.failed > 0 {
            info!(
                actor = "job_store",
                failed = self.failed,
                "timeout sweep failed stuck jobs"
            );
        }
    }
}
