//! Submitter: starts the jobs jobwarden submits itself, one recorded attempt at a time, finds
//! the driver of an attempt whose answer was lost (a crash, a timeout) before ever sending
//! another, and kills the drivers of cancelled jobs. Every decision is written through the
//! JobStore; the attempt is recorded before its request leaves.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::backend::spark::{CreateError, CreateRequest, MarkSearch, SparkClient, SparkSetupError};
use crate::config::{SparkSettings, SubmitSettings};
use crate::domain::{attempt_mark, SubmitSpec};
use crate::store_api::{
    ActionKind, AttemptChange, Candidate, DueAction, DueActions, OpError, StoreError, StoreHandle,
    WriteOp, WriteOutcome,
};

/// Most actions one look takes; the next look takes the rest.
const LOOK_LIMIT: u64 = 200;
/// How far before an attempt's request a driver it started may claim to have started (clocks
/// of jobwarden and the master differ). Wider costs reading more drivers' logs, and a
/// same-class driver still waiting for a worker in that window holds the decision up.
const CLOCK_SLACK_MS: i64 = 60 * 1000;

/// Where the process stops dead on purpose, for proving "at most one driver per attempt" on a
/// real cluster (`JOBWARDEN_CRASH_AT`): after the attempt is recorded, after Spark accepted
/// the request, after the driver id is stored. Only builds with the `fault-injection` feature
/// (the tests') read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    AfterRecord,
    AfterCreate,
    AfterStore,
}

impl CrashPoint {
    #[cfg(not(feature = "fault-injection"))]
    pub fn from_env() -> Option<CrashPoint> {
        None
    }

    #[cfg(feature = "fault-injection")]
    pub fn from_env() -> Option<CrashPoint> {
        match std::env::var("JOBWARDEN_CRASH_AT").ok()?.as_str() {
            "after-record" => Some(CrashPoint::AfterRecord),
            "after-create" => Some(CrashPoint::AfterCreate),
            "after-store" => Some(CrashPoint::AfterStore),
            _ => None,
        }
    }
}

fn crash_if(configured: Option<CrashPoint>, here: CrashPoint) {
    if configured == Some(here) {
        // As abrupt as kill -9: nothing is flushed, nothing more is written.
        eprintln!("jobwarden: JOBWARDEN_CRASH_AT={here:?}: stopping dead");
        std::process::abort();
    }
}

/// One cluster as the Submitter talks to it.
#[derive(Clone)]
struct Target {
    client: SparkClient,
    /// `spark.master` for its drivers.
    master: String,
}

pub struct Submitter {
    store: StoreHandle,
    settings: SubmitSettings,
    targets: HashMap<Option<String>, Target>,
    /// Jobs this process is acting on now: a lost answer of ours is reconciled only once we
    /// are done with it.
    busy: HashSet<String>,
    /// When this process last finished acting on a job (the last minute's): a look read
    /// before then is not acted on for it.
    finished: HashMap<String, Instant>,
    last_kill: HashMap<String, Instant>,
    /// Undecided reconciliations already logged (once each).
    told: HashSet<String>,
    kill_every: Duration,
    crash_at: Option<CrashPoint>,
    looking: bool,
    /// A look was asked for while one was under way: another follows it at once.
    relook: bool,
    /// Told by the store when a job others wait for ended.
    wake: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// Clusters whose REST server refused a connection, until when no submission is tried
    /// there (so an outage costs no writes, and is logged once).
    away: HashMap<Option<String>, Instant>,
}

/// How long a cluster that refused a submission's connection is left alone.
const AWAY_FOR: Duration = Duration::from_secs(10);

/// What carrying out an action found out, for the next look.
enum Learned {
    Nothing,
    /// An undecided reconciliation was logged.
    Told,
    /// This cluster refused the connection.
    Away(Option<String>),
    /// A waiting job joined the submission queue: worth looking again at once.
    Released,
}

impl Submitter {
    pub fn new(
        spark: &SparkSettings,
        settings: SubmitSettings,
        store: StoreHandle,
    ) -> Result<Submitter, SparkSetupError> {
        let mut targets = HashMap::new();
        for cluster in spark.clusters() {
            let client = SparkClient::new(&cluster.settings)?;
            targets.insert(
                cluster.name.clone(),
                Target {
                    client,
                    master: cluster.settings.driver_master(),
                },
            );
        }
        Ok(Submitter {
            store,
            settings,
            targets,
            busy: HashSet::new(),
            finished: HashMap::new(),
            last_kill: HashMap::new(),
            told: HashSet::new(),
            kill_every: spark.poll_interval,
            crash_at: CrashPoint::from_env(),
            looking: false,
            relook: false,
            wake: None,
            away: HashMap::new(),
        })
    }

