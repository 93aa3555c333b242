//! JobStore: the only writer. Changes that arrive while a transaction is running are gathered
//! and written together in the next one (group commit); on PostgreSQL and MySQL/MariaDB a second
//! batch of other jobs' changes is written beside it (`batching`). Each sender hears back once
//! its change is durable. If the database is away the batch is retried with backoff until it
//! lands.
//!
//! Its parts: `sharing` (leases when several instances share the database), `reads` (the due
//! jobs, actions and notifications the other actors ask for, cut to this instance's share),
//! `sweeps` (the timeout sweep and retention, on the leader), `writer` (one batch's durable
//! write). What a change does to a row is decided in `crate::domain` and applied by
//! `crate::store::batch`.

mod reads;
mod sharing;
mod sweeps;
mod writer;

pub use sharing::{OnBucketsGained, ReleaseLeases, StopClaiming};
pub use sweeps::Prune;

use sharing::Sharing;
use writer::Writer;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use sea_orm::{DatabaseBackend, DatabaseConnection};
use tokio::sync::oneshot;
use tracing::{debug, info_span, warn, Instrument};

use crate::config::{NotificationSettings, RetentionSettings, StoreSettings};
use crate::events::{ActorCrashed, Events};
use crate::health::Heartbeat;
use crate::metrics::Metrics;
use crate::notify::NotifyRules;
use crate::store::leases::Held;
use crate::store::mapped::Mapping;
use crate::store::statistics::{self, Growth};
use crate::store::{self, Inserted, Rules};
use crate::store_api::{
    Drain, Fence, FencedWrite, GetStats, ResendFailed, StoreError, StoreHandle, StoreStats,
    SweepTimeouts, Write, WriteOp, WriteOutcome,
};

use super::batching::{Batch, Batches, Scoped};
pub use super::store_health::StoreHealth;
use super::supervision::contained;
#[cfg(feature = "fault-injection")]
use super::supervision::Panicked;
#[cfg(feature = "fault-injection")]
use super::supervision::{Crash, Stall};

struct Pending {
    op: WriteOp,
    fence: Option<Fence>,
    reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

impl Scoped for Pending {
    fn scope(&self) -> crate::store_api::Scope<'_> {
        self.op.scope()
    }
}

pub struct JobStore {
    db: DatabaseConnection,
    settings: StoreSettings,
    rules: Arc<Rules>,
    mapping: Arc<Mapping>,
    notify: Arc<NotifyRules>,
    /// `running_long_factor` and `running_long_min_runs`.
    running_long: (f64, usize),
    sharing: Option<Sharing>,
    sweep: bool,
    /// What ages out, and whether a run is under way (never two at once).
    retention: Option<RetentionSettings>,
    pruning: bool,
    batches: Batches<Pending>,
    /// Most batches written side by side (one on SQLite, which has a single writer anyway).
    concurrency: usize,
    /// Only by injected faults: no batch starts until the restart.
    halted: bool,
    /// New rows per table, for keeping PostgreSQL's statistics current.
    growth: Growth,
    analyze_refused: bool,
    drain_waiters: Vec<oneshot::Sender<()>>,
    health: Arc<StoreHealth>,
    events: Events,
    /// SQLite only: whose turn it is to write, between the batches and retention's deletes. A
    /// batch that met a delete inside SQLite's busy handler would sleep up to 100 ms a retry;
    /// waiting for its turn here, it starts the moment the delete commits.
    turn: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Told when a batch ended a job others wait for, so that the Submitter looks at once.
    wake: Option<Arc<tokio::sync::Notify>>,
}

/// The store's mailbox is deep on purpose: bursts of changes are what batching feeds on, and
/// every sender waits for its answer, so the depth is bounded by the senders' own limits.
const MAILBOX_CAPACITY: usize = 65_536;

/// How often an idle store says it is alive.
const IDLE_BEAT: Duration = Duration::from_secs(1);

