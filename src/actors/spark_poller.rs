//! SparkPoller: asks Spark about one driver at a time and hands what it saw to the JobStore.
//! Its handler holds the actor until the answer is durable, so the pool size is exactly the
//! number of Spark requests in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::SparkSettings;
use crate::domain::{DriverState, Observation};
use crate::metrics::METRICS;
use crate::spark::{DriverStatus, DriverUi, SparkClient, SparkError};
use crate::store::read::DueExecution;
use crate::store::WriteOp;

use super::job_store::{JobStore, StoreError, Write};
use super::supervision::{contained, report_crash, Crash};

/// Poll one execution.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Polled")]
pub struct Poll {
    pub job: DueExecution,
}

/// Resolves with the poll's final report once its result is durable (or refused).
pub type Durable = std::pin::Pin<Box<dyn std::future::Future<Output = PollReport> + Send>>;

/// A poll whose Spark request is over: the poller is free again, while the write of what it
/// saw may still be on its way to the database.
pub struct Polled {
    pub durable: Durable,
}

impl Polled {
    fn settled(report: PollReport) -> Polled {
        Polled {
            durable: Box::pin(std::future::ready(report)),
        }
    }
}

/// How a poll ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollReport {
    /// Spark answered and the answer is durable.
    Observed(DriverState),
    /// Spark gave no usable answer; the failure is recorded.
    Failed(String),
    /// Nothing could be written (the store refused or went away); the job stays due.
    NotRecorded(String),
}

/// Spark's reachability and poll counters, shared by the pool.
#[derive(Debug)]
pub struct SparkHealth {
    reachable: AtomicBool,
    pub polls_observed: AtomicU64,
    pub polls_failed: AtomicU64,
    pub unknown_state_answers: AtomicU64,
}

impl Default for SparkHealth {
    fn default() -> Self {
        SparkHealth {
            reachable: AtomicBool::new(true),
            polls_observed: AtomicU64::new(0),
            polls_failed: AtomicU64::new(0),
            unknown_state_answers: AtomicU64::new(0),
        }
    }
}

impl SparkHealth {
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Logs Spark going down or coming back once per change, not once per job.
    fn note(&self, up: bool, url: &str, error: Option<&SparkError>) {
        if self.reachable.swap(up, Ordering::Relaxed) == up {
            return;
        }
        METRICS.spark_up.set(if up { 1.0 } else { 0.0 });
        match error {
            Some(e) if !up => warn!(spark = url, error = %e,
                "Spark unreachable; jobs keep their status, polls back off"),
            _ => info!(spark = url, "Spark reachable again"),
        }
    }
}

/// What the pool has learnt about each running driver's UI, so a driver's log is read once
/// rather than at every poll.
#[derive(Debug, Default)]
pub struct DriverUis {
    known: Mutex<HashMap<String, UiLookup>>,
}

#[derive(Debug, Clone)]
enum UiLookup {
    Found(DriverUi),
    /// Not found in this many polls. A driver logs its UI some seconds after it starts, and
    /// one without a SparkContext never does, so lookups thin out: only at polls 1, 2, 4, 8…
    Missing(u32),
}

impl DriverUis {
    fn get(&self, submission_id: &str) -> Option<UiLookup> {
        self.known.lock().ok()?.get(submission_id).cloned()
    }

    fn set(&self, submission_id: &str, lookup: UiLookup) {
        if let Ok(mut known) = self.known.lock() {
            known.insert(submission_id.to_owned(), lookup);
        }
    }

    fn forget(&self, submission_id: &str) {
        if let Ok(mut known) = self.known.lock() {
            known.remove(submission_id);
        }
    }
}

/// What the poller needs from the settings.
#[derive(Debug, Clone, Copy)]
struct PollerSettings {
    pub poll_interval: Duration,
    pub max_backoff: Duration,
}

pub struct SparkPoller {
    id: usize,
    client: SparkClient,
    store: Addr<JobStore>,
    health: Arc<SparkHealth>,
    uis: Arc<DriverUis>,
    settings: PollerSettings,
}

