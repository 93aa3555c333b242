//! Internal events: one type for each thing that can happen inside jobwarden. Emitting an event
//! logs it and counts it in the application's metrics, in one place, so no part counts the same
//! thing twice by hand.

mod job;
mod kafka;
mod notify;
mod poll;
mod scheduler;
mod store;
mod supervision;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::metrics::Metrics;

pub use job::JobEnded;
pub use kafka::{ConsumerLag, EventApplied, EventConsumed, EventDeadLettered, ListenerRestarting};
pub use notify::NotificationAttempted;
pub use poll::{
    BackendReachable, BackendUnreachable, PollAnswered, PollFailed, PollNotRecorded, PollUnchanged,
    PollWaited,
};
pub use scheduler::{PollCycleFinished, TickSkipped};
pub use store::{
    BatchCommitted, ChangeRefused, DatabaseBack, DatabaseUnreachable, HistoryWritten,
    LeaseRenewalFailed, LeasesRenewed, RowsPruned, TimeoutsSwept, WriteFenced,
};
pub use supervision::ActorCrashed;

/// Something that happened, that knows how to log and count itself.
pub trait InternalEvent {
    fn emit(self, metrics: &Metrics);
}

/// Where events are emitted: the application's metrics. Cheap to clone.
#[derive(Clone, Default)]
pub struct Events {
    metrics: Arc<Metrics>,
}

impl Events {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Events { metrics }
    }

    pub fn emit(&self, event: impl InternalEvent) {
        event.emit(&self.metrics);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// An up/down state whose changes are worth one log line each, not one per observation.
#[derive(Debug)]
pub struct Edge(AtomicBool);

impl Default for Edge {
    fn default() -> Self {
        Edge(AtomicBool::new(true))
    }
}

impl Edge {
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Records the state; true when it changed.
    pub fn set(&self, up: bool) -> bool {
        self.0.swap(up, Ordering::Relaxed) != up
    }
}

/// One [`Edge`] per name (a cluster), each up until seen down.
#[derive(Default)]
pub struct Edges(std::sync::Mutex<std::collections::HashMap<String, bool>>);

impl Edges {
    /// Records the state of `name`; true when it changed.
    pub fn set(&self, name: &str, up: bool) -> bool {
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match all.get_mut(name) {
            Some(was) => std::mem::replace(was, up) != up,
            None => {
                all.insert(name.to_owned(), up);
                !up
            }
        }
    }
}
