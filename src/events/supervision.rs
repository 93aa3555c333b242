//! An actor crashed and is restarted.

use tracing::error;

use super::InternalEvent;
use crate::metrics::Metrics;

/// A panic was caught in an actor's work; its supervisor restarts it.
pub struct ActorCrashed<'a> {
    pub actor: &'static str,
    pub reason: &'a str,
}

impl InternalEvent for ActorCrashed<'_> {
    fn emit(self, m: &Metrics) {
        error!(
            actor = self.actor,
            reason = self.reason,
            "actor crashed; restarting it"
        );
        m.actor_restarts.with_label_values(&[self.actor]).inc();
    }
}