    /// Look at once whenever the store says a job others wait for ended.
    pub fn with_wake(mut self, wake: std::sync::Arc<tokio::sync::Notify>) -> Submitter {
        self.wake = Some(wake);
        self
    }

    fn look(&mut self, ctx: &mut Context<Self>) {
        if self.looking {
            return;
        }
        self.looking = true;
        let began = Instant::now();
        self.finished
            .retain(|_, at| began.duration_since(*at) < Duration::from_secs(60));
        let request = self.store.due_actions(DueActions {
            now: Utc::now(),
            limit: LOOK_LIMIT,
        });
        ctx.spawn(request.into_actor(self).map(move |answer, act, ctx| {
            act.looking = false;
            if std::mem::take(&mut act.relook) {
                ctx.notify(LookNow);
            }
            match answer {
                Ok(actions) => {
                    for action in actions {
                        // Read before this process finished acting on the job: what it says
                        // is out of date (a request whose answer just came, not a lost one).
                        if act.finished.get(&action.execution_id) >= Some(&began) {
                            continue;
                        }
                        act.act(action, ctx);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "could not read the jobs due for submission; trying again")
                }
            }
        }));
    }

    fn act(&mut self, action: DueAction, ctx: &mut Context<Self>) {
        if self.busy.contains(&action.execution_id) {
            return;
        }
        if let ActionKind::Kill { .. } = &action.kind {
            let recent = self
                .last_kill
                .get(&action.execution_id)
                .is_some_and(|at| at.elapsed() < self.kill_every);
            if recent {
                return;
            }
            self.last_kill
                .insert(action.execution_id.clone(), Instant::now());
        }
        let now = Instant::now();
        let away =
            |cluster: &Option<String>| self.away.get(cluster).is_some_and(|until| now < *until);
        let mut candidates = Vec::new();
        if let ActionKind::Submit { clusters, .. } = &action.kind {
            candidates = clusters
                .iter()
                .filter(|c| self.targets.contains_key(*c))
                .map(|c| Candidate {
                    cluster: c.clone(),
                    away: away(c),
                    free_cores: None,
                })
                .collect();
            if candidates.iter().all(|c| c.away) {
                if candidates.is_empty() {
                    warn!(execution_id = %action.execution_id, clusters = ?clusters,
                        "the job names no cluster that is configured; add its [spark.clusters.<name>] section");
                }
                return;
            }
        }
        let Some(target) = self.targets.get(&action.cluster).cloned() else {
            warn!(execution_id = %action.execution_id, cluster = ?action.cluster,
                "the job names a cluster that is not configured; add its [spark.clusters.<name>] section");
            return;
        };
        let id = action.execution_id.clone();
        let cluster = action.cluster.clone();
        self.busy.insert(id.clone());
        let span = info_span!(
            "submit",
            actor = "submitter",
            execution_id = %id,
            cluster = action.cluster.as_deref().unwrap_or("default")
        );
        let work = run(
            action,
            target,
            Placing {
                candidates,
                targets: self.targets.clone(),
            },
            self.store.clone(),
            self.settings.clone(),
            self.crash_at,
            self.told.contains(&id),
        )
        .instrument(span);
        ctx.spawn(work.into_actor(self).map(move |learned, act, ctx| {
            act.busy.remove(&id);
            act.finished.insert(id.clone(), Instant::now());
            match learned {
                Learned::Told => {
                    act.told.insert(id);
                }
                Learned::Away(cluster) => {
                    act.away.insert(cluster, Instant::now() + AWAY_FOR);
                }
                Learned::Nothing => {
                    act.told.remove(&id);
                    act.away.remove(&cluster);
                }
                Learned::Released => {
                    // Its submission should not wait for the next interval.
                    if act.looking {
                        act.relook = true;
                    } else {
                        ctx.notify(LookNow);
                    }
                }
            }
        }));
    }
}

/// Where a submission may go: the clusters offered to the store, and each one's client.
struct Placing {
    candidates: Vec<Candidate>,
    targets: HashMap<Option<String>, Target>,
}

