//! SparkPoller: asks a backend about one job at a time and hands what it saw to the JobStore.
//! Its handler holds the actor until the backend has answered, so the pool size is exactly the
//! number of backend requests in flight. Whether the answer became durable is reported to the
//! scheduler by message, so it survives a restart of the scheduler.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use chrono::Utc;
use tracing::{debug, info_span, Instrument};

use crate::backend::{BackendError, StatusBackend};
use crate::events::{
    ActorCrashed, BackendReachable, BackendUnreachable, Edges, Events, PollAnswered, PollFailed,
    PollNotRecorded, PollWaited,
};
use crate::store_api::{DueExecution, StoreHandle, WriteOp};

use super::supervision::contained;
#[cfg(feature = "fault-injection")]
use super::supervision::Crash;
#[cfg(feature = "fault-injection")]
use super::supervision::Panicked;

/// Poll one execution. Resolves once the backend has answered (the poller is free again);
/// `report_to` hears once what it saw is durable, or could not be written.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Poll {
    pub job: DueExecution,
    pub report_to: Recipient<PollSettled>,
}

/// A poll is over: its result is durable, or it could not be written.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PollSettled {
    pub execution_id: String,
    pub report: PollReport,
}

/// How a poll ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollReport {
    /// The backend answered and the answer is durable.
    Observed,
    /// The backend gave no usable answer; the failure is recorded.
    Failed,
    /// The backend is handing over (no master alive yet); nothing was written, nothing failed.
    Waited,
    /// Nothing could be written (the store refused or went away, or the poller crashed); the
    /// job stays due.
    NotRecorded,
}

pub struct SparkPoller {
    id: usize,
    backend: Rc<dyn StatusBackend>,
    store: StoreHandle,
    /// Whether each cluster answered last time, shared by the pool so an outage is logged once.
    reachable: Arc<Edges>,
    events: Events,
}

/// Starts exactly `size` supervised pollers sharing one backend (and so one HTTP client).
pub fn start_pool(
    backend: Rc<dyn StatusBackend>,
    size: usize,
    store: &StoreHandle,
    events: &Events,
) -> Vec<Addr<SparkPoller>> {
    let reachable = Arc::new(Edges::default());
    (0..size)
        .map(|id| {
            let poller = SparkPoller {
                id,
                backend: backend.clone(),
                store: store.clone(),
                reachable: reachable.clone(),
                events: events.clone(),
            };
            Supervisor::start(move |_| poller)
        })
        .collect()
}

impl Actor for SparkPoller {
    type Context = Context<Self>;
}

impl Handler<Poll> for SparkPoller {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Poll, _: &mut Self::Context) -> Self::Result {
        let span = info_span!(
            "poll",
            actor = "spark_poller",
            poller = self.id,
            execution_id = %msg.job.execution_id,
            submission_id = %msg.job.submission_id,
            cluster = msg.job.cluster.as_deref().unwrap_or("default")
        );
        let execution_id = msg.job.execution_id.clone();
        let report_to = msg.report_to.clone();
        let work = poll_once(
            self.backend.clone(),
            self.store.clone(),
            self.reachable.clone(),
            self.events.clone(),
            msg,
        )
        .instrument(span);
        AtomicResponse::new(Box::pin(contained(work).into_actor(self).map(
            move |outcome, act, ctx| {
                if let Err(reason) = outcome {
                    act.events.emit(ActorCrashed {
                        actor: "spark_poller",
                        reason: reason.message(),
                    });
                    act.events.metrics().polls_in_flight.dec();
                    report_to.do_send(PollSettled {
                        execution_id,
                        report: PollReport::NotRecorded,
                    });
                    ctx.stop();
                }
            },
        )))
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<Crash> for SparkPoller {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Crash, _: &mut Self::Context) -> Self::Result {
        self.events.metrics().polls_in_flight.inc();
        let work = async { panic!("injected crash") };
        AtomicResponse::new(Box::pin(contained(work).into_actor(self).map(
            |outcome: Result<(), Panicked>, act, ctx| {
                if let Err(reason) = outcome {
                    act.events.emit(ActorCrashed {
                        actor: "spark_poller",
                        reason: reason.message(),
                    });
                    act.events.metrics().polls_in_flight.dec();
                    ctx.stop();
                }
            },
        )))
    }
}

impl Supervised for SparkPoller {
    fn restarting(&mut self, _: &mut Self::Context) {
        debug!(actor = "spark_poller", poller = self.id, "restarted");
    }
}

/// Asks the backend, hands the result to the store, and leaves the wait for durability to a
/// task of its own: the poller takes its next job while the write lands.
async fn poll_once(
    backend: Rc<dyn StatusBackend>,
    store: StoreHandle,
    reachable: Arc<Edges>,
    events: Events,
    poll: Poll,
) {
    let Poll { job, report_to } = poll;
    events.metrics().polls_in_flight.inc();
    let started = Instant::now();
    let answer = backend.observe(&job).await;
    let elapsed = started.elapsed();
    events.metrics().polls_in_flight.dec();
    let (op, report) = match answer {
        Ok(observation) => {
            note_reachable(&reachable, &events, backend.name(&job), None);
            events.emit(PollAnswered {
                raw_state: observation.raw_state.as_deref(),
                unknown: observation.status.is_none(),
                elapsed,
            });
            if job
                .seen
                .as_ref()
                .is_some_and(|seen| !seen.is_news(&observation))
            {
                // The store would find nothing to write either: settled without asking it.
                // A row changed since the page read it is compared again next cycle.
                report_to.do_send(PollSettled {
                    execution_id: job.execution_id,
                    report: PollReport::Observed,
                });
                return;
            }
            (
                WriteOp::Observe {
                    asked: Some(job.submission_id.clone()),
                    execution_id: job.execution_id.clone(),
                    observation,
                },
                PollReport::Observed,
            )
        }
        Err(e) if e.is_waiting() => {
            // A failover under way: nothing to record about the job, nothing failed. The row
            // stays due and is asked again next cycle, without backoff.
            note_reachable(&reachable, &events, backend.name(&job), Some(&e));
            events.emit(PollWaited { error: &e, elapsed });
            report_to.do_send(PollSettled {
                execution_id: job.execution_id,
                report: PollReport::Waited,
            });
            return;
        }
        Err(e) => {
            note_reachable(&reachable, &events, backend.name(&job), Some(&e));
            events.emit(PollFailed { error: &e, elapsed });
            (
                WriteOp::PollFailed {
                    asked: Some(job.submission_id.clone()),
                    execution_id: job.execution_id.clone(),
                    at: Utc::now(),
                    error: e.to_string(),
                    outage: e.is_outage(),
                },
                PollReport::Failed,
            )
        }
    };
    let written = store.write_fenced(op, job.fence);
    let span = tracing::Span::current();
    actix_rt::spawn(
        async move {
            let report = match written.await {
                Ok(outcome) => {
                    debug!(?outcome, "recorded");
                    report
                }
                Err(e) => {
                    events.emit(PollNotRecorded { error: &e });
                    PollReport::NotRecorded
                }
            };
            report_to.do_send(PollSettled {
                execution_id: job.execution_id,
                report,
            });
        }
        .instrument(span),
    );
}

/// Logs a cluster going away or coming back once per change, not once per job.
fn note_reachable(edges: &Edges, events: &Events, backend: &str, error: Option<&BackendError>) {
    match error {
        Some(e) if e.is_outage() => {
            if edges.set(backend, false) {
                events.emit(BackendUnreachable { backend, error: e });
            }
        }
        _ => {
            if edges.set(backend, true) {
                events.emit(BackendReachable { backend });
            }
        }
    }
}