/// The poller pool: exactly `max_concurrent_polls` supervised pollers sharing one HTTP client.
pub struct PollerPool {
    pub pollers: Vec<Addr<SparkPoller>>,
    pub health: Arc<SparkHealth>,
}

impl PollerPool {
    pub fn start(settings: &SparkSettings, store: &Addr<JobStore>) -> Result<PollerPool, String> {
        let client = SparkClient::new(settings)?;
        let health = Arc::new(SparkHealth::default());
        let uis = Arc::new(DriverUis::default());
        let poller_settings = PollerSettings {
            poll_interval: settings.poll_interval,
            max_backoff: settings.max_backoff,
        };
        let pollers = (0..settings.max_concurrent_polls)
            .map(|id| {
                let poller = SparkPoller {
                    id,
                    client: client.clone(),
                    store: store.clone(),
                    health: health.clone(),
                    uis: uis.clone(),
                    settings: poller_settings,
                };
                Supervisor::start(move |_| poller)
            })
            .collect();
        Ok(PollerPool { pollers, health })
    }
}

impl Actor for SparkPoller {
    type Context = Context<Self>;
}

impl Handler<Poll> for SparkPoller {
    type Result = AtomicResponse<Self, Polled>;

    fn handle(&mut self, msg: Poll, _: &mut Self::Context) -> Self::Result {
        let span = info_span!(
            "poll",
            actor = "spark_poller",
            poller = self.id,
            execution_id = %msg.job.execution_id,
            submission_id = %msg.job.submission_id
        );
        let work = poll_once(
            self.client.clone(),
            self.store.clone(),
            self.health.clone(),
            self.uis.clone(),
            self.settings,
            msg.job,
        )
        .instrument(span);
        AtomicResponse::new(Box::pin(contained(work).into_actor(self).map(
            |outcome, _, ctx| match outcome {
                Ok(polled) => polled,
                Err(reason) => {
                    report_crash("spark_poller", &reason);
                    METRICS.polls_in_flight.dec();
                    ctx.stop();
                    Polled::settled(PollReport::NotRecorded(format!("poller crashed: {reason}")))
                }
            },
        )))
    }
}

