//! Scheduler: every `poll_interval` starts a poll cycle: asks the JobStore for due jobs, page
//! by page (keyset paging by execution id, so no query grows with the fleet or the pool), and
//! hands each to an idle poller. A job is never polled twice at once, even across a restart
//! of the scheduler, and a cycle that outlasts the interval makes the next tick a no-op
//! instead of a pile-up.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use crate::backend::StatusBackend;
use crate::events::{ActorCrashed, Events, PollCycleFinished, PollUnchanged, TickSkipped};
use crate::health::Heartbeat;
use crate::store_api::{DueExecution, DueJobs, StoreHandle};

use super::backlog::Backlog;
use super::spark_poller::{Poll, PollReport, PollSettled, SparkPoller};
use super::supervision::guarded;
#[cfg(feature = "fault-injection")]
use super::supervision::{Crash, Stall};

/// Start a poll cycle now (sent by the interval timer; tests send it directly).
#[derive(Message, Debug, Default)]
#[rtype(result = "TickSummary")]
pub struct Tick;

/// What a tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, MessageResponse)]
pub struct TickSummary {
    /// False when the previous cycle was still running.
    pub started: bool,
}

/// Counters since start.
#[derive(Message, Debug)]
#[rtype(result = "SchedulerStats")]
pub struct GetSchedulerStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, MessageResponse)]
pub struct SchedulerStats {
    pub cycles: u64,
    /// Pages of due jobs read from the store.
    pub pages: u64,
    pub skipped_ticks: u64,
    pub dispatched: u64,
    /// Jobs settled without a poll: their backend already knew they had not changed.
    pub unchanged_at_once: u64,
    pub completed: u64,
    pub in_flight: usize,
    pub cycle_running: bool,
}

/// Stop starting polls; resolves once every poll in flight has finished.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopPolling;

/// When the scheduler ticks on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticking {
    /// A cycle at start, then one every interval.
    Automatic,
    /// Only when sent a [`Tick`] (tests and benchmarks drive the cycles themselves).
    Manual,
}

pub struct Scheduler {
    store: StoreHandle,
    pollers: Vec<Addr<SparkPoller>>,
    /// The pollers' backend, asked before a dispatch whether it already knows the job has
    /// not changed (a listing read this cycle).
    backend: Option<Rc<dyn StatusBackend>>,
    idle: Vec<usize>,
    /// Jobs handed to a poller whose result is not durable yet. Kept across restarts: the
    /// polls go on, and their results arrive as [`PollSettled`] messages at the same address.
    in_flight: HashSet<String>,
    backlog: Backlog,
    interval: Duration,
    ticking: Ticking,
    timer: Option<SpawnHandle>,
    page: u64,
    max_unwritten: usize,
    cycle: Option<Cycle>,
    fetching: bool,
    stopping: bool,
    idle_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    stats: SchedulerStats,
    heartbeat: Arc<Heartbeat>,
    events: Events,
}

struct Cycle {
    started_at: DateTime<Utc>,
    /// The last id fetched: the next page starts after it. Jobs before it that are still due
    /// (in flight, or not recorded) wait for the next cycle.
    cursor: Option<String>,
    not_recorded: u64,
    /// Ticks that arrived while this cycle ran.
    ticks_skipped: u64,
    clock: Instant,
    due: u64,
    dispatched: u64,
    unchanged_at_once: u64,
    more: bool,
}

/// Each fetch sorts what is still due in this cycle, so few large pages beat many small ones
/// on big fleets; 2,000 ids stay a few hundred kilobytes.
const PAGE: u64 = 2_000;

impl Scheduler {
    /// `stale_after` is how long readiness waits for a sign of progress (a cycle starting, a
    /// page arriving, a poll settling) before it calls the scheduler stuck.
    pub fn new(
        store: StoreHandle,
        pollers: Vec<Addr<SparkPoller>>,
        interval: Duration,
        stale_after: Duration,
        events: Events,
    ) -> Self {
        let idle = (0..pollers.len()).rev().collect();
        let pollers_len = pollers.len();
        Scheduler {
            store,
            pollers,
            backend: None,
            idle,
            in_flight: HashSet::new(),
            backlog: Backlog::default(),
            interval,
            ticking: Ticking::Automatic,
            timer: None,
            page: PAGE,
            max_unwritten: (pollers_len * 8).max(1_024),
            cycle: None,
            fetching: false,
            stopping: false,
            idle_waiters: Vec::new(),
            stats: SchedulerStats::default(),
            heartbeat: Heartbeat::new("scheduler", stale_after),
            events,
        }
    }

    pub fn ticking(mut self, ticking: Ticking) -> Self {
        self.ticking = ticking;
        self
    }

