//! JobStore: the only writer. Changes that arrive while a transaction is running are gathered
//! and written together in the next one (group commit); each sender hears back once its change
//! is durable. If the database is away the batch is retried with backoff until it lands.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::sync::oneshot;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::config::StoreSettings;
use crate::domain::{Applied, TimeoutPolicy};
use crate::metrics::METRICS;

use super::supervision::{contained, report_crash, Crash};
use crate::store::{self, read::DueExecution, OpError, WriteOp, WriteOutcome};

/// Why a message to the store did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The change itself was refused; retrying it will not help.
    #[error(transparent)]
    Refused(#[from] OpError),
    /// A read failed (writes are retried, reads are not).
    #[error("database read failed: {0}")]
    Read(String),
    /// The store stopped before it could answer: the change may or may not be durable, so the
    /// sender must treat it as not done.
    #[error("the job store is gone: {0}")]
    Gone(String),
}

impl From<MailboxError> for StoreError {
    fn from(e: MailboxError) -> Self {
        StoreError::Gone(e.to_string())
    }
}

/// Make one change durable.
#[derive(Message, Debug)]
#[rtype(result = "Result<WriteOutcome, StoreError>")]
pub struct Write(pub WriteOp);

/// Executions due for a poll.
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<DueExecution>, StoreError>")]
pub struct DueJobs {
    pub now: DateTime<Utc>,
    /// Only jobs not polled since this instant (the start of the current poll cycle).
    pub polled_before: DateTime<Utc>,
    pub limit: u64,
    /// Executions whose poll is still in flight.
    pub exclude: Vec<String>,
}

/// Resolves once every change accepted so far is durable (used at shutdown).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Drain;

/// Apply the timeout rules as of `now`; answers how many jobs were failed.
#[derive(Message, Debug)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct SweepTimeouts {
    pub now: DateTime<Utc>,
}

/// A snapshot of the store's counters.
#[derive(Message, Debug)]
#[rtype(result = "StoreStats")]
pub struct GetStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, MessageResponse)]
pub struct StoreStats {
    pub transactions: u64,
    pub changes: u64,
    pub retries: u64,
    pub largest_batch: usize,
    pub pending: usize,
    pub database_up: bool,
}

/// Counters and the database's reachability, shared with readiness checks.
#[derive(Debug)]
pub struct StoreHealth {
    database_up: AtomicBool,
    transactions: AtomicU64,
    changes: AtomicU64,
    retries: AtomicU64,
    largest_batch: AtomicUsize,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            database_up: AtomicBool::new(true),
            transactions: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            largest_batch: AtomicUsize::new(0),
        }
    }
}

impl StoreHealth {
    pub fn database_up(&self) -> bool {
        self.database_up.load(Ordering::Relaxed)
    }

    /// Returns true when this call changed the state, so the outage is logged once per edge.
    fn set_up(&self, up: bool) -> bool {
        METRICS.database_up.set(if up { 1.0 } else { 0.0 });
        self.database_up.swap(up, Ordering::Relaxed) != up
    }
}

struct Pending {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

pub struct JobStore {
    db: DatabaseConnection,
    settings: StoreSettings,
    timeouts: Option<TimeoutPolicy>,
    pending: VecDeque<Pending>,
    flushing: bool,
    drain_waiters: Vec<oneshot::Sender<()>>,
    health: Arc<StoreHealth>,
}

/// The store's mailbox is deep on purpose: bursts of changes are what batching feeds on, and
/// every sender waits for its answer, so the depth is bounded by the senders' own limits.
const MAILBOX_CAPACITY: usize = 65_536;

/// Most jobs one sweep considers; the next sweep takes the rest.
const SWEEP_PAGE: u64 = 10_000;

impl JobStore {
    pub fn new(db: DatabaseConnection, settings: StoreSettings) -> Self {
        JobStore {
            db,
            settings,
            timeouts: None,
            pending: VecDeque::new(),
            flushing: false,
            drain_waiters: Vec::new(),
            health: Arc::new(StoreHealth::default()),
        }
    }

