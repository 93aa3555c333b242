//! JobStore: the only writer. Changes that arrive while a transaction is running are gathered
//! and written together in the next one (group commit); on PostgreSQL and MySQL/MariaDB a second
//! batch of other jobs' changes is written beside it (`batching`). Each sender hears back once
//! its change is durable. If the database is away the batch is retried with backoff until it
//! lands.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use sea_orm::{DatabaseBackend, DatabaseConnection, DbErr};
use tokio::sync::oneshot;
use tracing::{debug, info_span, warn, Instrument};

use crate::config::{EventKind, NotificationSettings, RetentionSettings, StoreSettings};
use crate::domain::Applied;
use crate::events::{
    ActorCrashed, BatchCommitted, ChangeRefused, DatabaseBack, DatabaseUnreachable, Events,
    LeaseRenewalFailed, LeasesRenewed, RowsPruned, TimeoutsSwept, WriteFenced,
};
use crate::health::Heartbeat;
use crate::metrics::Metrics;
use crate::notify::NotifyRules;
use crate::store::leases::{self, Held};
use crate::store::mapped::{self, Mapping};
use crate::store::retention::{self, Aged, Cutoffs};
use crate::store::statistics::{self, Growth};
use crate::store::{self, Committed, Inserted, Rules, WriteContext};
use crate::store_api::{
    Drain, DueAction, DueActions, DueJobs, DuePage, Fence, FencedWrite, GetStats, OpError,
    OutboxRow, PendingNotifications, ResendFailed, StoreError, StoreHandle, StoreStats,
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

/// This instance's part when several share the database: who it is and what it holds.
struct Sharing {
    instance: String,
    started_at: DateTime<Utc>,
    lease: Duration,
    held: Held,
    renewing: bool,
    on_gain: Option<Recipient<crate::actors::scheduler::Tick>>,
    /// False once shutdown began: renewals keep what is held, claim nothing more.
    claiming: bool,
    /// Until when renewals come quickly while the share is unsettled (this instance holds
    /// less than its fair share, or is handing buckets over): after a start, and after the
    /// number of live instances changed. Fencing keeps quick handovers safe.
    catch_up_until: Instant,
    last_live: usize,
}

impl Sharing {
    /// The pause between renewals while the share settles.
    fn catch_up(&self) -> Duration {
        (self.lease / 6).min(Duration::from_secs(1))
    }
}

/// Shutdown began: keep renewing what is held until the last write, claim nothing new.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopClaiming;

/// Who to tell when this instance gains buckets: their jobs are polled in a cycle started
/// then, not at the next tick (what a dead instance left is taken over sooner).
#[derive(Message)]
#[rtype(result = "()")]
pub struct OnBucketsGained(pub Recipient<crate::actors::scheduler::Tick>);

/// Delete what `[retention]` no longer keeps (only on the leader), or with `dry_run` only count
/// it; answers each `[retention]` key with its rows.
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<(&'static str, u64)>, StoreError>")]
pub struct Prune {
    pub now: DateTime<Utc>,
    pub dry_run: bool,
}

/// Give back every lease this instance holds (at shutdown, after the last write).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReleaseLeases;

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
}

/// The store's mailbox is deep on purpose: bursts of changes are what batching feeds on, and
/// every sender waits for its answer, so the depth is bounded by the senders' own limits.
const MAILBOX_CAPACITY: usize = 65_536;

/// Most jobs one sweep considers; the next sweep takes the rest.
const SWEEP_PAGE: u64 = 10_000;

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
        let concurrency = match db.get_database_backend() {
            DatabaseBackend::Sqlite => 1,
            _ => settings.concurrent_batches,
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
            catch_up_until: Instant::now() + lease * 2,
            last_live: live,
        });
        self
    }

    /// Whether the once-per-cluster work (timeout sweep, picking up application rows) is
    /// this instance's to do now.
    fn leads(&self, now: DateTime<Utc>) -> bool {
        self.sharing.as_ref().is_none_or(|s| s.held.leads(now))
    }

    fn renew(&mut self, ctx: &mut Context<Self>) {
        let Some(sharing) = self.sharing.as_mut() else {
            return;
        };
        if sharing.renewing {
            return;
        }
        sharing.renewing = true;
        let db = self.db.clone();
        let me = sharing.instance.clone();
        let started_at = sharing.started_at;
        let lease = sharing.lease;
        let retiring = sharing.held.retiring.clone();
        let claim = sharing.claiming;
        let renewal = async move {
            leases::renew(&db, &me, started_at, Utc::now(), lease, &retiring, claim).await
        };
        ctx.spawn(contained(renewal).into_actor(self).map(|answer, act, ctx| {
            let Some(sharing) = act.sharing.as_mut() else {
                return;
            };
            sharing.renewing = false;
            match answer {
                Ok(Ok(held)) => {
                    let gained = held
                        .buckets
                        .keys()
                        .filter(|b| !sharing.held.buckets.contains_key(b))
                        .count();
                    let lost = sharing
                        .held
                        .buckets
                        .keys()
                        .filter(|b| !held.buckets.contains_key(b))
                        .count();
                    act.events.emit(LeasesRenewed {
                        instance: &sharing.instance,
                        buckets: held.buckets.len(),
                        gained,
                        lost,
                        leader: held.leader.is_some(),
                        was_leader: sharing.held.leader.is_some(),
                        live: held.live_instances,
                    });
                    sharing.held = held;
                    if gained > 0 {
                        if let Some(tick) = &sharing.on_gain {
                            tick.do_send(crate::actors::scheduler::Tick);
                        }
                    }
                    let live = sharing.held.live_instances;
                    if live != sharing.last_live || !sharing.held.retiring.is_empty() {
                        sharing.last_live = live;
                        sharing.catch_up_until =
                            sharing.catch_up_until.max(Instant::now() + sharing.lease);
                    }
                    let fair = usize::from(leases::BUCKETS).div_ceil(live.max(1));
                    let unsettled = !sharing.held.retiring.is_empty()
                        || (sharing.claiming && sharing.held.buckets.len() < fair);
                    if unsettled && Instant::now() < sharing.catch_up_until {
                        ctx.run_later(sharing.catch_up(), |act, ctx| act.renew(ctx));
                    }
                }
                Ok(Err(e)) => act.events.emit(LeaseRenewalFailed { error: &e }),
                Err(panicked) => act.events.emit(LeaseRenewalFailed {
                    error: &std::io::Error::other(panicked.message().to_owned()),
                }),
            }
        }));
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

impl Handler<StopClaiming> for JobStore {
    type Result = ();

    fn handle(&mut self, _: StopClaiming, _: &mut Self::Context) {
        if let Some(sharing) = self.sharing.as_mut() {
            sharing.claiming = false;
        }
    }
}

impl Handler<OnBucketsGained> for JobStore {
    type Result = ();

    fn handle(&mut self, msg: OnBucketsGained, _: &mut Self::Context) {
        if let Some(sharing) = self.sharing.as_mut() {
            sharing.on_gain = Some(msg.0);
        }
    }
}

impl Handler<ReleaseLeases> for JobStore {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: ReleaseLeases, _: &mut Self::Context) -> Self::Result {
        let Some(sharing) = self.sharing.as_mut() else {
            return Box::pin(async {});
        };
        sharing.held = Held::default();
        let db = self.db.clone();
        let me = sharing.instance.clone();
        Box::pin(async move {
            match leases::release_all(&db, &me).await {
                Ok(()) => {
                    tracing::info!(instance = %me, "leases given back; the other instances take over now")
                }
                Err(e) => {
                    warn!(instance = %me, error = %e, "could not give leases back; they pass on when they run out")
                }
            }
        })
    }
}