impl JobStore {
    /// A store that applies changes with `rules`. `stale_after` is how long readiness waits
    /// for a commit (or an idle beat) before it calls the store stuck.
    pub fn new(
        db: DatabaseConnection,
        settings: StoreSettings,
        rules: Rules,
        events: Events,
    ) -> Self {
        let stale_after = (settings.retry_max * 5).max(IDLE_BEAT * 3);
        let refusing_after = settings.refusing_after;
        let sqlite = db.get_database_backend() == DatabaseBackend::Sqlite;
        let concurrency = if sqlite {
            1
        } else {
            settings.concurrent_batches
        };
        JobStore {
            db,
            settings,
            rules: Arc::new(rules),
            mapping: Arc::new(Mapping::default()),
            notify: Arc::new(NotifyRules::default()),
            running_long: (2.0, 5),
            sharing: None,
            sweep: false,
            retention: None,
            pruning: false,
            batches: Batches::default(),
            concurrency,
            halted: false,
            growth: Growth::default(),
            analyze_refused: false,
            drain_waiters: Vec::new(),
            health: Arc::new(StoreHealth::new(
                Heartbeat::new("job_store", stale_after),
                refusing_after,
            )),
            events,
            turn: sqlite.then(|| Arc::new(tokio::sync::Mutex::new(()))),
            wake: None,
        }
    }

    /// Keep the application's own tables true instead of jobwarden's (`[tables]`, checked).
    /// Put the notifications `rules` ask for in the outbox, with the transitions that trigger
    /// them.
    pub fn with_notifications(mut self, settings: &NotificationSettings) -> Self {
        self.notify = Arc::new(NotifyRules::from_settings(settings));
        self.running_long = (settings.running_long_factor, settings.running_long_min_runs);
        self
    }