    /// Also sweep for stuck jobs every `store.sweep_interval` with this policy.
    pub fn with_timeouts(mut self, policy: TimeoutPolicy) -> Self {
        self.timeouts = Some(policy);
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
        let (reply, answer) = oneshot::channel();
        self.pending.push_back(Pending { op, reply });
        self.flush(ctx);
        answer
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing {
            return;
        }
        if self.pending.is_empty() {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(());
            }
            return;
        }
        let take = self.pending.len().min(self.settings.max_batch);
        let (ops, replies): (Vec<_>, Vec<_>) =
            self.pending.drain(..take).map(|p| (p.op, p.reply)).unzip();
        self.flushing = true;
        let health = self.health.clone();
        health.largest_batch.fetch_max(ops.len(), Ordering::Relaxed);
        METRICS.store_batch_size.observe(ops.len() as f64);
        let span = info_span!("store_batch", actor = "job_store", size = ops.len());
        let write =
            write_durably(self.db.clone(), ops, self.settings.clone(), health).instrument(span);
        ctx.spawn(
            contained(write)
                .into_actor(self)
                .map(move |outcomes, act, ctx| {
                    act.flushing = false;
                    match outcomes {
                        Ok(outcomes) => {
                            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                                // A sender that stopped waiting has nothing to be told.
                                let _ = reply.send(outcome.map_err(StoreError::Refused));
                            }
                            act.flush(ctx);
                        }
                        Err(reason) => {
                            // Nothing of the batch is known to be durable: its senders hear so and
                            // treat their changes as not done.
                            for reply in replies {
                                let _ = reply.send(Err(StoreError::Gone(format!(
                                    "store crashed: {reason}"
                                ))));
                            }
                            report_crash("job_store", &reason);
                            ctx.stop();
                        }
                    }
                }),
        );
    }
}

impl Actor for JobStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        debug!(actor = "job_store", "started");
        if self.timeouts.is_some() {
            ctx.run_interval(self.settings.sweep_interval, |_, ctx| {
                ctx.notify(SweepTimeouts { now: Utc::now() });
            });
        }
        // After a restart, carry on with what was pending.
        self.flush(ctx);
    }
}

impl Supervised for JobStore {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.flushing = false;
    }
}

impl Handler<Crash> for JobStore {
    type Result = ();

    /// Crashes inside the guarded write path, as a bug in a batch would.
    fn handle(&mut self, _: Crash, ctx: &mut Self::Context) {
        self.flushing = true;
        ctx.spawn(
            contained(async { panic!("injected crash") })
                .into_actor(self)
                .map(|outcome: Result<(), String>, act, ctx| {
                    act.flushing = false;
                    if let Err(reason) = outcome {
                        report_crash("job_store", &reason);
                        ctx.stop();
                    }
                }),
        );
    }
}

impl Handler<Write> for JobStore {
    type Result = ResponseFuture<Result<WriteOutcome, StoreError>>;

    fn handle(&mut self, msg: Write, ctx: &mut Self::Context) -> Self::Result {
        let answer = self.enqueue(msg.0, ctx);
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(StoreError::Gone("store stopped before answering".into())))
        })
    }
}

impl Handler<DueJobs> for JobStore {
    type Result = ResponseFuture<Result<Vec<DueExecution>, StoreError>>;

    fn handle(&mut self, msg: DueJobs, _: &mut Self::Context) -> Self::Result {
        let db = self.db.clone();
        Box::pin(async move {
            store::read::due_executions(&db, msg.now, msg.polled_before, msg.limit, &msg.exclude)
                .await
                .map_err(|e| StoreError::Read(e.to_string()))
        })
    }
}

impl Handler<SweepTimeouts> for JobStore {
    type Result = ResponseActFuture<Self, Result<usize, StoreError>>;

    fn handle(&mut self, msg: SweepTimeouts, _: &mut Self::Context) -> Self::Result {
        let Some(policy) = self.timeouts else {
            return Box::pin(fut::ready(Ok(0)));
        };
        let db = self.db.clone();
        let started_before = policy
            .max_runtime
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| msg.now - d);
        let find = async move {
            store::read::timeout_candidates(&db, started_before, SWEEP_PAGE)
                .await
                .map_err(|e| StoreError::Read(e.to_string()))
        };
        Box::pin(find.into_actor(self).then(move |candidates, act, ctx| {
            let (ids, read_error) = match candidates {
                Ok(ids) => (ids, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            let answers: Vec<_> = ids
                .into_iter()
                .map(|execution_id| {
                    let op = WriteOp::TimeOut {
                        execution_id,
                        now: msg.now,
                        policy,
                    };
                    act.enqueue(op, ctx)
                })
                .collect();
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
                if failed > 0 {
                    info!(
                        actor = "job_store",
                        failed, "timeout sweep failed stuck jobs"
                    );
                }
                Ok(failed)
            }
            .into_actor(act)
        }))
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
        let h = &self.health;
        StoreStats {
            transactions: h.transactions.load(Ordering::Relaxed),
            changes: h.changes.load(Ordering::Relaxed),
            retries: h.retries.load(Ordering::Relaxed),
            largest_batch: h.largest_batch.load(Ordering::Relaxed),
            pending: self.pending.len(),
            database_up: h.database_up(),
        }
    }
}

