//! KafkaListener: consumes the enrichment pipeline's status events and hands each to the
//! JobStore. An event's offset is stored only once the store says its change (or its dead
//! letter) is durable, in partition order; librdkafka commits only stored offsets. A bounded
//! number of events is in flight, so a slow database stops the pulling instead of filling
//! memory.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message as _};
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::KafkaSettings;
use crate::domain::{parse_event, Position};
use crate::events::{
    ActorCrashed, EventApplied, EventConsumed, EventDeadLettered, Events, ListenerRestarting,
};
use crate::health::{Heartbeat, Reach};
use crate::kafka::{self, KafkaSetupError, ListenerConsumer};
use crate::store_api::{NewDeadLetter, StoreError, StoreHandle, WriteOp, WriteOutcome};

use super::supervision::{contained, FaultSwitch, FaultWatch};
#[cfg(feature = "fault-injection")]
use super::supervision::{Crash, Fault, Stall};

/// Why a consumer had to be dropped and rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("the store did not confirm the event at {topic}[{partition}]@{offset}: {source}")]
    Unconfirmed {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: StoreError,
    },
    #[error("cannot store offset {topic}[{partition}]@{offset}: {source}")]
    StoreOffset {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

/// Stop consuming; resolves once events in flight are written and their offsets committed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopListening;

pub struct KafkaListener {
    settings: KafkaSettings,
    store: StoreHandle,
    events: Events,
    heartbeat: Arc<Heartbeat>,
    brokers: Arc<Reach>,
    stop: watch::Sender<bool>,
    faults: FaultSwitch,
    finished: Vec<oneshot::Sender<()>>,
    running: bool,
}

/// Most events handed to the store and not yet durable, by count and by payload bytes.
const MAX_IN_FLIGHT: usize = 2_000;
const MAX_IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;
/// Longest wait for the store at shutdown before leaving the rest to redelivery.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Pauses before rebuilding a failed consumer: doubling from the first to the most.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// How often the consume loop says it is alive while nothing arrives.
const BEAT: Duration = Duration::from_secs(1);
/// Readiness calls the listener stuck after this long without a turn of its loop.
pub const STALE_AFTER: Duration = Duration::from_secs(5);
/// Readiness calls brokers never reached after this long (a refused connection says so at
/// once; this is for one that never answers).
pub const FIRST_CONTACT_WITHIN: Duration = Duration::from_secs(15);

impl KafkaListener {
    pub fn new(settings: KafkaSettings, store: StoreHandle, events: Events) -> Self {
        let (stop, _) = watch::channel(false);
        KafkaListener {
            settings,
            store,
            events,
            heartbeat: Heartbeat::new("kafka_listener", STALE_AFTER),
            brokers: Reach::new("brokers", FIRST_CONTACT_WITHIN),
            stop,
            faults: FaultSwitch::default(),
            finished: Vec::new(),
            running: false,
        }
    }
}

impl KafkaListener {
    /// Its heartbeat, for readiness: beats at every turn of the consume loop.
    pub fn heartbeat(&self) -> Arc<Heartbeat> {
        self.heartbeat.clone()
    }

    /// Whether its brokers answer, for readiness: a loop that turns while librdkafka retries
    /// unreachable brokers is alive but consumes nothing.
    pub fn brokers(&self) -> Arc<Reach> {
        self.brokers.clone()
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
            Listening {
                settings: self.settings.clone(),
                store: self.store.clone(),
                events: self.events.clone(),
                heartbeat: self.heartbeat.clone(),
                brokers: self.brokers.clone(),
            },
            self.stop.subscribe(),
            self.faults.clone(),
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

#[cfg(feature = "fault-injection")]
impl Handler<Crash> for KafkaListener {
    type Result = ();

    /// Panics the running consumer, as a bug in event handling would.
    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        self.faults.trip(Fault::Panic);
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<Stall> for KafkaListener {
    type Result = ();

    /// Hangs the consume loop, as one stuck on something would.
    fn handle(&mut self, _: Stall, _: &mut Self::Context) {
        self.faults.trip(Fault::Hang);
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

/// What the consume loop works with; cloned for each consumer it builds.
#[derive(Clone)]
struct Listening {
    settings: KafkaSettings,
    store: StoreHandle,
    events: Events,
    heartbeat: Arc<Heartbeat>,
    brokers: Arc<Reach>,
}

/// Consumes until told to stop. A consumer that fails or panics is dropped and rebuilt after
/// a pause (doubling up to 30 s), resuming from the committed offsets, so nothing unwritten is
/// skipped.
async fn listen(listening: Listening, mut stop: watch::Receiver<bool>, faults: FaultSwitch) {
    let mut pause = FIRST_PAUSE;
    loop {
        let started = std::time::Instant::now();
        let attempt = {
            let listening = listening.clone();
            let (mut stop, mut faults) = (stop.clone(), faults.watch());
            contained(async move {
                let mut consumer = Closing::new(kafka::consumer(
                    &listening.settings,
                    listening.events.clone(),
                    listening.brokers.clone(),
                )?);
                let consumed = consume(consumer.get(), &listening, &mut stop, &mut faults).await;
                consumer.inline = consumed.is_ok();
                consumed
            })
            .await
        };
        match attempt {
            Ok(Ok(())) => return,
            Ok(Err(e)) => listening.events.emit(ListenerRestarting {
                error: &e,
                retry_in: pause,
            }),
            Err(reason) => listening.events.emit(ActorCrashed {
                actor: "kafka_listener",
                reason: reason.message(),
            }),
        }
        // A consumer that ran well for a while failed afresh, not again: start the backoff over.
        if started.elapsed() > MAX_PAUSE * 2 {
            pause = FIRST_PAUSE;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Owns a consumer until it is closed. Closing makes librdkafka revoke the partitions and
/// leave the group, which can block (seen in tests: a consumer dropped while a rebalance was
/// pending waited forever in `assign`). After a clean stop it closes right here, as shutdown
/// wants; after a failure or a panic it closes on a thread of its own, so the actors sharing
/// this thread never wait on it.
struct Closing {
    consumer: Option<ListenerConsumer>,
    inline: bool,
}

impl Closing {
    fn new(consumer: ListenerConsumer) -> Self {
        Closing {
            consumer: Some(consumer),
            inline: false,
        }
    }

    fn get(&self) -> &ListenerConsumer {
        self.consumer
            .as_ref()
            .expect("the consumer is only taken when dropped")
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        if self.inline {
            return drop(consumer);
        }
        let closed = std::thread::Builder::new()
            .name("kafka-close".into())
            .spawn(move || drop(consumer));
        if let Err(e) = closed {
            warn!(error = %e, "cannot close the Kafka consumer on a thread of its own");
        }
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
    listening: &Listening,
    stop: &mut watch::Receiver<bool>,
    faults: &mut FaultWatch,
) -> Result<(), ListenerError> {
    let Listening {
        settings,
        store,
        events,
        heartbeat,
        ..
    } = listening;
    let mut in_flight: FuturesOrdered<Ack> = FuturesOrdered::new();
    let mut in_flight_bytes = 0usize;
    let mut beat = tokio::time::interval(BEAT);
    loop {
        heartbeat.beat();
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            // Only with an injected hang: the loop stops turning, as a stuck one would (an
            // injected crash still ends it).
            _ = faults.tripped() => faults.hang().await,
            Some((event, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                in_flight_bytes -= event.bytes();
                settle(consumer, store, events, event, answer).await?;
            }
            received = consumer.recv(),
                if in_flight.len() < MAX_IN_FLIGHT && in_flight_bytes < MAX_IN_FLIGHT_BYTES =>
            match received {
                Ok(message) => {
                    consumer.context().note_reachable();
                    events.emit(EventConsumed);
                    let (event, op) = to_write(&message, settings.max_payload_bytes);
                    in_flight_bytes += event.bytes();
                    let answer = store.write(op);
                    in_flight.push_back(Box::pin(async move { (event, answer.await) }));
                }
                Err(e) => debug!(error = %e, "consumer error"),
            },
            _ = beat.tick() => {}
        }
    }
    // Shutdown: let what is in flight land, store its offsets, commit.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some((event, answer)) = in_flight.next().await {
            settle(consumer, store, events, event, answer).await?;
        }
        Ok::<(), ListenerError>(())
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
    store: &StoreHandle,
    events: &Events,
    event: InFlight,
    answer: Result<WriteOutcome, StoreError>,
) -> Result<(), ListenerError> {
    let p = &event.position;
    match answer {
        Ok(WriteOutcome::DeadLettered { duplicate }) => events.emit(EventDeadLettered {
            position: p,
            reason: &event.received.error,
            duplicate,
        }),
        Ok(outcome) => events.emit(EventApplied {
            position: p,
            outcome: &outcome,
        }),
        Err(StoreError::Refused(refusal)) => {
            // The database will never take this change: keep the event as a dead letter so
            // the partition can move on without losing it.
            let letter = NewDeadLetter {
                error: format!("the store refused the event: {refusal}"),
                ..event.received.clone()
            };
            let reason = letter.error.clone();
            let duplicate = match store.write(WriteOp::DeadLetter(letter)).await {
                Ok(WriteOutcome::DeadLettered { duplicate }) => duplicate,
                Ok(_) => false,
                Err(source) => return Err(unconfirmed(p, source)),
            };
            events.emit(EventDeadLettered {
                position: p,
                reason: &reason,
                duplicate,
            });
        }
        Err(e) => return Err(unconfirmed(p, e)),
    }
    match consumer.store_offset(&p.topic, p.partition, p.offset) {
        // A rebalance gave the partition to another member while this event was being written:
        // that member resumes from the last committed offset and applies it again, a no-op.
        // Rebuilding this consumer for it would only start another rebalance (and a consumer
        // closed mid-rebalance can hang, holding its partitions).
        Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {
            debug!(topic = %p.topic, partition = p.partition, offset = p.offset,
                "partition no longer assigned; its new owner applies the event again");
            Ok(())
        }
        stored => stored.map_err(|source| ListenerError::StoreOffset {
            topic: p.topic.clone(),
            partition: p.partition,
            offset: p.offset,
            source,
        }),
    }
}

fn unconfirmed(p: &Position, source: StoreError) -> ListenerError {
    ListenerError::Unconfirmed {
        topic: p.topic.clone(),
        partition: p.partition,
        offset: p.offset,
        source,
    }
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
