//! KafkaListener: consumes the enrichment pipeline's status events and hands each to the
//! JobStore. An event's offset is stored only once the store says its change (or its dead
//! letter) is durable, in partition order; librdkafka commits only stored offsets. A bounded
//! number of events is in flight, so a slow database stops the pulling instead of filling
//! memory.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message as _};
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::config::KafkaSettings;
use crate::domain::{parse_event, Position};
use crate::kafka::{self, ListenerConsumer};
use crate::metrics::METRICS;
use crate::store::{NewDeadLetter, WriteOp, WriteOutcome};

use super::job_store::{JobStore, StoreError, Write};
use super::supervision::{contained, report_crash, Crash};

/// Counters since start.
#[derive(Debug, Default)]
pub struct KafkaStats {
    pub consumed: AtomicU64,
    pub applied: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub restarts: AtomicU64,
}

/// Stop consuming; resolves once events in flight are written and their offsets committed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopListening;

pub struct KafkaListener {
    settings: KafkaSettings,
    store: Addr<JobStore>,
    stats: Arc<KafkaStats>,
    stop: watch::Sender<bool>,
    crash: watch::Sender<u64>,
    finished: Vec<oneshot::Sender<()>>,
    running: bool,
}

/// Most events handed to the store and not yet durable, by count and by payload bytes.
const MAX_IN_FLIGHT: usize = 2_000;
const MAX_IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;
/// Longest wait for the store at shutdown before leaving the rest to redelivery.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

impl KafkaListener {
    pub fn new(settings: KafkaSettings, store: Addr<JobStore>, stats: Arc<KafkaStats>) -> Self {
        let (stop, _) = watch::channel(false);
        let (crash, _) = watch::channel(0);
        KafkaListener {
            settings,
            store,
            stats,
            stop,
            crash,
            finished: Vec::new(),
            running: false,
        }
    }
}

impl Actor for KafkaListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(
            actor = "kafka_listener",
            brokers = %self.settings.bootstrap_servers,
            topic = %self.settings.topic,
            group = %self.settings.group_id,
            properties = %kafka::describe_config(&self.settings),
            "listening for status events"
        );
        self.running = true;
        let work = listen(
            self.settings.clone(),
            self.store.clone(),
            self.stats.clone(),
            self.stop.subscribe(),
            self.crash.subscribe(),
        )
        .instrument(info_span!("kafka_listener", actor = "kafka_listener"));
        ctx.spawn(work.into_actor(self).map(|_, act, _| {
            act.running = false;
            for waiter in act.finished.drain(..) {
                let _ = waiter.send(());
            }
        }));
    }
}

impl Handler<Crash> for KafkaListener {
    type Result = ();

    /// Panics the running consumer, as a bug in event handling would.
    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        self.crash.send_modify(|n| *n += 1);
    }
}

impl Handler<StopListening> for KafkaListener {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopListening, _: &mut Self::Context) -> Self::Result {
        self.stop.send_replace(true);
        if !self.running {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.finished.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// Consumes until told to stop. A consumer that fails or panics is dropped and rebuilt after
/// a pause (doubling up to 30 s), resuming from the committed offsets, so nothing unwritten is
/// skipped.
async fn listen(
    settings: KafkaSettings,
    store: Addr<JobStore>,
    stats: Arc<KafkaStats>,
    mut stop: watch::Receiver<bool>,
    crash: watch::Receiver<u64>,
) {
    let mut pause = Duration::from_millis(500);
    loop {
        let attempt = {
            let (settings, store, stats) = (settings.clone(), store.clone(), stats.clone());
            let (mut stop, mut crash) = (stop.clone(), crash.clone());
            crash.mark_unchanged();
            contained(async move {
                let consumer = kafka::consumer(&settings)?;
                consume(&consumer, &settings, &store, &stats, &mut stop, &mut crash).await
            })
            .await
        };
        match attempt {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                stats.restarts.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, retry_in = ?pause, "Kafka listener stopped; restarting from the committed offsets");
            }
            Err(reason) => {
                stats.restarts.fetch_add(1, Ordering::Relaxed);
                report_crash("kafka_listener", &reason);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// An event handed to the store, waiting for its answer.
struct InFlight {
    position: Position,
    /// The event as received, kept until durable in case the store refuses its change.
    received: NewDeadLetter,
}

impl InFlight {
    fn bytes(&self) -> usize {
        self.received.payload.len()
    }
}

type Ack = Pin<Box<dyn std::future::Future<Output = (InFlight, Result<WriteOutcome, StoreError>)>>>;

async fn consume(
    consumer: &ListenerConsumer,
    settings: &KafkaSettings,
    store: &Addr<JobStore>,
    stats: &KafkaStats,
    stop: &mut watch::Receiver<bool>,
    crash: &mut watch::Receiver<u64>,
) -> Result<(), String> {
    let mut in_flight: FuturesOrdered<Ack> = FuturesOrdered::new();
    let mut in_flight_bytes = 0usize;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            Ok(()) = crash.changed() => panic!("injected crash"),
            Some((event, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                in_flight_bytes -= event.bytes();
                settle(consumer, store, stats, event, answer).await?;
            }
            received = consumer.recv(),
                if in_flight.len() < MAX_IN_FLIGHT && in_flight_bytes < MAX_IN_FLIGHT_BYTES =>
            match received {
                Ok(message) => {
                    consumer.context().note_reachable();
                    stats.consumed.fetch_add(1, Ordering::Relaxed);
                    METRICS.kafka_events.with_label_values(&["consumed"]).inc();
                    let (event, op) = to_write(&message, settings.max_payload_bytes);
                    in_flight_bytes += event.bytes();
                    let answer = store.send(Write(op));
                    in_flight.push_back(Box::pin(async move {
                        let answer = answer.await.map_err(StoreError::from).and_then(|r| r);
                        (event, answer)
                    }));
                }
                Err(e) => debug!(error = %e, "consumer error"),
            },
        }
    }
    // Shutdown: let what is in flight land, store its offsets, commit.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some((event, answer)) = in_flight.next().await {
            settle(consumer, store, stats, event, answer).await?;
        }
        Ok::<(), String>(())
    })
    .await;
    match drained {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "stopped with events unwritten; they will be redelivered"),
        Err(_) => warn!("events still unwritten at shutdown; they will be redelivered"),
    }
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => info!("offsets of written events committed"),
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::error::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(e) => {
            warn!(error = %e, "final offset commit failed; the last events will be redelivered")
        }
    }
    Ok(())
}

