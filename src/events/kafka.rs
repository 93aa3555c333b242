//! What happens to a consumed status event.

use tracing::{debug, error, warn};

use super::InternalEvent;
use crate::domain::Position;
use crate::metrics::Metrics;

/// A message arrived from the broker.
pub struct EventConsumed;

impl InternalEvent for EventConsumed {
    fn emit(self, m: &Metrics) {
        m.kafka_events.with_label_values(&["consumed"]).inc();
    }
}

/// An event's change is durable.
pub struct EventApplied<'a> {
    pub position: &'a Position,
    pub outcome: &'a dyn std::fmt::Debug,
}

impl InternalEvent for EventApplied<'_> {
    fn emit(self, m: &Metrics) {
        let p = self.position;
        debug!(topic = %p.topic, partition = p.partition, offset = p.offset,
            outcome = ?self.outcome, "event applied");
        m.kafka_events.with_label_values(&["applied"]).inc();
    }
}

/// An event that cannot be applied is kept, as received, in dead letters.
pub struct EventDeadLettered<'a> {
    pub position: &'a Position,
    pub reason: &'a str,
    /// Kept already by an earlier delivery: logged, not counted again.
    pub duplicate: bool,
}

impl InternalEvent for EventDeadLettered<'_> {
    fn emit(self, m: &Metrics) {
        let p = self.position;
        warn!(topic = %p.topic, partition = p.partition, offset = p.offset,
            error = %self.reason, "malformed event kept in dead_letters");
        if !self.duplicate {
            m.kafka_events.with_label_values(&["dead_lettered"]).inc();
        }
    }
}

/// The consumer stopped with an error and is rebuilt from the committed offsets.
pub struct ListenerRestarting<'a> {
    pub error: &'a dyn std::error::Error,
    pub retry_in: std::time::Duration,
}

impl InternalEvent for ListenerRestarting<'_> {
    fn emit(self, m: &Metrics) {
        error!(error = %self.error, retry_in = ?self.retry_in,
            "Kafka listener stopped; restarting from the committed offsets");
        m.actor_restarts
            .with_label_values(&["kafka_listener"])
            .inc();
    }
}

/// Total lag of the assigned partitions, from librdkafka's statistics.
pub struct ConsumerLag(pub i64);

impl InternalEvent for ConsumerLag {
    fn emit(self, m: &Metrics) {
        m.kafka_consumer_lag.set(self.0);
    }
}