    /// Tell `wake` whenever a batch ends a job another job waits for.
    pub fn with_wake(mut self, wake: Arc<tokio::sync::Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    pub fn with_mapping(mut self, mapping: Arc<Mapping>) -> Self {
        self.mapping = mapping;
        self
    }

    /// Share the database with other instances as `instance`: poll only the buckets leased
    /// to it (starting with `held`, renewed every third of `lease`), run the once-per-cluster
    /// work only while it leads, and refuse poll results whose lease has passed on.
    pub fn shared_as(mut self, instance: String, lease: Duration, held: Held) -> Self {
        let live = held.live_instances;
        self.sharing = Some(Sharing {
            instance,
            started_at: Utc::now(),
            lease,
            held,
            renewing: false,
            on_gain: None,
            claiming: true,
            released: false,
            renewal_ended: Vec::new(),
            catch_up_until: Instant::now() + lease * 2,
            last_live: live,
        });
        self
    }

    /// Delete what has aged out under `settings` every `retention.every`, on the leader.
    pub fn with_retention(mut self, settings: RetentionSettings) -> Self {
        self.retention = Some(settings);
        self
    }

    /// Also apply the timeout rules to every unfinished job every `store.sweep_interval`.
    pub fn with_timeout_sweep(mut self) -> Self {
        self.sweep = true;
        self
    }

    /// Starts the actor on a thread of its own (building and decoding SQL is the heaviest
    /// work in the process; pollers and the listener keep theirs), with its deep mailbox in
    /// place from the first message on. Under a supervisor: after a crash it restarts with the
    /// same address and mailbox, and the changes still pending are written by the restarted
    /// actor.
    pub fn launch(self) -> Addr<Self> {
        let arbiter = Arbiter::new();
        let (ready, deep) = std::sync::mpsc::channel();
        let addr =
            Supervisor::start_in_arbiter(&arbiter.handle(), move |ctx: &mut Context<Self>| {
                ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
                let _ = ready.send(());
                self
            });
        // Until the new thread has set the capacity, senders would queue at the default 16;
        // this wait is the few microseconds that thread takes to start.
        let _ = deep.recv();
        addr
    }

    pub fn health(&self) -> Arc<StoreHealth> {
        self.health.clone()
    }

    fn enqueue(
        &mut self,
        op: WriteOp,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<WriteOutcome, StoreError>> {
        self.enqueue_fenced(op, None, ctx)
    }

    fn enqueue_fenced(
        &mut self,
        op: WriteOp,
        fence: Option<Fence>,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<WriteOutcome, StoreError>> {
        let (reply, answer) = oneshot::channel();
        self.batches.push(Pending { op, fence, reply });
        self.flush(ctx);
        answer
    }

    /// Starts every batch that may be written now: while one is in flight the next forms
    /// from changes of other jobs, so the database works on one while this thread builds
    /// the other.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.halted {
            return;
        }
        while let Some(batch) = self.batches.next(self.settings.max_batch, self.concurrency) {
            self.start(batch, ctx);
        }
        if self.batches.is_idle() {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    fn start(&mut self, mut batch: Batch<Pending>, ctx: &mut Context<Self>) {
        let held = batch.take_held();
        let take = batch.items.len();
        let mut ops = Vec::with_capacity(take);
        let mut fences = Vec::with_capacity(take);
        let mut replies = Vec::with_capacity(take);
        for p in batch.items {
            ops.push(p.op);
            fences.push(p.fence);
            replies.push(p.reply);
        }
        self.health
            .largest_batch
            .fetch_max(ops.len(), Ordering::Relaxed);
        let span = info_span!("store_batch", actor = "job_store", size = ops.len());
        let writer = Writer {
            db: self.db.clone(),
            settings: self.settings.clone(),
            rules: self.rules.clone(),
            mapping: self.mapping.clone(),
            notify: self.notify.clone(),
            instance: self.sharing.as_ref().map(|s| s.instance.clone()),
            health: self.health.clone(),
            events: self.events.clone(),
            turn: self.turn.clone(),
            wake: self.wake.clone(),
        };
        let write = async move { writer.write_durably(ops, fences).await }.instrument(span);
        ctx.spawn(
            contained(write)
                .into_actor(self)
                .map(move |outcomes, act, ctx| {
                    act.batches.done(held);
                    match outcomes {
                        Ok((outcomes, inserted)) => {
                            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                                // A sender that stopped waiting has nothing to be told.
                                let _ = reply.send(outcome.map_err(StoreError::Refused));
                            }
                            act.flush(ctx);
                            act.keep_statistics(inserted, ctx);
                        }
                        Err(reason) => {
                            // Nothing of the batch is known to be durable: its senders hear so and
                            // treat their changes as not done.
                            for reply in replies {
                                let _ = reply.send(Err(StoreError::Gone(format!(
                                    "store crashed: {reason}"
                                ))));
                            }
                            act.crashed(reason.message(), ctx);
                        }
                    }
                }),
        );
    }

    /// On PostgreSQL, analyzes the tables that grew past a mark (see `store::statistics`),
    /// beside the writes; a database that refuses (not the tables' owner) is asked no more.
    fn keep_statistics(&mut self, inserted: Inserted, ctx: &mut Context<Self>) {
        if self.db.get_database_backend() != DatabaseBackend::Postgres || self.analyze_refused {
            return;
        }
        for (table, count) in self.growth.note(inserted) {
            let db = self.db.clone();
            let refresh = async move { statistics::refresh_if_stale(&db, table, count).await };
            ctx.spawn(
                refresh
                    .into_actor(self)
                    .map(move |result, act, _| match result {
                        Ok(analyzed) => {
                            debug!(table = table.name(), analyzed, "statistics looked at")
                        }
                        Err(e) if !store::is_transient(&e) => {
                            act.analyze_refused = true;
                            warn!(
                                table = table.name(),
                                error = %e,
                                "cannot ANALYZE jobwarden's tables; their statistics are left to \
                                 autovacuum (a fast-growing table may be read slowly until it \
                                 runs)"
                            );
                        }
                        Err(e) => debug!(table = table.name(), error = %e, "ANALYZE failed"),
                    }),
            );
        }
    }

    fn crashed(&mut self, reason: &str, ctx: &mut Context<Self>) {
        self.events.emit(ActorCrashed {
            actor: "job_store",
            reason,
        });
        ctx.stop();
    }
}

/// A store the other parts can talk to.
impl From<&Addr<JobStore>> for StoreHandle {
    fn from(addr: &Addr<JobStore>) -> Self {
        StoreHandle::new(
            addr.clone().recipient(),
            addr.clone().recipient(),
            addr.clone().recipient(),
            addr.clone().recipient(),
            addr.clone().recipient(),
        )
        .with_actions(addr.clone().recipient())
        .with_resend(addr.clone().recipient())
    }
}

impl Actor for JobStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        debug!(actor = "job_store", "started");
        if self.sweep {
            ctx.run_interval(self.settings.sweep_interval, |_, ctx| {
                ctx.notify(SweepTimeouts { now: Utc::now() });
            });
        }
        if let Some(retention) = self.retention.as_ref().filter(|r| r.is_enabled()) {
            ctx.run_interval(retention.every, |_, ctx| {
                ctx.notify(Prune {
                    now: Utc::now(),
                    dry_run: false,
                });
            });
        }
        if let Some(sharing) = &self.sharing {
            ctx.run_interval(sharing.lease / 3, |act, ctx| act.renew(ctx));
            // The first renewal soon: an instance started beside others settles its share
            // in seconds, not after a renewal period.
            ctx.run_later(sharing.catch_up(), |act, ctx| act.renew(ctx));
        }
        ctx.run_interval(IDLE_BEAT, |act, _| {
            if act.batches.is_idle() && !act.halted {
                act.health.heartbeat.beat();
            }
        });
        // After a restart, carry on with what was pending.
        self.flush(ctx);
    }
}