/// Most new application rows one cycle picks up; the next cycle takes the rest.
const ADOPT_PAGE: u64 = 50_000;

impl Handler<DueJobs> for JobStore {
    type Result = ResponseActFuture<Self, Result<DuePage, StoreError>>;

    fn handle(&mut self, msg: DueJobs, _: &mut Self::Context) -> Self::Result {
        let db = self.db.clone();
        let mapping = self.mapping.clone();
        // A bucket whose lease ends within one renewal period is not started on: its polls
        // should be over before another instance can claim it.
        let share = self.sharing.as_ref().map(|s| (s.held.clone(), s.lease / 3));
        // A cycle's first page first picks up the rows the application inserted since the
        // last cycle, so they are due in this very cycle (by the leader alone).
        let adopt = msg.after.is_none()
            && (mapping.executions.is_some() || mapping.queue.is_some())
            && self.leads(msg.now);
        let find_new = {
            let db = db.clone();
            let mapping = mapping.clone();
            async move {
                let mut ops: Vec<WriteOp> = Vec::new();
                if !adopt {
                    return Ok::<_, StoreError>(ops);
                }
                if let Some(map) = &mapping.executions {
                    let ids = mapped::adoptable_executions(&db, map, ADOPT_PAGE)
                        .await
                        .map_err(|e| StoreError::Read(e.to_string()))?;
                    ops.extend(
                        ids.into_iter()
                            .map(|execution_id| WriteOp::Adopt { execution_id }),
                    );
                }
                if let Some(map) = &mapping.queue {
                    let ids = mapped::queue_drift(&db, map, ADOPT_PAGE)
                        .await
                        .map_err(|e| StoreError::Read(e.to_string()))?;
                    ops.extend(ids.into_iter().map(|job_id| WriteOp::SyncQueue { job_id }));
                }
                Ok(ops)
            }
        };
        Box::pin(find_new.into_actor(self).then(move |found, act, ctx| {
            let answers: Vec<_> = match &found {
                Ok(ops) => ops.iter().map(|op| act.enqueue(op.clone(), ctx)).collect(),
                Err(_) => Vec::new(),
            };
            async move {
                found?;
                for answer in answers {
                    let _ = answer.await;
                }
                let page = match &mapping.executions {
                    Some(map) => mapped::due_executions(&db, map, &msg).await,
                    None => store::read::due_executions(&db, &msg)
                        .await
                        .map(|jobs| DuePage {
                            last: jobs.last().map(|j| j.execution_id.clone()),
                            full: jobs.len() as u64 >= msg.limit,
                            jobs,
                        }),
                }
                .map_err(|e| StoreError::Read(e.to_string()))?;
                Ok(own_share(page, &msg, share.as_ref()))
            }
            .into_actor(act)
        }))
    }
}