/// Writes `ops` in one transaction, waiting out database outages. If the database refuses the
/// batch as such (not an outage), each change is retried alone so one bad change cannot sink
/// the others.
async fn write_durably(
    db: DatabaseConnection,
    ops: Vec<WriteOp>,
    settings: StoreSettings,
    health: Arc<StoreHealth>,
) -> Vec<Result<WriteOutcome, OpError>> {
    match write_retrying(&db, &ops, &settings, &health).await {
        Ok(outcomes) => outcomes,
        Err(e) if ops.len() > 1 => {
            warn!(error = %e, size = ops.len(), "batch refused by the database; writing its changes one by one");
            let mut outcomes = Vec::with_capacity(ops.len());
            for op in ops {
                let one = std::slice::from_ref(&op);
                match write_retrying(&db, one, &settings, &health).await {
                    Ok(mut single) => outcomes.push(single.remove(0)),
                    Err(e) => {
                        error!(error = %e, change = ?op, "change refused by the database");
                        outcomes.push(Err(OpError::Refused(e.to_string())));
                    }
                }
            }
            outcomes
        }
        Err(e) => {
            error!(error = %e, change = ?ops.first(), "change refused by the database");
            vec![Err(OpError::Refused(e.to_string()))]
        }
    }
}

/// One transaction, retried while the error is transient. `Err` only for permanent errors.
async fn write_retrying(
    db: &DatabaseConnection,
    ops: &[WriteOp],
    settings: &StoreSettings,
    health: &StoreHealth,
) -> Result<Vec<Result<WriteOutcome, OpError>>, DbErr> {
    let mut delay = settings.retry_initial;
    loop {
        let timer = METRICS.store_commit_seconds.start_timer();
        let attempt = store::apply_batch(db, ops, Utc::now()).await;
        timer.observe_duration();
        match attempt {
            Ok(outcomes) => {
                count_transitions(ops, &outcomes);
                health.transactions.fetch_add(1, Ordering::Relaxed);
                health
                    .changes
                    .fetch_add(ops.len() as u64, Ordering::Relaxed);
                if health.set_up(true) {
                    info!(
                        actor = "job_store",
                        "database reachable again; pending changes written"
                    );
                }
                return Ok(outcomes);
            }
            Err(e) if store::is_transient(&e) => {
                health.retries.fetch_add(1, Ordering::Relaxed);
                METRICS.store_retries.inc();
                if health.set_up(false) {
                    error!(actor = "job_store", error = %e, retry_in = ?delay,
                        "database unreachable; holding changes and retrying");
                } else {
                    debug!(error = %e, retry_in = ?delay, "database still unreachable");
                }
                actix_rt::time::sleep(delay).await;
                delay = (delay * 2)
                    .min(settings.retry_max)
                    .max(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Bumps the transition counters for what a committed batch did.
fn count_transitions(ops: &[WriteOp], outcomes: &[Result<WriteOutcome, OpError>]) {
    for (op, outcome) in ops.iter().zip(outcomes) {
        let moved = matches!(
            outcome,
            Ok(WriteOutcome::Execution(Applied::Transitioned { .. }))
                | Ok(WriteOutcome::Queue(
                    crate::domain::EventApplied::Transitioned { .. }
                ))
                | Ok(WriteOutcome::Tracked { created: true })
        );
        if !moved {
            continue;
        }
        let source = match op {
            WriteOp::Observe { .. } => "spark_poll",
            WriteOp::TimeOut { .. } => {
                METRICS.timeouts.inc();
                "timeout_sweep"
            }
            WriteOp::QueueEvent { .. } => "kafka_event",
            WriteOp::Track(request) => request.source.as_str(),
            WriteOp::PollFailed { .. } | WriteOp::DeadLetter(_) => continue,
        };
        METRICS.transitions.with_label_values(&[source]).inc();
    }
}