    /// The most pollers each cluster's polls may hold at once (none: no cap), so a hung cluster
    /// cannot take the pool from the others.
    pub fn cluster_caps(mut self, caps: impl IntoIterator<Item = (Option<String>, usize)>) -> Self {
        self.backlog = Backlog::with_caps(caps);
        self
    }

    /// Lets the scheduler settle a job its pollers' backend already knows has not changed,
    /// instead of handing it to a poller (a cycle of a steady fleet on a listing then costs
    /// a lookup per job, not a message and a store round trip).
    pub fn answering_from(mut self, backend: Rc<dyn StatusBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Due jobs read per page (2,000 unless set).
    pub fn page_size(mut self, page: u64) -> Self {
        self.page = page.max(1);
        self
    }

    /// Its heartbeat, for readiness.
    pub fn heartbeat(&self) -> Arc<Heartbeat> {
        self.heartbeat.clone()
    }

    fn fetch(&mut self, ctx: &mut Context<Self>) {
        let Some(cycle) = &self.cycle else { return };
        if self.fetching || self.stopping {
            return;
        }
        self.fetching = true;
        let request = DueJobs {
            now: Utc::now(),
            polled_before: cycle.started_at,
            after: cycle.cursor.clone(),
            limit: self.page,
        };
        ctx.spawn(
            self.store
                .due(request)
                .into_actor(self)
                .map(move |answer, act, ctx| {
                    act.fetching = false;
                    let Some(cycle) = act.cycle.as_mut() else {
                        return;
                    };
                    match answer {
                        Ok(due) => {
                            act.heartbeat.beat();
                            act.stats.pages += 1;
                            // The page may hold fewer jobs than it read (other instances'
                            // shares): where it ended in the table decides what comes next.
                            cycle.more = due.full;
                            if let Some(last) = due.last {
                                cycle.cursor = Some(last);
                            }
                            let jobs = due.jobs;
                            // Still in flight from before (a slow write, or a scheduler that
                            // restarted): never a second poll at once.
                            let fresh: Vec<DueExecution> = jobs
                                .into_iter()
                                .filter(|j| !act.in_flight.contains(&j.execution_id))
                                .collect();
                            cycle.due += fresh.len() as u64;
                            for job in fresh {
                                act.backlog.push(job);
                            }
                        }
                        Err(e) => {
                            warn!(actor = "scheduler", error = %e, "could not read due jobs; next tick retries");
                            cycle.more = false;
                        }
                    }
                    act.dispatch_guarded(ctx);
                }),
        );
    }

    /// Dispatches, treating a panic as a crash of the scheduler.
    fn dispatch_guarded(&mut self, ctx: &mut Context<Self>) {
        if let Err(reason) = guarded(|| self.dispatch(ctx)) {
            self.crashed(reason.message(), ctx);
        }
    }

    fn crashed(&mut self, reason: &str, ctx: &mut Context<Self>) {
        self.events.emit(ActorCrashed {
            actor: "scheduler",
            reason,
        });
        ctx.stop();
    }

    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        while !self.stopping && !self.backlog.is_empty() {
            // Polls whose writes are not durable yet count too: they bound the database's lag.
            if self.in_flight.len() >= self.max_unwritten {
                break;
            }
            if self.idle.is_empty() {
                break;
            }
            let Some(job) = self.backlog.take() else {
                break;
            };
            if self.backend.as_ref().is_some_and(|b| b.no_news_now(&job)) {
                self.backlog.done(&job.cluster);
                self.unchanged_at_once();
                continue;
            }
            let Some(poller) = self.idle.pop() else { break };
            let execution_id = job.execution_id.clone();
            let cluster = job.cluster.clone();
            self.in_flight.insert(execution_id.clone());
            self.stats.dispatched += 1;
            if let Some(cycle) = self.cycle.as_mut() {
                cycle.dispatched += 1;
            }
            debug!(actor = "scheduler", execution_id = %job.execution_id,
                submission_id = %job.submission_id, poller, "poll dispatched");
            let request = self.pollers[poller].send(Poll {
                job,
                report_to: ctx.address().recipient(),
            });
            ctx.spawn(request.into_actor(self).map(move |answered, act, ctx| {
                // The backend request is over: the poller takes the next job while the write
                // becomes durable; the job stays in flight until its PollSettled arrives.
                act.idle.push(poller);
                act.backlog.done(&cluster);
                if let Err(e) = answered {
                    // The poller died with the job: nothing was written.
                    warn!(execution_id = %execution_id, error = %e, "poller did not answer");
                    act.settle(&execution_id, PollReport::NotRecorded);
                }
                act.dispatch_guarded(ctx);
            }));
        }
        self.after_dispatch(ctx);
    }

    fn unchanged_at_once(&mut self) {
        self.stats.unchanged_at_once += 1;
        self.stats.completed += 1;
        if let Some(cycle) = self.cycle.as_mut() {
            cycle.unchanged_at_once += 1;
        }
        self.events.emit(PollUnchanged);
    }

