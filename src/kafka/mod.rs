//! The Kafka consumer: its configuration from settings and the context that commits stored
//! offsets when partitions are revoked and reports broker reachability once per change.

use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::TopicPartitionList;
use tracing::{debug, error, info, warn};

use crate::config::{is_secret_property, KafkaSettings, MASK, RESERVED_PROPERTIES};
use crate::events::{ConsumerLag, Events};
use crate::health::Reach;

pub type ListenerConsumer = rdkafka::consumer::StreamConsumer<ListenerContext>;

/// Why the consumer cannot be set up; each names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("kafka.properties.{0} is set by jobwarden itself (use kafka.group_id / kafka.bootstrap_servers; offsets are stored only after a write)")]
    ReservedProperty(String),
    /// librdkafka's own words, with the values of secret properties masked: it repeats the
    /// value of a property it refuses, and a misspelt `sasl.password` is still a password.
    #[error("invalid [kafka] settings: {0}")]
    Invalid(String),
    #[error("cannot subscribe to kafka.topic {topic:?}: {source}")]
    Subscribe {
        topic: String,
        #[source]
        source: KafkaError,
    },
}

/// Hooks librdkafka calls from its own threads.
pub struct ListenerContext {
    /// Shared by every consumer the listener builds, so readiness outlives a rebuild.
    brokers: Arc<Reach>,
    events: Events,
}

impl ListenerContext {
    pub fn new(events: Events, brokers: Arc<Reach>) -> Self {
        ListenerContext { brokers, events }
    }

    /// A message arrived, or a broker connection is up: the brokers are reachable.
    pub fn note_reachable(&self) {
        if self.brokers.reached() {
            info!(actor = "kafka_listener", "Kafka brokers reachable again");
        }
    }

    fn note_unreachable(&self, error: &dyn std::fmt::Display, reason: &str) {
        if self.brokers.lost(format!("{error}")) {
            warn!(actor = "kafka_listener", error = %error, reason,
                "Kafka brokers unreachable; retrying, no offset moves until events are written");
        } else {
            debug!(error = %error, reason, "Kafka brokers still unreachable");
        }
    }
}

fn is_transport(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::NetworkException
        )
    )
}

impl ClientContext for ListenerContext {
    /// Total lag of the assigned partitions, from librdkafka's periodic statistics.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.events.emit(ConsumerLag(lag));
        // The internal broker is librdkafka's own queue, not a connection.
        let up = statistics
            .brokers
            .values()
            .any(|b| b.source != "internal" && b.state == "UP");
        if up {
            self.note_reachable();
        } else if self.brokers.is_up() {
            self.note_unreachable(&"no broker connection is up", "statistics");
        }
    }

    /// librdkafka repeats itself while brokers are away; `error` above says it once.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        debug!(target: "librdkafka", ?level, facility, "{message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if is_transport(&error) {
            self.note_unreachable(&error, reason);
        } else {
            warn!(actor = "kafka_listener", error = %error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for ListenerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            // What is written is committed before another member takes the partitions.
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => info!(actor = "kafka_listener", partitions = %describe(partitions),
                    "partitions revoked; written offsets committed"),
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                    info!(actor = "kafka_listener", partitions = %describe(partitions), "partitions revoked")
                }
                Err(e) => warn!(actor = "kafka_listener", error = %e,
                    "partitions revoked; commit failed, their events will be redelivered"),
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.note_reachable();
                info!(actor = "kafka_listener", partitions = %describe(partitions), "partitions assigned")
            }
            Rebalance::Error(e) => error!(actor = "kafka_listener", error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => debug!(offsets = %describe(offsets), "offsets committed"),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                warn!(actor = "kafka_listener", error = %e, "offset commit failed; retried at the next commit")
            }
        }
    }
}

fn describe(partitions: &TopicPartitionList) -> String {
    partitions
        .elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The consumer's configuration: at-least-once (offsets are stored by jobwarden only after the
/// event is durable, and only stored offsets are auto-committed), then the operator's extra
/// properties, which may not switch that off.
pub fn client_config(settings: &KafkaSettings) -> Result<ClientConfig, KafkaSetupError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("group.id", &settings.group_id)
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("auto.commit.interval.ms", "1000")
        .set("statistics.interval.ms", "5000");
    for (key, value) in &settings.properties {
        if RESERVED_PROPERTIES.contains(&key.as_str()) {
            return Err(KafkaSetupError::ReservedProperty(key.clone()));
        }
        config.set(key, value);
    }
    config
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set_log_level(RDKafkaLogLevel::Warning);
    Ok(config)
}

/// The configuration as it may be logged.
pub fn describe_config(settings: &KafkaSettings) -> String {
    settings
        .properties
        .iter()
        .map(|(k, v)| {
            if is_secret_property(k) {
                format!("{k}=****")
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn consumer(
    settings: &KafkaSettings,
    events: Events,
    brokers: Arc<Reach>,
) -> Result<ListenerConsumer, KafkaSetupError> {
    let consumer: ListenerConsumer = client_config(settings)?
        .create_with_context(ListenerContext::new(events, brokers))
        .map_err(|e| invalid(settings, &e))?;
    consumer
        .subscribe(&[&settings.topic])
        .map_err(|source| KafkaSetupError::Subscribe {
            topic: settings.topic.clone(),
            source,
        })?;
    Ok(consumer)
}

/// Builds a client from the settings once, so that a property librdkafka refuses stops the
/// start with its name instead of failing later.
pub fn check(settings: &KafkaSettings) -> Result<(), KafkaSetupError> {
    client_config(settings)?
        .create::<BaseConsumer>()
        .map(|_| ())
        .map_err(|e| invalid(settings, &e))
}

/// A refusal from librdkafka, safe to print: the refused property's value (it may be a
/// misspelt secret) and every secret property's value masked.
fn invalid(settings: &KafkaSettings, error: &KafkaError) -> KafkaSetupError {
    let mut text = error.to_string();
    let refused = match error {
        KafkaError::ClientConfig(_, _, key, _) => Some(key.as_str()),
        _ => None,
    };
    for (key, value) in &settings.properties {
        let hide = is_secret_property(key) || refused == Some(key.as_str());
        if hide && !value.is_empty() {
            text = text.replace(value.as_str(), MASK);
        }
    }
    KafkaSetupError::Invalid(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_secret_property_is_reported_without_its_value() {
        let settings = KafkaSettings {
            bootstrap_servers: "127.0.0.1:1".into(),
            topic: "t".into(),
            group_id: "g".into(),
            max_payload_bytes: 1024,
            properties: [("sasl.pasword".to_owned(), "hunter2".to_owned())].into(),
        };
        let text = check(&settings).unwrap_err().to_string();
        assert!(text.contains("sasl.pasword"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
