//! The KafkaListener against librdkafka's mock cluster and a real database: events applied
//! in order and idempotently, malformed ones dead-lettered, offsets committed only once written.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use entity::prelude::*;
use entity::{job_status_history, transformation_job_queue};
use jobwarden::actors::kafka_listener::{KafkaListener, StopListening};
use jobwarden::actors::JobStore;
use jobwarden::config::KafkaSettings;
use jobwarden::events::Events;
use jobwarden::metrics::Metrics;
use jobwarden::store;
use jobwarden::store_api::StoreHandle;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use crate::helpers::{
    launch_store, rules, settings_for, socket_of, wait_until, Backend, CutProxy, TestDb,
};

const TOPIC: &str = "transformation-job-status";

static GROUPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub(crate) struct Broker {
    cluster: MockCluster<'static, DefaultProducerContext>,
    producer: FutureProducer,
}

impl Broker {
    pub(crate) fn start() -> Broker {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic(TOPIC, 3, 1).unwrap();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", "0")
            .create()
            .unwrap();
        Broker { cluster, producer }
    }

    pub(crate) fn settings(&self, group: &str) -> KafkaSettings {
        let mut properties = BTreeMap::new();
        properties.insert("session.timeout.ms".to_owned(), "6000".to_owned());
        KafkaSettings {
            bootstrap_servers: self.cluster.bootstrap_servers(),
            topic: TOPIC.into(),
            group_id: group.into(),
            max_payload_bytes: 1024,
            properties,
        }
    }

    /// Takes its one broker away (connections dropped, new ones refused) or brings it back.
    pub(crate) fn set_up(&self, up: bool) {
        if up {
            self.cluster.broker_up(1).unwrap();
        } else {
            self.cluster.broker_down(1).unwrap();
        }
    }

    pub(crate) async fn send(&self, key: &str, payload: &[u8]) {
        self.producer
            .send(
                FutureRecord::to(TOPIC).key(key).payload(payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }

    /// The group's committed offsets summed over partitions (next offsets to read).
    fn committed(&self, group: &str) -> i64 {
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.cluster.bootstrap_servers())
            .set("group.id", group)
            .create()
            .unwrap();
        let mut wanted = TopicPartitionList::new();
        for p in 0..3 {
            wanted.add_partition(TOPIC, p);
        }
        let total = {
            let committed = probe
                .committed_offsets(wanted, Duration::from_secs(5))
                .unwrap();
            committed
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(n) => n,
                    _ => 0,
                })
                .sum()
        };
        total
    }
}

fn unique_group() -> String {
    format!(
        "jw-test-{}-{}",
        std::process::id(),
        GROUPS.fetch_add(1, Ordering::Relaxed)
    )
}

/// A listener in `group` writing through `store`, with metrics of its own.
fn listen(
    broker: &Broker,
    group: &str,
    store: Addr<JobStore>,
) -> (Addr<KafkaListener>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let listener = KafkaListener::new(
        broker.settings(group),
        StoreHandle::from(&store),
        Events::new(metrics.clone()),
    )
    .start();
    (listener, metrics)
}

/// How many events had this outcome (consumed, applied, dead_lettered).
fn events(metrics: &Metrics, outcome: &str) -> u64 {
    Metrics::count(&metrics.kafka_events, outcome)
}

async fn queue_row(db: &TestDb, id: &str) -> Option<transformation_job_queue::Model> {
    TransformationJobQueue::find_by_id(id.to_owned())
        .one(&db.db)
        .await
        .unwrap()
}

async fn wait_for_status(db: &TestDb, id: &str, status: &str) {
    wait_until(
        Duration::from_secs(30),
        &format!("{id} to become {status}"),
        || async { queue_row(db, id).await.is_some_and(|r| r.status == status) },
    )
    .await;
}

async fn history_count(db: &TestDb, id: &str) -> u64 {
    JobStatusHistory::find()
        .filter(job_status_history::Column::JobKind.eq("queue"))
        .filter(job_status_history::Column::JobId.eq(id))
        .count(&db.db)
        .await
        .unwrap()
}

async fn sqlite_store() -> (TestDb, Addr<JobStore>) {
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    let store = launch_store(db.db.clone(), &db.settings());
    (db, store)
}

