//! Store write throughput: status changes per second through the JobStore.

use std::time::Instant;

use anyhow::Context as _;
use chrono::Utc;
use entity::{job_status_history as history, spark_job_executions as executions};
use futures::future::join_all;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::actors::{GetStats, JobStore, Write};
use crate::config::Settings;
use crate::domain::{JobStatus, Observation};
use crate::store::{self, Source, TrackRequest, WriteOp};

/// Store write throughput: `changes` status changes sent at once through the JobStore.
pub async fn store_writes(
    mut settings: Settings,
    database_url: Option<String>,
    changes: usize,
) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("failed to create a scratch directory")?;
    super::scratch_database(&mut settings, database_url, scratch.path(), "store-writes");
    let db = store::connect(&settings.database)
        .await
        .with_context(|| format!("failed to connect to {}", settings.database.url))?;
    store::migrate(&db).await?;
    let run = format!("bench-{}-", Utc::now().timestamp_millis());
    let store = JobStore::new(db.clone(), settings.store.clone()).launch();

    let ids: Vec<String> = (0..changes).map(|i| format!("{run}{i}")).collect();
    let started = Instant::now();
    let tracked = join_all(ids.iter().map(|id| {
        store.send(Write(WriteOp::Track(TrackRequest {
            execution_id: id.clone(),
            submission_id: Some(format!("driver-{id}")),
            job_name: None,
            source: Source::Api,
        })))
    }))
    .await;
    let insert_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        tracked.iter().all(|r| matches!(r, Ok(Ok(_)))),
        "some registrations failed"
    );

    let before = store.send(GetStats).await?;
    let started = Instant::now();
    let now = Utc::now();
    let applied = join_all(ids.iter().map(|id| {
        store.send(Write(WriteOp::Observe {
            execution_id: id.clone(),
            observation: Observation {
                status: Some(JobStatus::Running),
                spark_state: Some("RUNNING".into()),
                progress: Some(10),
                message: None,
                at: now,
            },
        }))
    }))
    .await;
    let update_secs = started.elapsed().as_secs_f64();
    let after = store.send(GetStats).await?;
    anyhow::ensure!(
        applied.iter().all(|r| matches!(r, Ok(Ok(_)))),
        "some changes failed"
    );
    let transactions = after.transactions - before.transactions;

    println!("database         {}", settings.database.url);
    println!("changes          {changes}");
    println!(
        "new rows         {:>10.0} /s  ({insert_secs:.3} s)",
        changes as f64 / insert_secs
    );
    println!(
        "status changes   {:>10.0} /s  ({update_secs:.3} s, {transactions} transactions, mean batch {:.0})",
        changes as f64 / update_secs,
        changes as f64 / transactions.max(1) as f64
    );

    // Leave a shared database as it was.
    history::Entity::delete_many()
        .filter(history::Column::JobId.starts_with(&run))
        .exec(&db)
        .await?;
    executions::Entity::delete_many()
        .filter(executions::Column::ExecutionId.starts_with(&run))
        .exec(&db)
        .await?;
    Ok(())
}
