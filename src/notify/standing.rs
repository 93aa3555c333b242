//! How each channel has fared lately: since when its deliveries fail, and with what error. A
//! failing channel is news for readiness's detail and a metric, not a reason to stop taking
//! work: the outbox keeps its messages until the channel is back.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared by the notifier (which records) and readiness and `/metrics` (which read).
#[derive(Debug)]
pub struct ChannelStanding {
    /// A channel counts as failing once its deliveries have failed for this long.
    failing_after: Duration,
    /// Every configured channel, so a metric shows the healthy ones too.
    channels: Vec<String>,
    failures: Mutex<BTreeMap<String, Failing>>,
}

#[derive(Debug, Clone)]
struct Failing {
    since: Instant,
    last_error: String,
}

/// One channel whose deliveries have failed for longer than the setting allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingChannel {
    pub channel: String,
    pub for_: Duration,
    pub last_error: String,
}

impl ChannelStanding {
    pub fn new(failing_after: Duration, channels: impl IntoIterator<Item = String>) -> Self {
        ChannelStanding {
            failing_after,
            channels: channels.into_iter().collect(),
            failures: Mutex::new(BTreeMap::new()),
        }
    }

    /// The receiver took a message: whatever failed before is over.
    pub fn delivered(&self, channel: &str) {
        self.lock().remove(channel);
    }

    /// A delivery failed; the failure began at the first of an unbroken run.
    pub fn failed(&self, channel: &str, error: &str) {
        let mut failures = self.lock();
        match failures.get_mut(channel) {
            Some(failing) => failing.last_error = error.to_owned(),
            None => {
                failures.insert(
                    channel.to_owned(),
                    Failing {
                        since: Instant::now(),
                        last_error: error.to_owned(),
                    },
                );
            }
        }
    }

    /// The channels failing for longer than the setting, by name.
    pub fn failing(&self) -> Vec<FailingChannel> {
        self.lock()
            .iter()
            .filter(|(_, f)| f.since.elapsed() >= self.failing_after)
            .map(|(channel, f)| FailingChannel {
                channel: channel.clone(),
                for_: f.since.elapsed(),
                last_error: f.last_error.clone(),
            })
            .collect()
    }

    /// Each configured channel and whether it is failing for longer than the setting.
    pub fn each(&self) -> Vec<(String, bool)> {
        let failing = self.failing();
        self.channels
            .iter()
            .map(|c| (c.clone(), failing.iter().any(|f| &f.channel == c)))
            .collect()
    }

    /// Every channel that has failed at all since its last delivery, failing long or not.
    pub fn troubled(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// What readiness's detail says: "ok", or each failing channel with its last error.
    pub fn describe(&self) -> String {
        let failing = self.failing();
        if failing.is_empty() {
            return "ok".into();
        }
        failing
            .iter()
            .map(|f| {
                format!(
                    "channel {:?} failing for {} (last error: {})",
                    f.channel,
                    humantime::format_duration(Duration::from_secs(f.for_.as_secs())),
                    f.last_error
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Failing>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_failing_for_longer_than_the_setting_is_named_with_its_last_error() {
        let standing = ChannelStanding::new(Duration::ZERO, ["ops".to_owned()]);
        standing.failed("ops", "connection refused");
        standing.failed("ops", "HTTP 503");
        let failing = standing.failing();
        assert_eq!(failing.len(), 1);
        assert_eq!(failing[0].channel, "ops");
        assert_eq!(failing[0].last_error, "HTTP 503");
        assert!(standing.describe().contains("\"ops\" failing for"));
        assert_eq!(standing.each(), vec![("ops".to_owned(), true)]);
    }

    #[test]
    fn a_failure_shorter_than_the_setting_is_not_yet_failing() {
        let standing = ChannelStanding::new(Duration::from_secs(600), ["ops".to_owned()]);
        standing.failed("ops", "HTTP 503");
        assert!(standing.failing().is_empty());
        assert_eq!(standing.describe(), "ok");
        assert_eq!(standing.troubled(), vec!["ops".to_owned()]);
    }

    #[test]
    fn a_delivery_ends_the_failure() {
        let standing = ChannelStanding::new(Duration::ZERO, ["ops".to_owned()]);
        standing.failed("ops", "HTTP 503");
        standing.delivered("ops");
        assert!(standing.failing().is_empty());
        assert!(standing.troubled().is_empty());
    }
}