/// Handles the store's answer for the oldest event in flight: store its offset once durable.
async fn settle(
    consumer: &ListenerConsumer,
    store: &Addr<JobStore>,
    stats: &KafkaStats,
    event: InFlight,
    answer: Result<WriteOutcome, StoreError>,
) -> Result<(), String> {
    let p = &event.position;
    match answer {
        Ok(WriteOutcome::DeadLettered { duplicate }) => {
            if !duplicate {
                stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                METRICS
                    .kafka_events
                    .with_label_values(&["dead_lettered"])
                    .inc();
            }
            warn!(topic = %p.topic, partition = p.partition, offset = p.offset,
                error = %event.received.error, "malformed event kept in dead_letters");
        }
        Ok(outcome) => {
            stats.applied.fetch_add(1, Ordering::Relaxed);
            METRICS.kafka_events.with_label_values(&["applied"]).inc();
            debug!(topic = %p.topic, partition = p.partition, offset = p.offset, ?outcome, "event applied");
        }
        Err(StoreError::Refused(refusal)) => {
            // The database will never take this change: keep the event as a dead letter so
            // the partition can move on without losing it.
            let letter = NewDeadLetter {
                error: format!("the store refused the event: {refusal}"),
                ..event.received.clone()
            };
            match store.send(Write(WriteOp::DeadLetter(letter))).await {
                Ok(Ok(_)) => {
                    stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    METRICS
                        .kafka_events
                        .with_label_values(&["dead_lettered"])
                        .inc();
                }
                other => return Err(format!("could not keep a refused event: {other:?}")),
            }
        }
        Err(e) => return Err(format!("the store did not confirm an event: {e}")),
    }
    consumer
        .store_offset(&p.topic, p.partition, p.offset)
        .map_err(|e| {
            format!(
                "cannot store offset {}[{}]@{}: {e}",
                p.topic, p.partition, p.offset
            )
        })
}

/// The write an event asks for: its change, or its dead letter.
fn to_write(message: &BorrowedMessage<'_>, max_payload: usize) -> (InFlight, WriteOp) {
    let position = Position {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
    };
    let payload = message.payload().unwrap_or_default();
    let received_at = Utc::now();
    let letter = |error: String| NewDeadLetter {
        source: "kafka".into(),
        topic: Some(position.topic.clone()),
        partition: Some(position.partition),
        offset: Some(position.offset),
        key: message.key().map(<[u8]>::to_vec),
        payload: payload.to_vec(),
        error,
        received_at,
    };
    let parsed = if message.payload().is_none() {
        Err("message has no payload".to_owned())
    } else {
        parse_event(payload, max_payload).map_err(|e| e.to_string())
    };
    match parsed {
        Ok(event) => {
            let received = letter(String::new());
            (
                InFlight {
                    position: position.clone(),
                    received,
                },
                WriteOp::QueueEvent {
                    event,
                    position: Some(position),
                    received_at,
                },
            )
        }
        Err(error) => {
            let dead = letter(error);
            (
                InFlight {
                    position,
                    received: dead.clone(),
                },
                WriteOp::DeadLetter(dead),
            )
        }
    }
}
