//! What the scheduler's ticks and cycles come to.

use std::time::Duration;

use tracing::{debug, info};

use super::InternalEvent;
use crate::metrics::Metrics;

/// A tick arrived while the previous cycle was still running.
pub struct TickSkipped {
    pub in_flight: usize,
    pub backlog: usize,
    pub running_for: Duration,
}

impl InternalEvent for TickSkipped {
    fn emit(self, m: &Metrics) {
        debug!(
            actor = "scheduler",
            in_flight = self.in_flight,
            backlog = self.backlog,
            running_for_ms = self.running_for.as_millis() as u64,
            "previous poll cycle still running; tick skipped"
        );
        m.scheduler_ticks_skipped.inc();
    }
}

/// Every job due at a cycle's start was polled (or could not be recorded).
pub struct PollCycleFinished {
    pub due: u64,
    pub dispatched: u64,
    /// Settled without a poll: the backend already knew nothing had changed.
    pub unchanged_at_once: u64,
    pub not_recorded: u64,
    pub ticks_skipped: u64,
    pub duration: Duration,
}

impl InternalEvent for PollCycleFinished {
    fn emit(self, m: &Metrics) {
        m.poll_cycle_seconds
            .with_label_values(&["spark"])
            .observe(self.duration.as_secs_f64());
        if self.due > 0 {
            info!(
                actor = "scheduler",
                due = self.due,
                dispatched = self.dispatched,
                unchanged_at_once = self.unchanged_at_once,
                not_recorded = self.not_recorded,
                ticks_skipped = self.ticks_skipped,
                duration_ms = self.duration.as_millis() as u64,
                "poll cycle finished"
            );
        } else {
            debug!(actor = "scheduler", "poll cycle found nothing due");
        }
    }
}