    fn settle(&mut self, execution_id: &str, report: PollReport) {
        if !self.in_flight.remove(execution_id) {
            return;
        }
        self.stats.completed += 1;
        self.heartbeat.beat();
        if report == PollReport::NotRecorded {
            debug!(execution_id, "poll not recorded; due again next cycle");
            if let Some(cycle) = self.cycle.as_mut() {
                cycle.not_recorded += 1;
            }
        }
    }

    fn after_dispatch(&mut self, ctx: &mut Context<Self>) {
        let Some(cycle) = &self.cycle else {
            self.notify_idle();
            return;
        };
        // Keep the backlog about one page deep while the cycle has more due jobs.
        if cycle.more && !self.fetching && (self.backlog.len() as u64) < self.page / 2 {
            self.fetch(ctx);
            return;
        }
        if !cycle.more && !self.fetching && self.backlog.is_empty() && self.in_flight.is_empty() {
            if let Some(cycle) = self.cycle.take() {
                self.events.emit(PollCycleFinished {
                    due: cycle.due,
                    dispatched: cycle.dispatched,
                    unchanged_at_once: cycle.unchanged_at_once,
                    not_recorded: cycle.not_recorded,
                    ticks_skipped: cycle.ticks_skipped,
                    duration: cycle.clock.elapsed(),
                });
            }
            self.notify_idle();
        }
    }

    fn notify_idle(&mut self) {
        if self.in_flight.is_empty() {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) -> TickSummary {
        if self.stopping {
            return TickSummary { started: false };
        }
        if let Some(cycle) = self.cycle.as_mut() {
            cycle.ticks_skipped += 1;
            self.stats.skipped_ticks += 1;
            self.events.emit(TickSkipped {
                in_flight: self.in_flight.len(),
                backlog: self.backlog.len(),
                running_for: cycle.clock.elapsed(),
            });
            return TickSummary { started: false };
        }
        self.heartbeat.beat();
        self.stats.cycles += 1;
        self.cycle = Some(Cycle {
            started_at: Utc::now(),
            cursor: None,
            not_recorded: 0,
            ticks_skipped: 0,
            clock: Instant::now(),
            due: 0,
            dispatched: 0,
            unchanged_at_once: 0,
            more: true,
        });
        self.fetch(ctx);
        TickSummary { started: true }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(actor = "scheduler", pollers = self.pollers.len(), interval = ?self.interval, "scheduler started");
        self.heartbeat.beat();
        if self.ticking == Ticking::Automatic {
            ctx.notify(Tick);
            self.timer = Some(ctx.run_interval(self.interval, |_, ctx| ctx.notify(Tick)));
        }
    }
}

impl Handler<Tick> for Scheduler {
    type Result = TickSummary;

    fn handle(&mut self, _: Tick, ctx: &mut Self::Context) -> TickSummary {
        match guarded(|| self.tick(ctx)) {
            Ok(summary) => summary,
            Err(reason) => {
                self.crashed(reason.message(), ctx);
                TickSummary { started: false }
            }
        }
    }
}

impl Handler<PollSettled> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: PollSettled, ctx: &mut Self::Context) {
        self.settle(&msg.execution_id, msg.report);
        self.dispatch_guarded(ctx);
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<Crash> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Self::Context) {
        if let Err(reason) = guarded(|| panic!("injected crash")) {
            self.crashed(reason.message(), ctx);
        }
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<Stall> for Scheduler {
    type Result = ();

    /// Stops the timer, as a scheduler whose ticks stopped would.
    fn handle(&mut self, _: Stall, ctx: &mut Self::Context) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
    }
}

impl Supervised for Scheduler {
    /// Polls in flight when it crashed still finish, are written, and report to this same
    /// address; until then their jobs stay in flight. The new scheduler starts with every
    /// poller idle (a busy one queues its next poll) and no cycle.
    fn restarting(&mut self, _: &mut Self::Context) {
        self.idle = (0..self.pollers.len()).rev().collect();
        self.backlog.reset();
        self.cycle = None;
        self.fetching = false;
        self.timer = None;
        self.notify_idle();
    }
}

impl Handler<GetSchedulerStats> for Scheduler {
    type Result = SchedulerStats;

    fn handle(&mut self, _: GetSchedulerStats, _: &mut Self::Context) -> SchedulerStats {
        SchedulerStats {
            in_flight: self.in_flight.len(),
            cycle_running: self.cycle.is_some(),
            ..self.stats
        }
    }
}

impl Handler<StopPolling> for Scheduler {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopPolling, _: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        self.backlog.clear();
        self.cycle = None;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.idle_waiters.push(tx);
        self.notify_idle();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
