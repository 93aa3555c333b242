//! Retention under load: deleting a large backlog of aged history rows while polls keep
//! writing, beside the same polls on an idle store. The figure that matters is the polls'
//! write latency (p50, p99) in both phases, side by side, and how fast the backlog goes.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use entity::job_status_history as history;
use sea_orm::{ActiveValue::Set, EntityTrait, PaginatorTrait};

use jobwarden::actors::job_store::Prune;
use jobwarden::actors::JobStore;
use jobwarden::config::{KeepFor, Settings};
use jobwarden::domain::{JobStatus, Observation};
use jobwarden::events::Events;
use jobwarden::store::{self, Rules};
use jobwarden::store_api::{StoreHandle, WriteOp};

/// Jobs the polls write for, and how many write at once (as a poller pool would).
const JOBS: usize = 1_000;
const POLLERS: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct RetentionFigures {
    pub rows: u64,
    pub prune_seconds: f64,
    pub idle_p50_ms: f64,
    pub idle_p99_ms: f64,
    pub pruning_p50_ms: f64,
    pub pruning_p99_ms: f64,
    pub writes_while_pruning: usize,
}

fn percentile(sample: &mut [f64], p: f64) -> f64 {
    sample.sort_by(|a, b| a.total_cmp(b));
    let i = ((sample.len() as f64 - 1.0) * p).round() as usize;
    sample.get(i).copied().unwrap_or(f64::NAN)
}

/// One observation per job per round, each with a higher progress so every one is a write.
async fn poll_round(
    handle: &StoreHandle,
    round: usize,
    latencies: &mut Vec<f64>,
) -> anyhow::Result<()> {
    let ids: Vec<String> = (0..JOBS).map(|i| format!("retention-{i}")).collect();
    for chunk in ids.chunks(POLLERS) {
        let writes = chunk.iter().map(|id| {
            let write = handle.write(WriteOp::Observe {
                asked: None,
                execution_id: id.clone(),
                observation: Observation {
                    status: Some(JobStatus::Running),
                    raw_state: Some("RUNNING".into()),
                    progress: Some((round % 99 + 1) as u8),
                    message: None,
                    relaunching: false,
                    successors: Vec::new(),
                    at: Utc::now(),
                },
            });
            async move {
                let started = Instant::now();
                write
                    .await
                    .map(|_| started.elapsed().as_secs_f64() * 1_000.0)
            }
        });
        for answer in futures::future::join_all(writes).await {
            latencies.push(answer?);
        }
    }
    Ok(())
}

pub async fn measure(
    mut settings: Settings,
    database_url: Option<String>,
    rows: u64,
) -> anyhow::Result<RetentionFigures> {
    let scratch = tempfile::tempdir().context("failed to create a scratch directory")?;
    super::scratch_database(&mut settings, database_url, scratch.path(), "retention");
    let db = store::connect(&settings.database)
        .await
        .with_context(|| format!("failed to connect to {}", settings.database.url))?;
    store::migrate(&db).await?;
    anyhow::ensure!(
        history::Entity::find().count(&db).await? == 0,
        "the database already holds history rows: give an empty one"
    );
    // The backlog: a year-old history, as a database that never pruned would hold.
    let old = Utc::now() - chrono::Duration::days(365);
    let started = Instant::now();
    for start in (0..rows).step_by(4_000) {
        let batch: Vec<history::ActiveModel> = (start..(start + 4_000).min(rows))
            .map(|i| history::ActiveModel {
                job_kind: Set("spark".into()),
                job_id: Set(format!("old-{}", i % 50_000)),
                from_status: Set(Some("Running".into())),
                to_status: Set("Succeeded".into()),
                source: Set("spark_poll".into()),
                detail: Set(None),
                at: Set(old),
                ..Default::default()
            })
            .collect();
        history::Entity::insert_many(batch).exec(&db).await?;
    }
    eprintln!(
        "seeded {rows} aged history rows in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut retention = settings.retention.clone();
    retention.history = KeepFor::days(90);
    let store = JobStore::new(
        db.clone(),
        settings.store.clone(),
        Rules::from_settings(&settings.spark),
        Events::default(),
    )
    .with_retention(retention)
    .launch();
    let handle = StoreHandle::from(&store);
    super::track_all(&store, (0..JOBS).map(|i| format!("retention-{i}"))).await?;

    // Idle: the polls alone.
    let mut idle = Vec::new();
    for round in 0..5 {
        poll_round(&handle, round, &mut idle).await?;
    }
    // Pruning: the same polls while the backlog goes.
    let started = Instant::now();
    let prune = store.send(Prune {
        now: Utc::now(),
        dry_run: false,
    });
    let mut prune = std::pin::pin!(prune);
    let mut pruning = Vec::new();
    let mut round = 5;
    let deleted = loop {
        tokio::select! {
            done = &mut prune => break done??,
            answer = poll_round(&handle, round, &mut pruning) => {
                answer?;
                round += 1;
            }
        }
    };
    let prune_seconds = started.elapsed().as_secs_f64();
    let history_rows = deleted
        .iter()
        .find(|(n, _)| *n == "history")
        .map_or(0, |(_, r)| *r);
    anyhow::ensure!(
        history_rows == rows,
        "deleted {history_rows} of {rows} aged rows"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    let writes_while_pruning = pruning.len();
    Ok(RetentionFigures {
        rows,
        prune_seconds,
        idle_p50_ms: percentile(&mut idle, 0.5),
        idle_p99_ms: percentile(&mut idle, 0.99),
        pruning_p50_ms: percentile(&mut pruning, 0.5),
        pruning_p99_ms: percentile(&mut pruning, 0.99),
        writes_while_pruning,
    })
}

pub async fn run(
    settings: Settings,
    database_url: Option<String>,
    rows: u64,
) -> anyhow::Result<()> {
    let f = measure(settings, database_url, rows).await?;
    println!(
        "retention: deleted {} aged history rows in {:.1}s ({:.0} rows/s) while polls wrote {} changes",
        f.rows,
        f.prune_seconds,
        f.rows as f64 / f.prune_seconds,
        f.writes_while_pruning
    );
    println!("| poll write latency | idle store | while pruning | ratio |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| p50 | {:.2} ms | {:.2} ms | {:.2} |",
        f.idle_p50_ms,
        f.pruning_p50_ms,
        f.pruning_p50_ms / f.idle_p50_ms
    );
    println!(
        "| p99 | {:.2} ms | {:.2} ms | {:.2} |",
        f.idle_p99_ms,
        f.pruning_p99_ms,
        f.pruning_p99_ms / f.idle_p99_ms
    );
    Ok(())
}