/// Carries out one action.
async fn run(
    action: DueAction,
    target: Target,
    placing: Placing,
    store: StoreHandle,
    settings: SubmitSettings,
    crash_at: Option<CrashPoint>,
    told: bool,
) -> Learned {
    let already = if told {
        Learned::Told
    } else {
        Learned::Nothing
    };
    let write = |op: WriteOp| store.write_fenced(op, action.fence);
    let id = action.execution_id.clone();
    match action.kind {
        ActionKind::Release => {
            let released = write(WriteOp::Release {
                execution_id: id,
                at: Utc::now(),
            })
            .await;
            match released {
                Ok(WriteOutcome::Execution(crate::domain::Applied::Transitioned {
                    to: crate::domain::JobStatus::Queued,
                    ..
                })) => Learned::Released,
                other => {
                    log_refusal(other);
                    Learned::Nothing
                }
            }
        }
        ActionKind::Unusable { reason } => {
            warn!(reason = %reason, "the job's submit_spec cannot be used; failing it");
            log_refusal(
                write(WriteOp::SpecUnusable {
                    execution_id: id,
                    reason,
                    at: Utc::now(),
                })
                .await,
            );
            Learned::Nothing
        }
        ActionKind::Kill { submission_id } => {
            match target.client.kill(&submission_id).await {
                Ok(true) => {
                    info!(submission_id = %submission_id, "cancel: kill requested; the job ends once Spark reports it KILLED")
                }
                Ok(false) => {
                    info!(submission_id = %submission_id, "cancel: Spark did not accept the kill (the driver may have ended already); the job ends as Spark reports it")
                }
                Err(e) => {
                    warn!(submission_id = %submission_id, error = %e, "cancel: could not reach Spark to kill the driver; trying again")
                }
            }
            Learned::Nothing
        }
        ActionKind::Submit {
            attempt,
            spec,
            name,
            kill_first,
            ..
        } => {
            if let Some(old) = kill_first {
                // The attempt before was given up on by a timeout: its driver must not run on
                // beside the next one.
                match target.client.kill(&old).await {
                    Ok(_) => {
                        info!(submission_id = %old, "killed the timed-out attempt's driver before the next attempt")
                    }
                    Err(e) => {
                        warn!(submission_id = %old, error = %e, "could not reach Spark to kill the timed-out attempt's driver; the next attempt waits");
                        return Learned::Away(action.cluster.clone());
                    }
                }
            }
            submit(
                &id,
                attempt,
                &spec,
                name.as_deref(),
                placing,
                &settings,
                crash_at,
                &write,
            )
            .await
        }
        ActionKind::Reconcile {
            attempt,
            mark,
            requested_at,
            spec,
        } => {
            let since = requested_at.timestamp_millis() - CLOCK_SLACK_MS;
            let found = target
                .client
                .find_marked(&spec.main_class, since, &mark, &HashSet::new())
                .await;
            let now = Utc::now();
            match found {
                Ok(MarkSearch::Found(submission_id)) => {
                    info!(attempt, submission_id = %submission_id, mark = %mark,
                        "found the driver of an attempt whose answer was lost; following it, not submitting again");
                    log_refusal(
                        write(WriteOp::AttemptSubmitted {
                            execution_id: id,
                            attempt,
                            submission_id,
                            at: now,
                            recovered: true,
                        })
                        .await,
                    );
                    Learned::Nothing
                }
                Ok(MarkSearch::NotFound) => {
                    let settle = chrono::Duration::from_std(settings.settle).unwrap_or_default();
                    if now - requested_at < settle {
                        // The request may still be on its way to the master.
                        return already;
                    }
                    let waited = (now - requested_at).to_std().unwrap_or_default();
                    let reason = format!(
                        "no driver on the cluster carries its mark {mark} {} after the request (submit.settle = {}); the request started nothing",
                        humantime::format_duration(std::time::Duration::from_secs(waited.as_secs())),
                        humantime::format_duration(settings.settle)
                    );
                    info!(
                        attempt,
                        "{reason}; submitting again under the same attempt number"
                    );
                    log_refusal(
                        write(WriteOp::AttemptNotStarted {
                            execution_id: id,
                            attempt,
                            at: now,
                            reason,
                            counts: false,
                            retry_at: now,
                        })
                        .await,
                    );
                    Learned::Nothing
                }
                Ok(MarkSearch::Undecided(why)) => {
                    if !told {
                        warn!(attempt, why = %why, "cannot yet tell whether a lost submission started a driver; not submitting again until it can be told");
                    }
                    Learned::Told
                }
                Err(e) => {
                    if !told {
                        warn!(attempt, error = %e, "cannot ask the master about a lost submission; not submitting again until it answers");
                    }
                    Learned::Told
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn submit<F, Fut>(
    execution_id: &str,
    attempt: u32,
    spec: &SubmitSpec,
    name: Option<&str>,
    placing: Placing,
    settings: &SubmitSettings,
    crash_at: Option<CrashPoint>,
    write: &F,
) -> Learned
where
    F: Fn(WriteOp) -> Fut,
    Fut: std::future::Future<Output = Result<WriteOutcome, StoreError>>,
{
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mark = attempt_mark(execution_id, attempt, &nonce[..8]);
    let begun = write(WriteOp::BeginAttempt {
        execution_id: execution_id.to_owned(),
        attempt,
        mark: mark.clone(),
        at: Utc::now(),
        candidates: placing.candidates,
    })
    .await;
    let cluster = match begun {
        Ok(WriteOutcome::Attempt(AttemptChange::Begun { cluster })) => cluster,
        // Cancelled meanwhile, taken by another hand, or no free place yet: nothing to send.
        Err(StoreError::Refused(OpError::NotNow(why))) => {
            debug!(attempt, why = %why, "not begun now");
            return Learned::Nothing;
        }
        other => {
            warn!(attempt, outcome = ?other, "could not record the attempt; nothing was sent");
            return Learned::Nothing;
        }
    };
    let Some(target) = placing.targets.get(&cluster) else {
        warn!(attempt, cluster = ?cluster, "placed on a cluster this instance has no client for; the attempt is reconciled later");
        return Learned::Nothing;
    };
    crash_if(crash_at, CrashPoint::AfterRecord);
    let app_name = name.unwrap_or(execution_id);
    let request = CreateRequest {
        spec,
        app_name,
        mark: &mark,
        client_spark_version: &settings.client_spark_version,
        spark_master: &target.master,
    };
    let answer = target.client.create(&request).await;
    let now = Utc::now();
    match answer {
        Ok(submission_id) => {
            crash_if(crash_at, CrashPoint::AfterCreate);
            info!(attempt, submission_id = %submission_id, "submitted");
            let stored = write(WriteOp::AttemptSubmitted {
                execution_id: execution_id.to_owned(),
                attempt,
                submission_id,
                at: now,
                recovered: false,
            })
            .await;
            log_refusal(stored);
            crash_if(crash_at, CrashPoint::AfterStore);
            Learned::Nothing
        }
        Err(CreateError::NotSent(e)) => {
            warn!(attempt, error = %e, "Spark is out of reach: nothing was submitted and no attempt is spent; trying again");
            let retry_at =
                now + chrono::Duration::from_std(settings.check_interval * 2).unwrap_or_default();
            log_refusal(
                write(WriteOp::AttemptNotStarted {
                    execution_id: execution_id.to_owned(),
                    attempt,
                    at: now,
                    reason: format!("Spark out of reach: {e}"),
                    counts: false,
                    retry_at,
                })
                .await,
            );
            Learned::Away(cluster)
        }
        Err(CreateError::Rejected(e)) => {
            warn!(attempt, error = %e, "Spark refused the submission");
            log_refusal(
                write(WriteOp::AttemptNotStarted {
                    execution_id: execution_id.to_owned(),
                    attempt,
                    at: now,
                    reason: e,
                    counts: true,
                    retry_at: now,
                })
                .await,
            );
            Learned::Nothing
        }
        Err(CreateError::Unknown(e)) => {
            // The request may have started a driver: it is looked for by its mark before
            // anything is sent again.
            warn!(attempt, error = %e, mark = %mark, "the submission's answer was lost; looking for its driver before anything else");
            Learned::Nothing
        }
    }
}

fn log_refusal(outcome: Result<WriteOutcome, StoreError>) {
    match outcome {
        Ok(_) | Err(StoreError::Refused(OpError::NotNow(_))) => {}
        Err(e) => {
            warn!(error = %e, "could not record the submission's outcome; it is reconciled on the next look")
        }
    }
}

impl Actor for Submitter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = self.settings.check_interval;
        ctx.run_interval(every, |act, ctx| act.look(ctx));
        self.look(ctx);
        if let Some(wake) = self.wake.clone() {
            let me = ctx.address();
            actix_rt::spawn(async move {
                while me.connected() {
                    wake.notified().await;
                    me.do_send(LookNow);
                }
            });
        }
    }
}

/// Look for due actions now, not at the next interval (a waiting job was released).
#[derive(Message)]
#[rtype(result = "()")]
struct LookNow;

impl Handler<LookNow> for Submitter {
    type Result = ();

    fn handle(&mut self, _: LookNow, ctx: &mut Self::Context) {
        if self.looking {
            self.relook = true;
        } else {
            self.look(ctx);
        }
    }
}

/// Stop starting new actions (at shutdown); what is in flight finishes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopSubmitting;

impl Handler<StopSubmitting> for Submitter {
    type Result = ();

    fn handle(&mut self, _: StopSubmitting, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