impl Supervised for JobStore {
    fn restarting(&mut self, _: &mut Self::Context) {
        // The batches in flight were dropped with the old context; their senders hear that
        // the store stopped.
        self.batches.forget_in_flight();
        self.halted = false;
        // A renewal or a prune in flight was dropped with the old context too: left marked
        // as under way, none would ever run again, and this instance's share would expire
        // unpolled.
        self.pruning = false;
        if let Some(sharing) = self.sharing.as_mut() {
            sharing.renewing = false;
            for waiter in sharing.renewal_ended.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<Crash> for JobStore {
    type Result = ();

    /// Crashes inside the guarded write path, as a bug in a batch would.
    fn handle(&mut self, _: Crash, ctx: &mut Self::Context) {
        self.halted = true;
        ctx.spawn(
            contained(async { panic!("injected crash") })
                .into_actor(self)
                .map(|outcome: Result<(), Panicked>, act, ctx| {
                    act.halted = false;
                    if let Err(reason) = outcome {
                        act.crashed(reason.message(), ctx);
                    }
                }),
        );
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<Stall> for JobStore {
    type Result = ();

    /// A transaction that never returns: changes queue up, nothing commits, the actor still
    /// answers messages. Only a restart (a `Crash`) ends it.
    fn handle(&mut self, _: Stall, ctx: &mut Self::Context) {
        self.halted = true;
        ctx.spawn(fut::wrap_future(std::future::pending::<()>()));
    }
}

/// The answer to a change, once it is durable (or the store is gone).
async fn answered(
    answer: oneshot::Receiver<Result<WriteOutcome, StoreError>>,
) -> Result<WriteOutcome, StoreError> {
    answer
        .await
        .unwrap_or_else(|_| Err(StoreError::Gone("store stopped before answering".into())))
}

impl Handler<Write> for JobStore {
    type Result = ResponseFuture<Result<WriteOutcome, StoreError>>;

    fn handle(&mut self, msg: Write, ctx: &mut Self::Context) -> Self::Result {
        Box::pin(answered(self.enqueue(msg.0, ctx)))
    }
}

impl Handler<FencedWrite> for JobStore {
    type Result = ResponseFuture<Result<WriteOutcome, StoreError>>;

    fn handle(&mut self, msg: FencedWrite, ctx: &mut Self::Context) -> Self::Result {
        Box::pin(answered(self.enqueue_fenced(msg.op, Some(msg.fence), ctx)))
    }
}

impl Handler<ResendFailed> for JobStore {
    type Result = ResponseFuture<Result<u64, StoreError>>;

    fn handle(&mut self, msg: ResendFailed, _: &mut Self::Context) -> Self::Result {
        let db = self.db.clone();
        Box::pin(async move {
            store::outbox::resend_failed(&db, msg.since, msg.channel.as_deref(), msg.now)
                .await
                .map_err(|e| StoreError::Read(e.to_string()))
        })
    }
}

impl Handler<Drain> for JobStore {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.drain_waiters.push(tx);
        self.flush(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<GetStats> for JobStore {
    type Result = StoreStats;

    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> StoreStats {
        let m: &Metrics = self.events.metrics();
        StoreStats {
            transactions: m.store_batch_size.get_sample_count(),
            changes: m.store_batch_size.get_sample_sum() as u64,
            retries: m.store_retries.get(),
            largest_batch: self.health.largest_batch.load(Ordering::Relaxed),
            most_in_flight: self.batches.most_in_flight(),
            pending: self.batches.pending(),
            database_up: self.health.database_up(),
        }
    }
}
