//! Kafka ingest: events durably applied per second by the listener and the store, beside a
//! plain consumer reading the same topic with no database work (the ceiling), in one run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::Context as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

use jobwarden::actors::kafka_listener::{KafkaListener, StopListening};
use jobwarden::config::{KafkaSettings, Settings};
use jobwarden::events::Events;
use jobwarden::metrics::Metrics;
use jobwarden::store;
use jobwarden::store_api::StoreHandle;

use jobwarden_testkit::kafka::{create_topic, send_keyed, PARTITIONS};

/// The plain consumer's rate (the ceiling) and jobwarden's, in events per second, on a fresh
/// topic of `events` events.
pub async fn measure(
    settings: Settings,
    brokers: Option<String>,
    events: usize,
    database_url: Option<String>,
) -> anyhow::Result<(f64, f64)> {
    let (brokers, topic, _mock) = prepare(brokers, events).await?;
    let ceiling = raw_consume(&brokers, &topic, events).await?;
    let rate = through_jobwarden(settings, database_url, &brokers, &topic, events).await?;
    Ok((ceiling, rate))
}

/// A topic with `events` events on `brokers`, or on a mock cluster kept alive by the third
/// element.
async fn prepare(
    brokers: Option<String>,
    events: usize,
) -> anyhow::Result<(
    String,
    String,
    Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
)> {
    // Without brokers, librdkafka's in-process mock cluster stands in.
    let mock = match &brokers {
        Some(_) => None,
        None => Some(MockCluster::new(1).context("cannot start the mock cluster")?),
    };
    let brokers = match (&brokers, &mock) {
        (Some(b), _) => b.clone(),
        (None, Some(m)) => m.bootstrap_servers(),
        (None, None) => unreachable!("one of the two is set"),
    };
    let topic = format!(
        "jw-bench-{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    match &mock {
        Some(m) => m.create_topic(&topic, PARTITIONS, 1)?,
        None => create_topic(&brokers, &topic).await?,
    }
    produce(&brokers, &topic, events).await?;
    Ok((brokers, topic, mock))
}

pub async fn run(
    settings: Settings,
    brokers: Option<String>,
    events: usize,
    database_urls: Vec<String>,
) -> anyhow::Result<()> {
    let (brokers, topic, _mock) = prepare(brokers, events).await?;
    println!("kafka ingest: {events} events on {PARTITIONS} partitions at {brokers}");
    let ceiling = raw_consume(&brokers, &topic, events).await?;
    println!("{:<34} {:>12} {:>8}", "reader", "events/s", "ratio");
    println!(
        "{:<34} {:>12.0} {:>8}",
        "plain consumer (no database)", ceiling, "1.00"
    );
    let mut targets: Vec<Option<String>> = database_urls.into_iter().map(Some).collect();
    if targets.is_empty() {
        targets.push(None);
    }
    // The configured number of batches in flight, then one at a time (see `concurrencies`).
    for url in targets {
        let label = url
            .as_deref()
            .map(|u| jobwarden::config::mask_url_password(u.split('?').next().unwrap_or(u)))
            .unwrap_or_else(|| "scratch SQLite".into());
        let sqlite = url.as_deref().is_none_or(|u| u.starts_with("sqlite"));
        for concurrent in super::concurrencies(&settings, sqlite) {
            let mut settings = settings.clone();
            settings.store.concurrent_batches = concurrent;
            let rate = through_jobwarden(settings, url.clone(), &brokers, &topic, events).await?;
            println!(
                "{:<34} {:>12.0} {:>8.2}",
                format!("jobwarden -> {label} ({concurrent} in flight)"),
                rate,
                rate / ceiling
            );
        }
    }
    Ok(())
}

async fn produce(brokers: &str, topic: &str, events: usize) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "10")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let statuses = ["Processing", "Completed", "Failed"];
    for chunk in (0..events).collect::<Vec<_>>().chunks(10_000) {
        let sends = chunk.iter().map(|i| {
            let key = format!("job-{}", i / 2);
            let payload = format!(
                r#"{{"jobId":"{key}","status":"{}","generatedFields":{{"n":{i}}}}}"#,
                statuses[i % 3]
            );
            let producer = &producer;
            async move { send_keyed(producer, topic, &key, payload.as_bytes()).await }
        });
        for result in futures::future::join_all(sends).await {
            result?;
        }
    }
    Ok(())
}

fn group() -> String {
    format!(
        "jw-bench-{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}

/// Events per second read by a consumer that does nothing with them, from its first event.
async fn raw_consume(brokers: &str, topic: &str, events: usize) -> anyhow::Result<f64> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group())
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut started = None;
    for _ in 0..events {
        let message = consumer.recv().await?;
        started.get_or_insert_with(Instant::now);
        std::hint::black_box(rdkafka::Message::payload(&message));
    }
    Ok(events as f64 / started.map_or(1e-9, |s| s.elapsed().as_secs_f64().max(1e-9)))
}

/// Events per second consumed and made durable by the listener and the store.
async fn through_jobwarden(
    mut settings: Settings,
    database_url: Option<String>,
    brokers: &str,
    topic: &str,
    events: usize,
) -> anyhow::Result<f64> {
    let scratch = tempfile::tempdir()?;
    super::scratch_database(&mut settings, database_url, scratch.path(), "kafka");
    let db = store::connect(&settings.database).await?;
    store::migrate(&db).await?;
    let metrics = Arc::new(Metrics::new());
    let events_out = Events::new(metrics.clone());
    let store = super::launch_store(db.clone(), &settings, &events_out);
    let kafka = KafkaSettings {
        bootstrap_servers: brokers.to_owned(),
        topic: topic.to_owned(),
        group_id: group(),
        max_payload_bytes: 1024 * 1024,
        properties: Default::default(),
    };
    let listener = KafkaListener::new(kafka, StoreHandle::from(&store), events_out).start();
    let count = |outcome| Metrics::count(&metrics.kafka_events, outcome);
    let deadline = Instant::now() + Duration::from_secs(600);
    while count("consumed") == 0 {
        anyhow::ensure!(Instant::now() < deadline, "no event consumed");
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    while count("applied") + count("dead_lettered") < events as u64 {
        anyhow::ensure!(Instant::now() < deadline, "events not all applied in time");
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    listener.send(StopListening).await?;
    // Leave a shared database as it was.
    if !settings.database.url.expose().starts_with("sqlite") {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        entity::job_status_history::Entity::delete_many()
            .filter(entity::job_status_history::Column::JobKind.eq("queue"))
            .filter(entity::job_status_history::Column::JobId.starts_with("job-"))
            .exec(&db)
            .await?;
        entity::transformation_job_queue::Entity::delete_many()
            .filter(entity::transformation_job_queue::Column::JobId.starts_with("job-"))
            .exec(&db)
            .await?;
    }
    Ok(rate)
}
