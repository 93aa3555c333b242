//! Ordering decisions at scale and how soon a child follows its parent. The decisions: one
//! Submitter look (what is due, then a decision for each job it names) over a store holding
//! thousands of jobs waiting (on parents that have not ended, and for a place on a full
//! cluster), beside the same look over a store holding none. The latency: the time from a
//! parent's end (as the poll saw it) to its child's driver being accepted, by the service as
//! it runs against the Spark protocol server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::Addr;
use chrono::Utc;
use jobwarden::actors::JobStore;
use jobwarden::config::Settings;
use jobwarden::domain::dependency::After;
use jobwarden::domain::{JobStatus, Observation, SubmitSpec};
use jobwarden::events::Events;
use jobwarden::store::{self, Rules};
use jobwarden::store_api::{
    ActionKind, DueActions, Source, StoreHandle, TrackRequest, Write, WriteOp,
};
use sea_orm::EntityTrait;

/// Decisions of a first look, not measured: the set-up's writes settle meanwhile.
const WARM_UP: usize = 10;

/// One look's cost.
#[derive(Debug, Clone, Copy)]
pub struct Look {
    /// The whole look: the due read and every decision, in milliseconds.
    pub millis: f64,
    pub decisions: usize,
    pub begins: usize,
    pub releases: usize,
}

impl Look {
    pub fn micros_per_decision(&self) -> f64 {
        self.millis * 1000.0 / self.decisions.max(1) as f64
    }
}

/// Looks with and without thousands of jobs waiting.
#[derive(Debug, Clone, Copy)]
pub struct Decisions {
    pub begins_alone: Look,
    pub begins_among_waiting: Look,
    pub releases_alone: Look,
    pub releases_among_waiting: Look,
}

fn spec() -> SubmitSpec {
    SubmitSpec::from_json(r#"{"app_resource":"file:/jobs.jar","main_class":"Step"}"#)
        .expect("a valid spec")
}

fn job(id: String) -> TrackRequest {
    TrackRequest::new(id, None, Some(spec()), Source::Api)
}

fn ended(id: &str) -> WriteOp {
    WriteOp::Observe {
        execution_id: id.into(),
        asked: None,
        observation: Observation {
            status: Some(JobStatus::Succeeded),
            raw_state: Some("FINISHED".into()),
            progress: None,
            message: None,
            relaunching: false,
            successors: Vec::new(),
            at: Utc::now(),
        },
    }
}

async fn write_all(store: &StoreHandle, ops: Vec<WriteOp>) -> anyhow::Result<()> {
    for chunk in ops.chunks(2_000) {
        let answers =
            futures::future::join_all(chunk.iter().cloned().map(|op| store.write(op))).await;
        if let Some(Err(e)) = answers.into_iter().find(Result::is_err) {
            anyhow::bail!("setting up: {e}");
        }
    }
    Ok(())
}

/// A store over a fresh SQLite file whose default cluster takes `places` drivers.
async fn fresh_store(
    settings: &Settings,
    scratch: &std::path::Path,
    name: &str,
    places: u64,
) -> anyhow::Result<Addr<JobStore>> {
    let mut settings = settings.clone();
    super::scratch_database(&mut settings, None, scratch, name);
    let db = store::connect(&settings.database).await?;
    store::migrate(&db).await?;
    let mut rules = Rules::from_settings(&settings.spark);
    rules.capacity = HashMap::from([(None, places)]);
    Ok(JobStore::new(db, settings.store.clone(), rules, Events::default()).launch())
}

/// One Submitter look: what is due, then every decision it names at once.
async fn look(store: &Addr<JobStore>, limit: u64) -> anyhow::Result<Look> {
    let started = Instant::now();
    let due = store
        .send(DueActions {
            now: Utc::now(),
            limit,
        })
        .await??;
    let decisions: Vec<WriteOp> = due
        .iter()
        .filter_map(|action| match &action.kind {
            ActionKind::Submit { attempt, .. } => Some(WriteOp::BeginAttempt {
                execution_id: action.execution_id.clone(),
                attempt: *attempt,
                mark: format!("{}:{attempt}:bench", action.execution_id),
                at: Utc::now(),
                candidates: Vec::new(),
            }),
            ActionKind::Release => Some(WriteOp::Release {
                execution_id: action.execution_id.clone(),
                at: Utc::now(),
            }),
            _ => None,
        })
        .collect();
    let count = decisions.len();
    let begins = decisions
        .iter()
        .filter(|op| matches!(op, WriteOp::BeginAttempt { .. }))
        .count();
    let answers =
        futures::future::join_all(decisions.into_iter().map(|op| store.send(Write(op)))).await;
    if let Some(refused) = answers.iter().find(|a| !matches!(a, Ok(Ok(_)))) {
        anyhow::bail!("a decision was refused: {refused:?}");
    }
    Ok(Look {
        millis: started.elapsed().as_secs_f64() * 1000.0,
        decisions: count,
        begins,
        releases: count - begins,
    })
}

/// `decisions` jobs decided in one look, beside `waiting` others that wait (half on parents
/// that never end, half for a place behind them on the full cluster), and alone.
pub async fn decisions(
    settings: Settings,
    waiting: usize,
    decisions: usize,
) -> anyhow::Result<Decisions> {
    let scratch = tempfile::tempdir()?;
    // Worlds measured in turns, alone first then among the waiting and the other way round,
    // each figure the median of its rounds: this machine's noise is larger than the effect.
    let mut rounds: Vec<(usize, Look, Look)> = Vec::new();
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            [0, waiting]
        } else {
            [waiting, 0]
        };
        for others in order {
            let (begins, releases) =
                one_world(&settings, scratch.path(), round, others, decisions).await?;
            rounds.push((others, begins, releases));
        }
    }
    let median = |others: usize, pick: fn(&(usize, Look, Look)) -> Look| {
        let mut looks: Vec<Look> = rounds.iter().filter(|r| r.0 == others).map(pick).collect();
        looks.sort_by(|a, b| a.millis.total_cmp(&b.millis));
        looks[looks.len() / 2]
    };
    Ok(Decisions {
        begins_alone: median(0, |r| r.1),
        begins_among_waiting: median(waiting, |r| r.1),
        releases_alone: median(0, |r| r.2),
        releases_among_waiting: median(waiting, |r| r.2),
    })
}

