//! Scheduler: every `poll_interval` starts a poll cycle: asks the JobStore for due jobs, page
//! by page, and hands each to an idle poller. A job is never polled twice at once, and a cycle
//! that outlasts the interval makes the next tick a no-op instead of a pile-up.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tracing::{debug, info, info_span, warn};

use crate::metrics::METRICS;
use crate::store::read::DueExecution;

use super::job_store::{DueJobs, JobStore};
use super::spark_poller::{Poll, PollReport, SparkPoller};
use super::supervision::{guarded, report_crash, Crash};

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
    pub skipped_ticks: u64,
    pub dispatched: u64,
    pub completed: u64,
    pub in_flight: usize,
    pub cycle_running: bool,
}

/// Stop starting polls; resolves once every poll in flight has finished.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopPolling;

pub struct Scheduler {
    store: Addr<JobStore>,
    pollers: Vec<Addr<SparkPoller>>,
    idle: Vec<usize>,
    in_flight: HashSet<String>,
    backlog: VecDeque<DueExecution>,
    interval: Duration,
    page: u64,
    max_unwritten: usize,
    cycle: Option<Cycle>,
    fetching: bool,
    stopping: bool,
    idle_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    stats: SchedulerStats,
}

struct Cycle {
    started_at: DateTime<Utc>,
    /// Jobs whose result could not be recorded in this cycle: they stay due, and must wait
    /// for the next cycle rather than be polled again and again in this one. (A job that was
    /// recorded has a newer `last_polled_at` and drops out of the query by itself.)
    unrecorded: HashSet<String>,
    /// Ticks that arrived while this cycle ran (its jobs were all still in flight or due).
    ticks_skipped: u64,
    clock: Instant,
    due: u64,
    dispatched: u64,
    more: bool,
}

impl Scheduler {
    pub fn new(store: Addr<JobStore>, pollers: Vec<Addr<SparkPoller>>, interval: Duration) -> Self {
        let idle = (0..pollers.len()).rev().collect();
        let pollers_len = pollers.len();
        // Each fetch sorts what is still due in this cycle, so few large pages beat many
        // small ones on big fleets; 2,000 ids stay a few hundred kilobytes.
        let page = 2_000;
        Scheduler {
            store,
            pollers,
            idle,
            in_flight: HashSet::new(),
            backlog: VecDeque::new(),
            interval,
            page,
            max_unwritten: (pollers_len * 8).max(1_024),
            cycle: None,
            fetching: false,
            stopping: false,
            idle_waiters: Vec::new(),
            stats: SchedulerStats::default(),
        }
    }

    fn fetch(&mut self, ctx: &mut Context<Self>) {
        let Some(cycle) = &self.cycle else { return };
        if self.fetching || self.stopping {
            return;
        }
        self.fetching = true;
        let exclude: Vec<String> = self
            .in_flight
            .iter()
            .cloned()
            .chain(self.backlog.iter().map(|j| j.execution_id.clone()))
            .collect();
        let request = DueJobs {
            now: Utc::now(),
            polled_before: cycle.started_at,
            limit: self.page,
            exclude,
        };
        let page = self.page;
        ctx.spawn(self.store.send(request).into_actor(self).map(move |answer, act, ctx| {
            act.fetching = false;
            let Some(cycle) = act.cycle.as_mut() else { return };
            match answer {
                Ok(Ok(jobs)) => {
                    cycle.more = jobs.len() as u64 == page;
                    let fresh: Vec<DueExecution> = jobs
                        .into_iter()
                        .filter(|j| !cycle.unrecorded.contains(&j.execution_id))
                        .collect();
                    if fresh.is_empty() {
                        cycle.more = false;
                    }
                    cycle.due += fresh.len() as u64;
                    act.backlog.extend(fresh);
                }
                Ok(Err(e)) => {
                    warn!(actor = "scheduler", error = %e, "could not read due jobs; next tick retries");
                    cycle.more = false;
                }
                Err(e) => {
                    warn!(actor = "scheduler", error = %e, "job store unavailable; next tick retries");
                    cycle.more = false;
                }
            }
            act.dispatch_guarded(ctx);
        }));
    }

