//! What delivering a notification can come to.

use tracing::{debug, info, warn};

use super::InternalEvent;
use crate::metrics::Metrics;

/// One delivery attempt of `messages` outbox rows (several when a storm went out as one).
pub struct NotificationAttempted<'a> {
    pub channel: &'a str,
    pub message_id: &'a str,
    pub messages: usize,
    /// `delivered`, `retrying`, `refused` or `gave_up`.
    pub outcome: &'static str,
    pub error: Option<&'a str>,
}

impl InternalEvent for NotificationAttempted<'_> {
    fn emit(self, m: &Metrics) {
        match (self.outcome, self.error) {
            ("delivered", _) => debug!(
                channel = self.channel,
                message_id = self.message_id,
                messages = self.messages,
                "notification delivered"
            ),
            ("retrying", Some(error)) => info!(
                channel = self.channel,
                message_id = self.message_id,
                error,
                "notification not delivered; trying again later"
            ),
            (outcome, error) => warn!(
                channel = self.channel,
                message_id = self.message_id,
                messages = self.messages,
                outcome,
                error = error.unwrap_or("-"),
                "notification not delivered, for good"
            ),
        }
        m.notifications
            .with_label_values(&[self.channel, self.outcome])
            .inc_by(self.messages as u64);
    }
}