/// The part of a page of due jobs that falls in this instance's buckets, each with the lease
/// it is polled under; all of it when the instance does not share the database.
fn own_share(page: DuePage, request: &DueJobs, share: Option<&(Held, Duration)>) -> DuePage {
    let Some((held, margin)) = share else {
        return page;
    };
    let until = request.now + chrono::Duration::from_std(*margin).unwrap_or_default();
    let jobs = page
        .jobs
        .into_iter()
        .filter_map(|mut job| {
            let bucket = leases::bucket_of(&job.execution_id);
            let lease = held.bucket(bucket, until)?;
            job.fence = Some(Fence {
                bucket,
                token: lease.token,
            });
            Some(job)
        })
        .collect();
    DuePage { jobs, ..page }
}

impl Handler<DueActions> for JobStore {
    type Result = ResponseFuture<Result<Vec<DueAction>, StoreError>>;

    fn handle(&mut self, msg: DueActions, _: &mut Self::Context) -> Self::Result {
        let db = self.db.clone();
        let share = self.sharing.as_ref().map(|s| (s.held.clone(), s.lease / 3));
        let submits = self.mapping.executions.is_none();
        Box::pin(async move {
            if !submits {
                // Submission needs jobwarden's own table (spec, attempts).
                return Ok(Vec::new());
            }
            let actions = store::actions_read::due_actions(&db, msg.now, msg.limit)
                .await
                .map_err(|e| StoreError::Read(e.to_string()))?;
            let Some((held, margin)) = share else {
                return Ok(actions);
            };
            // Each job's actions are taken by the instance holding its bucket, and written
            // under that lease: one submitter per job, even across instances.
            let until = msg.now + chrono::Duration::from_std(margin).unwrap_or_default();
            Ok(actions
                .into_iter()
                .filter_map(|mut action| {
                    let bucket = leases::bucket_of(&action.execution_id);
                    let lease = held.bucket(bucket, until)?;
                    action.fence = Some(Fence {
                        bucket,
                        token: lease.token,
                    });
                    Some(action)
                })
                .collect())
        })
    }
}

impl Handler<PendingNotifications> for JobStore {
    type Result = ResponseFuture<Result<Vec<OutboxRow>, StoreError>>;

    fn handle(&mut self, msg: PendingNotifications, _: &mut Self::Context) -> Self::Result {
        // One instance delivers, as one sweeps: the leader.
        if !self.leads(Utc::now()) {
            return Box::pin(async { Ok(Vec::new()) });
        }
        let db = self.db.clone();
        Box::pin(async move {
            store::outbox::pending(&db, msg.per_channel)
                .await
                .map_err(|e| StoreError::Read(e.to_string()))
        })
    }
}

impl Handler<SweepTimeouts> for JobStore {
    type Result = ResponseActFuture<Self, Result<usize, StoreError>>;

