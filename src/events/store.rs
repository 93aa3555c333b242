//! What the store's transactions come to.

use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::InternalEvent;
use crate::metrics::Metrics;
use crate::store::HistoryLine;
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

/// A line of a job's history is durable: the log's account of the job's life, one line per
/// change of status (and per remark), so that one filter on the job's id follows it.
pub struct HistoryWritten<'a> {
    pub line: &'a HistoryLine,
}

impl InternalEvent for HistoryWritten<'_> {
    fn emit(self, _: &Metrics) {
        let line = self.line;
        let from = line.from.as_deref().unwrap_or("-");
        let detail = line.detail.as_deref().unwrap_or("");
        let message = if line.from.as_deref() == Some(line.to.as_str()) {
            "job history noted"
        } else {
            "job status changed"
        };
        if line.kind == crate::store::SPARK_KIND {
            info!(actor = "job_store", execution_id = %line.job_id,
                cluster = line.cluster.as_deref().unwrap_or("default"), from, to = %line.to,
                source = %line.source, detail, "{message}");
        } else {
            info!(actor = "job_store", job_id = %line.job_id, job_kind = %line.kind, from,
                to = %line.to, source = %line.source, detail, "{message}");
        }
    }
}

/// A transaction failed because the database is away, busy or takes no writes (read-only, disk
/// full); it is held and retried.
pub struct DatabaseUnreachable<'a> {
    pub error: &'a dyn std::error::Error,
    /// What the operator is told: unreachable, read-only, disk full.
    pub reason: &'a str,
    pub retry_in: Duration,
    /// Since when changes have been held.
    pub held_for: Duration,
    /// Worth a line: the first failure of this outage, then once a minute.
    pub log: bool,
}

impl InternalEvent for DatabaseUnreachable<'_> {
    fn emit(self, m: &Metrics) {
        m.store_retries.inc();
        m.database_up.set(0.0);
        if self.log {
            error!(actor = "job_store", error = %self.error, reason = self.reason,
                held_for = %humantime::format_duration(Duration::from_secs(self.held_for.as_secs())),
                retry_in = ?self.retry_in, "database takes no writes; holding changes and retrying");
        } else {
            debug!(error = %self.error, retry_in = ?self.retry_in, "database still takes no writes");
        }
    }
}

/// The database refused one change as such (not an outage): counted by cause, logged once a
/// minute per cause.
pub struct ChangeRefused<'a> {
    pub cause: &'static str,
    pub error: &'a str,
    pub change: &'a crate::store_api::WriteOp,
    /// `Some(n)` when this one is logged, with `n` of the same cause unlogged since.
    pub unlogged: Option<u64>,
}

impl InternalEvent for ChangeRefused<'_> {
    fn emit(self, m: &Metrics) {
        m.store_refused.with_label_values(&[self.cause]).inc();
        if let Some(unlogged) = self.unlogged {
            error!(actor = "job_store", cause = self.cause, error = self.error, change = ?self.change,
                more_since_last_line = unlogged,
                "change refused by the database (logged once a minute per cause; jobwarden_store_refused_total counts them all)");
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

/// A retention run deleted what had aged out of one table (or could not).
pub struct RowsPruned<'a> {
    /// The `[retention]` key: history, dead_letters, delivered_notifications, …
    pub table: &'static str,
    pub rows: u64,
    pub elapsed: Duration,
    pub error: Option<&'a dyn std::error::Error>,
}

impl InternalEvent for RowsPruned<'_> {
    fn emit(self, m: &Metrics) {
        m.pruned_rows
            .with_label_values(&[self.table])
            .inc_by(self.rows);
        match self.error {
            Some(error) => {
                warn!(actor = "job_store", table = self.table, rows = self.rows, error = %error,
                "retention stopped early; the rest goes at the next run")
            }
            None if self.rows > 0 => {
                info!(actor = "job_store", table = self.table, rows = self.rows,
                took = ?self.elapsed, "retention deleted rows that aged out")
            }
            None => {}
        }
    }
}

/// A lease renewal round changed what this instance holds.
pub struct LeasesRenewed<'a> {
    pub instance: &'a str,
    pub buckets: usize,
    pub gained: usize,
    pub lost: usize,
    pub leader: bool,
    pub was_leader: bool,
    pub live: usize,
}

impl InternalEvent for LeasesRenewed<'_> {
    fn emit(self, m: &Metrics) {
        m.buckets_held.set(self.buckets as f64);
        m.leader.set(if self.leader { 1.0 } else { 0.0 });
        m.live_instances.set(self.live as f64);
        if self.gained > 0 || self.lost > 0 {
            info!(
                actor = "job_store",
                instance = self.instance,
                buckets = self.buckets,
                gained = self.gained,
                lost = self.lost,
                live_instances = self.live,
                "share of the work changed"
            );
        }
        if self.leader != self.was_leader {
            info!(
                actor = "job_store",
                instance = self.instance,
                leader = self.leader,
                "leader lease {}",
                if self.leader {
                    "taken: the timeout sweep runs here"
                } else {
                    "passed on"
                }
            );
        }
    }
}

/// A renewal round failed; what is held lapses when its lease runs out.
pub struct LeaseRenewalFailed<'a> {
    pub error: &'a dyn std::error::Error,
}

impl InternalEvent for LeaseRenewalFailed<'_> {
    fn emit(self, _: &Metrics) {
        warn!(actor = "job_store", error = %self.error,
            "could not renew leases; polling stops for the buckets whose lease runs out");
    }
}

/// A write was refused because the lease it was made under had passed on.
pub struct WriteFenced<'a> {
    pub execution_id: &'a str,
    pub error: &'a dyn std::error::Error,
}

impl InternalEvent for WriteFenced<'_> {
    fn emit(self, m: &Metrics) {
        m.fenced_writes.inc();
        warn!(actor = "job_store", execution_id = self.execution_id, error = %self.error,
            "stale write refused (fencing): this instance lost the lease it polled under");
    }
}