    /// Dispatches, treating a panic as a crash of the scheduler.
    fn dispatch_guarded(&mut self, ctx: &mut Context<Self>) {
        if let Err(reason) = guarded(|| self.dispatch(ctx)) {
            report_crash("scheduler", &reason);
            ctx.stop();
        }
    }

    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        while !self.stopping && !self.backlog.is_empty() {
            // Polls whose writes are not durable yet count too: they bound the database's lag.
            if self.in_flight.len() >= self.max_unwritten {
                break;
            }
            let Some(poller) = self.idle.pop() else { break };
            let job = self.backlog.pop_front().expect("backlog checked non-empty");
            let execution_id = job.execution_id.clone();
            self.in_flight.insert(execution_id.clone());
            self.stats.dispatched += 1;
            if let Some(cycle) = self.cycle.as_mut() {
                cycle.dispatched += 1;
            }
            debug!(actor = "scheduler", execution_id = %job.execution_id,
                submission_id = %job.submission_id, poller, "poll dispatched");
            let request = self.pollers[poller].send(Poll { job });
            ctx.spawn(request.into_actor(self).map(move |polled, act, ctx| {
                // The Spark request is over: the poller takes the next job while the write
                // becomes durable; the job stays in flight until then.
                act.idle.push(poller);
                match polled {
                    Ok(polled) => {
                        ctx.spawn(polled.durable.into_actor(act).map(move |report, act, ctx| {
                            act.in_flight.remove(&execution_id);
                            act.stats.completed += 1;
                            if let PollReport::NotRecorded(e) = report {
                                debug!(execution_id = %execution_id, error = %e, "poll not recorded");
                                if let Some(cycle) = act.cycle.as_mut() {
                                    cycle.unrecorded.insert(execution_id.clone());
                                }
                            }
                            act.dispatch_guarded(ctx);
                        }));
                    }
                    Err(e) => {
                        act.in_flight.remove(&execution_id);
                        act.stats.completed += 1;
                        warn!(execution_id = %execution_id, error = %e, "poller did not answer");
                    }
                }
                act.dispatch_guarded(ctx);
            }));
        }
        self.after_dispatch(ctx);
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
            let cycle = self.cycle.take().expect("cycle checked present");
            let span = info_span!("scheduler", actor = "scheduler");
            let _enter = span.enter();
            METRICS
                .poll_cycle_seconds
                .with_label_values(&["spark"])
                .observe(cycle.clock.elapsed().as_secs_f64());
            if cycle.due > 0 {
                info!(
                    due = cycle.due,
                    dispatched = cycle.dispatched,
                    not_recorded = cycle.unrecorded.len(),
                    ticks_skipped = cycle.ticks_skipped,
                    duration_ms = cycle.clock.elapsed().as_millis() as u64,
                    "poll cycle finished"
                );
            } else {
                debug!("poll cycle found nothing due");
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
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(actor = "scheduler", pollers = self.pollers.len(), interval = ?self.interval, "scheduler started");
        ctx.notify(Tick);
        ctx.run_interval(self.interval, |_, ctx| ctx.notify(Tick));
    }
}

impl Handler<Tick> for Scheduler {
    type Result = TickSummary;

    fn handle(&mut self, _: Tick, ctx: &mut Self::Context) -> TickSummary {
        match guarded(|| self.tick(ctx)) {
            Ok(summary) => summary,
            Err(reason) => {
                report_crash("scheduler", &reason);
                ctx.stop();
                TickSummary { started: false }
            }
        }
    }
}

impl Scheduler {
    fn tick(&mut self, ctx: &mut Context<Self>) -> TickSummary {
        if self.stopping {
            return TickSummary { started: false };
        }
        if let Some(cycle) = self.cycle.as_mut() {
            cycle.ticks_skipped += 1;
            self.stats.skipped_ticks += 1;
            METRICS.scheduler_ticks_skipped.inc();
            debug!(
                actor = "scheduler",
                in_flight = self.in_flight.len(),
                backlog = self.backlog.len(),
                running_for_ms = cycle.clock.elapsed().as_millis() as u64,
                "previous poll cycle still running; tick skipped"
            );
            return TickSummary { started: false };
        }
        self.stats.cycles += 1;
        self.cycle = Some(Cycle {
            started_at: Utc::now(),
            unrecorded: HashSet::new(),
            ticks_skipped: 0,
            clock: Instant::now(),
            due: 0,
            dispatched: 0,
            more: true,
        });
        self.fetch(ctx);
        TickSummary { started: true }
    }
}

impl Handler<Crash> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Self::Context) {
        if let Err(reason) = guarded(|| panic!("injected crash")) {
            report_crash("scheduler", &reason);
            ctx.stop();
        }
    }
}

impl Supervised for Scheduler {
    /// Polls in flight when it crashed still finish and are written by their pollers; the new
    /// scheduler starts with every poller idle and a fresh cycle.
    fn restarting(&mut self, _: &mut Self::Context) {
        self.idle = (0..self.pollers.len()).rev().collect();
        self.in_flight.clear();
        self.backlog.clear();
        self.cycle = None;
        self.fetching = false;
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