    fn handle(&mut self, msg: SweepTimeouts, _: &mut Self::Context) -> Self::Result {
        // Leadership is a matter of the clock now; `msg.now` is the instant the rules judge.
        if !self.leads(Utc::now()) {
            // Another instance leads and sweeps.
            return Box::pin(fut::ready(Ok(0)));
        }
        let db = self.db.clone();
        let started_before = self
            .rules
            .timeouts
            .max_runtime
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| msg.now - d);
        let stuck_half = self.rules.timeouts.stuck_timeout / 2;
        let (factor, min_runs) = self.running_long;
        let notify = self.notify.clone();
        let now = msg.now;
        let find = async move {
            let mut ops: Vec<WriteOp> =
                store::read::timeout_candidates(&db, started_before, SWEEP_PAGE)
                    .await
                    .map_err(|e| StoreError::Read(e.to_string()))?
                    .into_iter()
                    .map(|execution_id| WriteOp::TimeOut { execution_id, now })
                    .collect();
            // Warnings come after the timeouts: a job failed by this sweep is not warned about.
            if notify.wants(EventKind::StuckSoon) {
                ops.extend(
                    store::warnings::stuck_soon(&db, now, stuck_half)
                        .await
                        .map_err(|e| StoreError::Read(e.to_string()))?,
                );
            }
            if notify.wants(EventKind::RunningLong) {
                ops.extend(
                    store::warnings::running_long(&db, now, factor, min_runs)
                        .await
                        .map_err(|e| StoreError::Read(e.to_string()))?,
                );
            }
            Ok::<_, StoreError>(ops)
        };
        Box::pin(find.into_actor(self).then(move |candidates, act, ctx| {
            let (ops, read_error) = match candidates {
                Ok(ops) => (ops, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            let answers: Vec<_> = ops.into_iter().map(|op| act.enqueue(op, ctx)).collect();
            let events = act.events.clone();
            async move {
                if let Some(e) = read_error {
                    return Err(e);
                }
                let mut failed = 0;
                for answer in answers {
                    if let Ok(Ok(WriteOutcome::Execution(Applied::Transitioned { .. }))) =
                        answer.await
                    {
                        failed += 1;
                    }
                }
                events.emit(TimeoutsSwept { failed });
                Ok(failed)
            }
            .into_actor(act)
        }))
    }
}

impl Handler<Prune> for JobStore {
    type Result = ResponseActFuture<Self, Result<Vec<(&'static str, u64)>, StoreError>>;

    fn handle(&mut self, msg: Prune, _: &mut Self::Context) -> Self::Result {
        let settings = self.retention.clone().unwrap_or_default();
        if !self.leads(Utc::now()) || (self.pruning && !msg.dry_run) {
            return Box::pin(fut::ready(Ok(Vec::new())));
        }
        let own_jobs = self.mapping.executions.is_none() && self.mapping.queue.is_none();
        let cutoffs = Cutoffs::at(&settings, msg.now, own_jobs);
        let db = self.db.clone();
        let events = self.events.clone();
        let dry_run = msg.dry_run;
        self.pruning |= !dry_run;
        let run = async move {
            let mut done = Vec::new();
            for aged in Aged::ALL {
                let Some(cutoff) = cutoffs.of(aged) else {
                    continue;
                };
                if dry_run {
                    let rows = retention::count(&db, aged, cutoff)
                        .await
                        .map_err(|e| StoreError::Read(e.to_string()))?;
                    done.push((aged.name(), rows));
                    continue;
                }
                let started = Instant::now();
                let (mut rows, mut after) = (0, 0);
                let stopped = loop {
                    match retention::delete_batch(&db, aged, cutoff, after, settings.batch as u64)
                        .await
                    {
                        Ok(step) => {
                            rows += step.deleted;
                            if step.done {
                                break None;
                            }
                            after = step.after;
                            actix_rt::time::sleep(settings.pause).await;
                        }
                        Err(e) => break Some(e),
                    }
                };
                events.emit(RowsPruned {
                    table: aged.name(),
                    rows,
                    elapsed: started.elapsed(),
                    error: stopped.as_ref().map(|e| e as &dyn std::error::Error),
                });
                done.push((aged.name(), rows));
                if let Some(e) = stopped {
                    return Err(StoreError::Read(e.to_string()));
                }
            }
            Ok(done)
        };
        Box::pin(contained(run).into_actor(self).map(move |answer, act, _| {
            if !dry_run {
                act.pruning = false;
            }
            answer.unwrap_or_else(|panicked| Err(StoreError::Read(panicked.message().to_owned())))
        }))
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

/// What one batch's write needs, moved into its task.
struct Writer {
    db: DatabaseConnection,
    settings: StoreSettings,
    rules: Arc<Rules>,
    mapping: Arc<Mapping>,
    notify: Arc<NotifyRules>,
    instance: Option<String>,
    health: Arc<StoreHealth>,
    events: Events,
}

impl Writer {
    /// Writes `ops` in one transaction, waiting out database outages. If the database refuses
    /// the batch as such (not an outage), each change is retried alone so one bad change cannot
    /// sink the others.
    async fn write_durably(
        &self,
        ops: Vec<WriteOp>,
        fences: Vec<Option<Fence>>,
    ) -> (Vec<Result<WriteOutcome, OpError>>, Inserted) {
        let (outcomes, inserted) = self.write_each(&ops, &fences).await;
        for (op, outcome) in ops.iter().zip(&outcomes) {
            if let (Err(e @ OpError::Fenced { .. }), Some(id)) = (outcome, op.execution_id()) {
                self.events.emit(WriteFenced {
                    execution_id: id,
                    error: e,
                });
            }
        }
        (outcomes, inserted)
    }

    async fn write_each(
        &self,
        ops: &[WriteOp],
        fences: &[Option<Fence>],
    ) -> (Vec<Result<WriteOutcome, OpError>>, Inserted) {
        match self.write_retrying(ops, fences).await {
            Ok(written) => written,
            Err(e) if ops.len() > 1 => {
                warn!(error = %e, size = ops.len(), "batch refused by the database; writing its changes one by one");
                let mut outcomes = Vec::with_capacity(ops.len());
                let mut inserted = Inserted::default();
                for (op, fence) in ops.iter().zip(fences) {
                    match self
                        .write_retrying(std::slice::from_ref(op), std::slice::from_ref(fence))
                        .await
                    {
                        Ok((mut single, added)) => {
                            outcomes.push(single.remove(0));
                            inserted += added;
                        }
                        Err(e) => {
                            self.refused(&e, op);
                            outcomes.push(Err(OpError::Refused(e.to_string())));
                        }
                    }
                }
                (outcomes, inserted)
            }
            Err(e) => {
                if let Some(op) = ops.first() {
                    self.refused(&e, op);
                }
                (
                    vec![Err(OpError::Refused(e.to_string()))],
                    Inserted::default(),
                )
            }
        }
    }

    /// Counts a refused change by cause, logging each cause at most once a minute.
    fn refused(&self, error: &DbErr, op: &WriteOp) {
        let cause = store::refusal_cause(error);
        let text = error.to_string();
        let unlogged = self.health.refused(cause, &text);
        self.events.emit(ChangeRefused {
            cause,
            error: &text,
            change: op,
            unlogged,
        });
    }

    /// One transaction, retried while the error is transient. `Err` only for permanent errors.
    async fn write_retrying(
        &self,
        ops: &[WriteOp],
        fences: &[Option<Fence>],
    ) -> Result<(Vec<Result<WriteOutcome, OpError>>, Inserted), DbErr> {
        let mut delay = self.settings.retry_initial;
        let cx = WriteContext {
            rules: &self.rules,
            mapping: &self.mapping,
            instance: self.instance.as_deref(),
            notify: &self.notify,
        };
        loop {
            let started = Instant::now();
            match store::apply_batch(&self.db, ops, fences, &cx, Utc::now()).await {
                Ok(Committed {
                    outcomes,
                    rows_written,
                    inserted,
                }) => {
                    let transitions: Vec<_> = ops
                        .iter()
                        .zip(&outcomes)
                        .filter(|(_, outcome)| {
                            outcome.as_ref().is_ok_and(WriteOutcome::transitioned)
                        })
                        .filter_map(|(op, _)| op.source())
                        .collect();
                    self.events.emit(BatchCommitted {
                        size: ops.len(),
                        rows_written,
                        elapsed: started.elapsed(),
                        transitions: &transitions,
                    });
                    self.health.heartbeat.beat();
                    if outcomes.iter().any(Result::is_ok) {
                        self.health.accepted();
                    }
                    if self.health.database_back() {
                        self.events.emit(DatabaseBack);
                    }
                    return Ok((outcomes, inserted));
                }
                Err(e) if store::is_conflict(&e) => {
                    // Another instance's transaction got in the way; the database is fine.
                    self.events.metrics().store_retries.inc();
                    debug!(error = %e, "transaction collided with another; running it again");
                    actix_rt::time::sleep(
                        self.settings.retry_initial.min(Duration::from_millis(50)),
                    )
                    .await;
                }
                Err(e) if store::is_transient(&e) => {
                    let reason = store::unwritable(&e).unwrap_or("the database is unreachable");
                    let (log, held_for) = self.health.database_away(reason);
                    self.events.emit(DatabaseUnreachable {
                        error: &e,
                        reason,
                        retry_in: delay,
                        held_for,
                        log,
                    });
                    actix_rt::time::sleep(delay).await;
                    delay = (delay * 2)
                        .min(self.settings.retry_max)
                        .max(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
