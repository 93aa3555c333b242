//! What a poll of a backend can come to.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::InternalEvent;
use crate::metrics::Metrics;

/// The backend answered about a job.
pub struct PollAnswered<'a> {
    pub raw_state: Option<&'a str>,
    /// The answer carried no status (a master recovering).
    pub unknown: bool,
    pub elapsed: Duration,
}

impl InternalEvent for PollAnswered<'_> {
    fn emit(self, m: &Metrics) {
        debug!(state = self.raw_state.unwrap_or("-"), "backend answered");
        m.polls.with_label_values(&["observed"]).inc();
        m.poll_seconds.observe(self.elapsed.as_secs_f64());
        if self.unknown {
            m.unknown_state_answers.inc();
        }
    }
}

/// A job its backend already knew had not changed (a listing read this cycle): settled
/// without a request, counted as an observed poll.
pub struct PollUnchanged;

impl InternalEvent for PollUnchanged {
    fn emit(self, m: &Metrics) {
        m.polls.with_label_values(&["observed"]).inc();
    }
}

/// The backend gave no usable answer about a job.
pub struct PollFailed<'a> {
    pub error: &'a dyn std::error::Error,
    pub elapsed: Duration,
}

impl InternalEvent for PollFailed<'_> {
    fn emit(self, m: &Metrics) {
        debug!(error = %self.error, "no usable answer for this job");
        m.polls.with_label_values(&["failed"]).inc();
        m.poll_seconds.observe(self.elapsed.as_secs_f64());
    }
}

/// The backend is handing over (a failover: no master alive yet); not a failed poll.
pub struct PollWaited<'a> {
    pub error: &'a dyn std::error::Error,
    pub elapsed: Duration,
}

impl InternalEvent for PollWaited<'_> {
    fn emit(self, m: &Metrics) {
        debug!(error = %self.error, "no alive master yet; asking again next cycle");
        m.polls.with_label_values(&["waited"]).inc();
        m.poll_seconds.observe(self.elapsed.as_secs_f64());
    }
}

/// What a poll saw could not be written; the job stays due.
pub struct PollNotRecorded<'a> {
    pub error: &'a dyn std::error::Error,
}

impl InternalEvent for PollNotRecorded<'_> {
    fn emit(self, m: &Metrics) {
        warn!(error = %self.error, "poll result not recorded; the job stays due");
        m.polls.with_label_values(&["not_recorded"]).inc();
    }
}

/// A backend stopped answering (logged once per outage, not once per job).
pub struct BackendUnreachable<'a> {
    pub backend: &'a str,
    pub error: &'a dyn std::error::Error,
}

impl InternalEvent for BackendUnreachable<'_> {
    fn emit(self, m: &Metrics) {
        warn!(cluster = self.backend, error = %self.error,
            "Spark cluster unreachable; its jobs keep their status, polls back off");
        m.spark_up.with_label_values(&[self.backend]).set(0.0);
    }
}

/// A backend answers again.
pub struct BackendReachable<'a> {
    pub backend: &'a str,
}

impl InternalEvent for BackendReachable<'_> {
    fn emit(self, m: &Metrics) {
        info!(cluster = self.backend, "Spark cluster reachable again");
        m.spark_up.with_label_values(&[self.backend]).set(1.0);
    }
}