#[actix_rt::test]
async fn status_events_keep_the_queue_table_true() {
    let broker = Broker::start();
    let (db, store) = sqlite_store().await;
    broker
        .send(
            "q1",
            br#"{"jobId":"q1","status":"Processing","timestamp":"2026-11-28T10:00:00Z"}"#,
        )
        .await;
    broker
        .send(
            "q1",
            br#"{"jobId":"q1","status":"COMPLETED","generatedFields":{"title":"x","tags":[1,2]},"timestamp":"2026-11-28T10:05:00Z"}"#,
        )
        .await;
    broker
        .send(
            "q2",
            br#"{"jobId":"q2","status":"failed","errorMessage":"schema mismatch"}"#,
        )
        .await;
    let (_listener, stats) = listen(&broker, &unique_group(), store);
    wait_for_status(&db, "q1", "Completed").await;
    wait_for_status(&db, "q2", "Failed").await;
    let q1 = queue_row(&db, "q1").await.unwrap();
    assert_eq!(
        q1.generated_fields,
        Some(serde_json::json!({"title": "x", "tags": [1, 2]}))
    );
    assert_eq!(
        q1.completed_at.unwrap().to_rfc3339(),
        "2026-11-28T10:05:00+00:00"
    );
    assert_eq!(history_count(&db, "q1").await, 2);
    let q2 = queue_row(&db, "q2").await.unwrap();
    assert_eq!(q2.error_message.as_deref(), Some("schema mismatch"));
    wait_until(Duration::from_secs(10), "three events counted", || async {
        events(&stats, "applied") == 3
    })
    .await;
}

