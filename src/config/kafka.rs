//! `[kafka]`: the status-event topic, its consumer group, and extra librdkafka properties.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::secret::serialize_masked_properties;
use super::validate::{Problems, Validate};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Payloads above this size go to dead letters unparsed.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Extra librdkafka properties (security.protocol, sasl.*, ssl.*), passed through as is.
    #[serde(default, serialize_with = "serialize_masked_properties")]
    pub properties: BTreeMap<String, String>,
}

/// Properties jobwarden sets itself: delivery guarantees depend on them.
pub const RESERVED_PROPERTIES: [&str; 4] = [
    "enable.auto.offset.store",
    "enable.auto.commit",
    "group.id",
    "bootstrap.servers",
];

fn default_topic() -> String {
    "transformation-job-status".into()
}

fn default_group() -> String {
    "transformation-engine-job-monitor".into()
}

fn default_max_payload() -> usize {
    1024 * 1024
}

impl Validate for KafkaSettings {
    fn validate(&self, p: &mut Problems) {
        for key in self.properties.keys() {
            if RESERVED_PROPERTIES.contains(&key.as_str()) {
                p.refuse(
                    &format!("kafka.properties.{key}"),
                    "(set)",
                    "is set by jobwarden itself (offsets are stored only after a write)",
                );
            }
        }
        if self.bootstrap_servers.trim().is_empty() {
            p.refuse(
                "kafka.bootstrap_servers",
                "\"\"",
                "must name at least one broker",
            );
        }
        if self.topic.trim().is_empty() {
            p.refuse("kafka.topic", "\"\"", "must not be empty");
        }
        if self.group_id.trim().is_empty() {
            p.refuse("kafka.group_id", "\"\"", "must not be empty");
        }
        if self.max_payload_bytes == 0 {
            p.refuse("kafka.max_payload_bytes", "0", "must be at least 1");
        }
    }
}