/// Rounds of each world.
const ROUNDS: usize = 5;

/// One world's two looks: `decisions` begins, then `decisions` releases, among `others`.
async fn one_world(
    settings: &Settings,
    scratch: &std::path::Path,
    round: usize,
    others: usize,
    decisions: usize,
) -> anyhow::Result<(Look, Look)> {
    {
        // Begins: `decisions` ready jobs first in the queue, the cluster has just their places
        // (and the one a driver that never ends holds).
        let places = (WARM_UP + decisions) as u64 + 1;
        let store = fresh_store(
            settings,
            scratch,
            &format!("begin-{round}-{others}"),
            places,
        )
        .await?;
        let handle = StoreHandle::from(&store);
        write_all(
            &handle,
            (0..WARM_UP + decisions)
                .map(|i| WriteOp::Track(job(format!("first-{i:06}"))))
                .collect(),
        )
        .await?;
        let mut setup = vec![WriteOp::Track(TrackRequest::new(
            "never-ends",
            Some("driver-never-ends".into()),
            None,
            Source::Api,
        ))];
        write_all(&handle, std::mem::take(&mut setup)).await?;
        let mut behind: Vec<WriteOp> = Vec::new();
        for i in 0..others / 2 {
            let mut child = job(format!("child-{i:06}"));
            child.after = vec![("never-ends".into(), After::Success)];
            behind.push(WriteOp::Track(child));
            behind.push(WriteOp::Track(job(format!("queued-{i:06}"))));
        }
        write_all(&handle, behind).await?;
        // The set-up's writes settle (statistics, checkpoints) in a first look of a few.
        look(&store, WARM_UP as u64).await?;
        // The warm-up's requests are out (the look names them, to reconcile, not to decide).
        let begins = look(&store, (WARM_UP + decisions) as u64).await?;
        // Releases: `decisions` children of parents that just ended.
        let store = fresh_store(
            settings,
            scratch,
            &format!("release-{round}-{others}"),
            u64::from(u32::MAX),
        )
        .await?;
        let handle = StoreHandle::from(&store);
        let mut setup = vec![WriteOp::Track(TrackRequest::new(
            "never-ends",
            Some("driver-never-ends".into()),
            None,
            Source::Api,
        ))];
        for i in 0..WARM_UP + decisions {
            setup.push(WriteOp::Track(TrackRequest::new(
                format!("parent-{i:06}"),
                Some(format!("driver-parent-{i:06}")),
                None,
                Source::Api,
            )));
        }
        write_all(&handle, setup).await?;
        let mut children = Vec::new();
        for i in 0..WARM_UP + decisions {
            let mut child = job(format!("released-{i:06}"));
            child.after = vec![(format!("parent-{i:06}"), After::Success)];
            children.push(WriteOp::Track(child));
        }
        for i in 0..others {
            let mut child = job(format!("child-{i:06}"));
            child.after = vec![("never-ends".into(), After::Success)];
            children.push(WriteOp::Track(child));
        }
        write_all(&handle, children).await?;
        write_all(
            &handle,
            (0..WARM_UP + decisions)
                .map(|i| ended(&format!("parent-{i:06}")))
                .collect(),
        )
        .await?;
        look(&store, WARM_UP as u64).await?;
        // The warm-up's children are begun in the same look.
        let releases = look(&store, (WARM_UP + decisions) as u64).await?;
        anyhow::ensure!(
            begins.begins == decisions && releases.releases == decisions,
            "a look decided {} begins and {} releases, not {decisions} each",
            begins.begins,
            releases.releases
        );
        Ok((begins, releases))
    }
}

