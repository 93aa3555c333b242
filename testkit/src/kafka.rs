//! Producing to a real Kafka-protocol broker: topics with several partitions and keyed
//! messages acknowledged one by one.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// Partitions of every topic made here: enough for ordering per key to matter.
pub const PARTITIONS: i32 = 3;

/// Produces one keyed message, waiting for the broker's acknowledgement.
pub async fn send_keyed(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> rdkafka::error::KafkaResult<()> {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// Creates `topic` with [`PARTITIONS`] partitions (some brokers create no topic by themselves).
pub async fn create_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for result in results {
        result.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    Ok(())
}