impl Handler<Crash> for SparkPoller {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Crash, _: &mut Self::Context) -> Self::Result {
        METRICS.polls_in_flight.inc();
        let work = async { panic!("injected crash") };
        AtomicResponse::new(Box::pin(contained(work).into_actor(self).map(
            |outcome: Result<(), String>, _, ctx| {
                if let Err(reason) = outcome {
                    report_crash("spark_poller", &reason);
                    METRICS.polls_in_flight.dec();
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

async fn poll_once(
    client: SparkClient,
    store: Addr<JobStore>,
    health: Arc<SparkHealth>,
    uis: Arc<DriverUis>,
    settings: PollerSettings,
    job: DueExecution,
) -> Polled {
    let spark_url = client.rest_base().as_str().to_owned();
    let m = &*METRICS;
    m.polls_in_flight.inc();
    let timer = m.poll_seconds.start_timer();
    let answer = client.status(&job.submission_id).await;
    timer.observe_duration();
    let at = Utc::now();
    let (op, report) = match answer {
        Ok(status) => {
            health.note(true, &spark_url, None);
            health.polls_observed.fetch_add(1, Ordering::Relaxed);
            m.polls.with_label_values(&["observed"]).inc();
            if status.state == DriverState::Unknown {
                health.unknown_state_answers.fetch_add(1, Ordering::Relaxed);
            }
            debug!(state = %status.state, "Spark answered");
            let observation = observation_of(&client, &uis, &status, at).await;
            (
                WriteOp::Observe {
                    execution_id: job.execution_id.clone(),
                    observation,
                },
                PollReport::Observed(status.state),
            )
        }
        Err(e) => {
            if e.is_outage() {
                health.note(false, &spark_url, Some(&e));
            } else {
                health.note(true, &spark_url, None);
                debug!(error = %e, "no usable answer for this submission");
            }
            health.polls_failed.fetch_add(1, Ordering::Relaxed);
            m.polls.with_label_values(&["failed"]).inc();
            (
                WriteOp::PollFailed {
                    execution_id: job.execution_id.clone(),
                    at,
                    error: e.to_string(),
                    backoff: Some((settings.poll_interval, settings.max_backoff)),
                },
                PollReport::Failed(e.to_string()),
            )
        }
    };
    m.polls_in_flight.dec();
    // Hand the result to the store and free the poller: durability is awaited by the
    // scheduler, which keeps the job out of further polls until then.
    let written = store.send(Write(op));
    let span = tracing::Span::current();
    let durable = async move {
        match written.await.map_err(StoreError::from) {
            Ok(Ok(outcome)) => {
                debug!(?outcome, "recorded");
                report
            }
            Ok(Err(e)) | Err(e) => {
                METRICS.polls.with_label_values(&["not_recorded"]).inc();
                warn!(error = %e, "poll result not recorded; the job stays due");
                PollReport::NotRecorded(e.to_string())
            }
        }
    }
    .instrument(span);
    Polled {
        durable: Box::pin(durable),
    }
}

/// Turns a status answer into an observation, fetching the failure reason when the driver
/// FAILED (its status answer has none) and real progress while it runs.
async fn observation_of(
    client: &SparkClient,
    uis: &DriverUis,
    status: &DriverStatus,
    at: chrono::DateTime<Utc>,
) -> Observation {
    let job_status = status.state.job_status();
    let message = match status.state {
        DriverState::Failed => Some(match client.failure_reason(status).await {
            Ok(reason) => reason,
            Err(e) => {
                warn!(error = %e, "could not fetch the failed driver's log");
                format!("driver FAILED; the reason could not be fetched from the worker's log: {e}")
            }
        }),
        DriverState::Error => Some(status.message.clone().unwrap_or_else(|| {
            "driver ERROR with no message from Spark (e.g. its worker was lost)".into()
        })),
        DriverState::Killed => Some("driver KILLED".into()),
        _ => None,
    };
    let progress = match status.state {
        DriverState::Running => match real_progress(client, uis, status).await {
            Some(p) => Some(p),
            None => status.state.estimated_progress(),
        },
        DriverState::Failed | DriverState::Error | DriverState::Killed => {
            uis.forget(&status.submission_id);
            None
        }
        other => {
            if other == DriverState::Finished {
                uis.forget(&status.submission_id);
            }
            other.estimated_progress()
        }
    };
    Observation {
        status: job_status,
        spark_state: Some(status.state.as_str().to_owned()),
        progress,
        message,
        at,
    }
}

/// Task-count progress from the driver's UI; `None` when it has none (yet) or cannot be read.
async fn real_progress(client: &SparkClient, uis: &DriverUis, status: &DriverStatus) -> Option<u8> {
    let id = status.submission_id.as_str();
    let ui = match uis.get(id) {
        Some(UiLookup::Found(ui)) => ui,
        lookup => {
            let polls = match lookup {
                Some(UiLookup::Missing(n)) => n + 1,
                _ => 1,
            };
            if !polls.is_power_of_two() {
                uis.set(id, UiLookup::Missing(polls));
                return None;
            }
            match client.driver_ui(status).await {
                Ok(Some(ui)) => {
                    debug!(ui = %ui.base, app_id = %ui.app_id, "found the driver's UI");
                    uis.set(id, UiLookup::Found(ui.clone()));
                    ui
                }
                Ok(None) => {
                    uis.set(id, UiLookup::Missing(polls));
                    return None;
                }
                Err(e) => {
                    debug!(error = %e, "could not look for the driver's UI");
                    uis.set(id, UiLookup::Missing(polls));
                    return None;
                }
            }
        }
    };
    match client.progress(&ui).await {
        Ok(progress) => progress,
        Err(e) => {
            debug!(error = %e, "driver UI did not give progress");
            None
        }
    }
}