/// Percentiles of the time from a parent's end to its child's driver being accepted.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub poll_interval_ms: f64,
    pub pairs: usize,
}

/// `pairs` parent → child pairs run by the service on the protocol server, each parent's
/// driver ended by the server at a moment of its own.
pub async fn latency(mut settings: Settings, pairs: usize) -> anyhow::Result<Latency> {
    let scratch = tempfile::tempdir()?;
    super::scratch_database(&mut settings, None, scratch.path(), "latency");
    let server = jobwarden_testkit::SparkServer::start().await;
    settings.spark.rest_url = server.url();
    settings.spark.master_ui_url = Some(server.url());
    settings.spark.poll_interval = Duration::from_secs(1);
    settings.http.bind = String::new();
    let poll_interval_ms = settings.spark.poll_interval.as_secs_f64() * 1000.0;
    let app = jobwarden::startup::Application::build(settings).await?;
    let handle = app.store_handle.clone();
    let mut ops = Vec::new();
    for i in 0..pairs {
        ops.push(WriteOp::Track(job(format!("p-{i:04}"))));
        let mut child = job(format!("c-{i:04}"));
        child.after = vec![(format!("p-{i:04}"), After::Success)];
        ops.push(WriteOp::Track(child));
    }
    for op in ops {
        handle.write(op).await?;
    }
    // End each parent's driver at its own moment, spread over several poll intervals.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ended = std::collections::HashSet::new();
    let mut step = 0u64;
    while ended.len() < pairs {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the parents were not all submitted"
        );
        for created in server.created() {
            let id = created.mark.unwrap_or_default();
            if id.starts_with("p-") && !ended.contains(&created.submission_id) {
                step += 1;
                actix_rt::time::sleep(Duration::from_millis(37 + step % 50)).await;
                server.answer(
                    &created.submission_id,
                    jobwarden_testkit::Answer::State("FINISHED"),
                );
                server.move_on_master(&created.submission_id, "FINISHED");
                ended.insert(created.submission_id);
            }
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let db = app.db.clone();
    let mut samples = Vec::with_capacity(pairs);
    while samples.len() < pairs {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the children were not all submitted"
        );
        let rows: HashMap<String, entity::spark_job_executions::Model> =
            entity::spark_job_executions::Entity::find()
                .all(&db)
                .await?
                .into_iter()
                .map(|r| (r.execution_id.clone(), r))
                .collect();
        samples.clear();
        for i in 0..pairs {
            let (Some(parent), Some(child)) = (
                rows.get(&format!("p-{i:04}")),
                rows.get(&format!("c-{i:04}")),
            ) else {
                continue;
            };
            if let (Some(end), Some(submitted)) = (parent.completed_at, child.submitted_at) {
                samples.push((submitted - end).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    app.shutdown().await;
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        poll_interval_ms,
        pairs,
    })
}