#[actix_rt::test]
async fn redelivered_events_change_nothing() {
    let broker = Broker::start();
    let (db, store) = sqlite_store().await;
    broker
        .send("q1", br#"{"jobId":"q1","status":"Processing"}"#)
        .await;
    broker
        .send("q1", br#"{"jobId":"q1","status":"Completed"}"#)
        .await;
    let (first, _) = listen(&broker, &unique_group(), store.clone());
    wait_for_status(&db, "q1", "Completed").await;
    first.send(StopListening).await.unwrap();
    let before = queue_row(&db, "q1").await.unwrap();

    // A second group reads the same offsets again: at-least-once delivery at its worst.
    let (_second, stats) = listen(&broker, &unique_group(), store);
    wait_until(
        Duration::from_secs(30),
        "the redelivery to be consumed",
        || async { events(&stats, "applied") == 2 },
    )
    .await;
    let after = queue_row(&db, "q1").await.unwrap();
    assert_eq!(after.status, "Completed");
    assert_eq!(after.completed_at, before.completed_at);
    assert_eq!(history_count(&db, "q1").await, 2);
}

#[actix_rt::test]
async fn older_event_does_not_overwrite_newer_state() {
    let broker = Broker::start();
    let (db, store) = sqlite_store().await;
    broker
        .send("q1", br#"{"jobId":"q1","status":"Processing","generatedFields":{"v":2},"timestamp":"2026-11-28T10:05:00Z"}"#)
        .await;
    broker
        .send("q1", br#"{"jobId":"q1","status":"Processing","generatedFields":{"v":1},"timestamp":"2026-11-28T10:00:00Z"}"#)
        .await;
    broker
        .send("q1", br#"{"jobId":"q1","status":"Pending"}"#)
        .await;
    let (_listener, stats) = listen(&broker, &unique_group(), store);
    wait_until(Duration::from_secs(30), "three events", || async {
        events(&stats, "applied") == 3
    })
    .await;
    let row = queue_row(&db, "q1").await.unwrap();
    assert_eq!(row.status, "Processing");
    assert_eq!(row.generated_fields, Some(serde_json::json!({"v": 2})));
}

#[actix_rt::test]
async fn malformed_events_become_dead_letters_and_consumption_goes_on() {
    let broker = Broker::start();
    let (db, store) = sqlite_store().await;
    let oversized = format!(
        r#"{{"jobId":"big","status":"Completed","pad":"{}"}}"#,
        "x".repeat(2000)
    );
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a",
            b"\xff\xfenot json at all".to_vec(),
            "not a JSON object",
        ),
        ("a", br#"{"status":"Completed"}"#.to_vec(), "no jobId"),
        (
            "a",
            br#"{"jobId":"q9","status":"Exploded"}"#.to_vec(),
            "unknown queue status",
        ),
        ("a", oversized.into_bytes(), "over the 1024-byte limit"),
    ];
    for (key, payload, _) in &bad {
        broker.send(key, payload).await;
    }
    broker
        .send("a", br#"{"jobId":"q1","status":"Completed"}"#)
        .await;
    let (_listener, stats) = listen(&broker, &unique_group(), store);
    wait_for_status(&db, "q1", "Completed").await;
    let letters = DeadLetters::find().all(&db.db).await.unwrap();
    assert_eq!(letters.len(), bad.len());
    for (_, payload, reason) in &bad {
        let letter = letters
            .iter()
            .find(|l| &l.payload == payload)
            .expect("payload kept byte-exact");
        assert!(
            letter.error.contains(reason),
            "{} vs {reason}",
            letter.error
        );
        assert_eq!(letter.topic.as_deref(), Some(TOPIC));
        assert_eq!(letter.key.as_deref(), Some(&b"a"[..]));
        assert!(letter.offset.is_some() && letter.partition.is_some());
    }
    // The count moves when the listener hears back, just after the commit.
    wait_until(
        Duration::from_secs(10),
        "four dead letters counted",
        || async { events(&stats, "dead_lettered") == 4 },
    )
    .await;
}

#[actix_rt::test]
async fn stopping_commits_the_offsets_of_written_events() {
    let broker = Broker::start();
    let (db, store) = sqlite_store().await;
    for i in 0..30 {
        let payload = format!(r#"{{"jobId":"q{i}","status":"Completed"}}"#);
        broker.send(&format!("q{i}"), payload.as_bytes()).await;
    }
    let group = unique_group();
    let (listener, stats) = listen(&broker, &group, store);
    wait_until(Duration::from_secs(30), "30 events applied", || async {
        events(&stats, "applied") == 30
    })
    .await;
    listener.send(StopListening).await.unwrap();
    assert_eq!(broker.committed(&group), 30);
    assert_eq!(
        TransformationJobQueue::find().count(&db.db).await.unwrap(),
        30
    );
}

/// The database goes away while events arrive: no offset moves past an event that is not
/// written, and once the database is back every event lands and its offset is committed.
#[actix_rt::test]
async fn offsets_wait_for_the_database_during_an_outage() {
    let broker = Broker::start();
    let Some(db) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    let proxy = CutProxy::start(socket_of(&db.url)).await;
    let mut settings = settings_for(&proxy.url_through(&db.url));
    settings.database.connect_timeout = Duration::from_millis(500);
    let conn = store::connect(&settings.database).await.unwrap();
    let store_metrics = Arc::new(Metrics::new());
    let store = JobStore::new(
        conn,
        settings.store.clone(),
        rules(&settings),
        Events::new(store_metrics.clone()),
    )
    .launch();
    let group = unique_group();
    let (_listener, stats) = listen(&broker, &group, store);

    broker
        .send("q0", br#"{"jobId":"q0","status":"Completed"}"#)
        .await;
    wait_for_status(&db, "q0", "Completed").await;
    wait_until(
        Duration::from_secs(10),
        "the first offset to be committed",
        || async { broker.committed(&group) == 1 },
    )
    .await;

    proxy.cut();
    for i in 1..=5 {
        let payload = format!(r#"{{"jobId":"q{i}","status":"Completed"}}"#);
        broker.send(&format!("q{i}"), payload.as_bytes()).await;
    }
    wait_until(
        Duration::from_secs(30),
        "the events to be consumed",
        || async { events(&stats, "consumed") == 6 },
    )
    .await;
    // While the store retries the held batch again and again (each retry waits at least
    // retry_initial, so several auto-commit intervals pass), no commit may move.
    let retried = store_metrics.store_retries.get() + 12;
    wait_until(
        Duration::from_secs(30),
        "the store to retry the held events a dozen times",
        || async {
            assert_eq!(
                broker.committed(&group),
                1,
                "no offset may pass an unwritten event"
            );
            store_metrics.store_retries.get() >= retried
        },
    )
    .await;

    proxy.restore();
    for i in 1..=5 {
        wait_for_status(&db, &format!("q{i}"), "Completed").await;
    }
    wait_until(
        Duration::from_secs(10),
        "every offset to be committed",
        || async { broker.committed(&group) == 6 },
    )
    .await;
    db.drop_database().await;
}

#[actix_rt::test]
async fn crashed_listener_restarts_from_committed_offsets_and_loses_nothing() {
    let broker = Broker::start();
    let (db, store) = sqlite_store().await;
    broker
        .send("q1", br#"{"jobId":"q1","status":"Processing"}"#)
        .await;
    let (listener, stats) = listen(&broker, &unique_group(), store);
    wait_for_status(&db, "q1", "Processing").await;
    listener.send(jobwarden::actors::Crash).await.unwrap();
    wait_until(
        Duration::from_secs(10),
        "the consumer to be rebuilt",
        || async { Metrics::count(&stats.actor_restarts, "kafka_listener") == 1 },
    )
    .await;
    broker
        .send("q1", br#"{"jobId":"q1","status":"Completed"}"#)
        .await;
    broker
        .send("q2", br#"{"jobId":"q2","status":"Completed"}"#)
        .await;
    wait_for_status(&db, "q1", "Completed").await;
    wait_for_status(&db, "q2", "Completed").await;
    assert_eq!(history_count(&db, "q1").await, 2);
}
