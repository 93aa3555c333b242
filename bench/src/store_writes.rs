//! Store write throughput: status changes per second through the JobStore, beside a
//! hand-written baseline (one multi-row upsert per batch, same database, same batch size).

use std::time::Instant;

use anyhow::Context as _;
use chrono::Utc;
use entity::{job_status_history as history, spark_job_executions as executions};
use futures::future::join_all;
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, TransactionTrait};

use jobwarden::config::Settings;
use jobwarden::domain::{JobStatus, Observation};
use jobwarden::events::Events;
use jobwarden::store;
use jobwarden::store_api::{StoreHandle, WriteOp};

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct StoreFigures {
    pub changes: usize,
    pub new_rows_per_second: f64,
    pub changes_per_second: f64,
    pub baseline_per_second: f64,
    /// What measured the baseline: the database's own client, or this process.
    pub baseline_client: &'static str,
    pub transactions: u64,
}

pub async fn measure(
    mut settings: Settings,
    database_url: Option<String>,
    changes: usize,
) -> anyhow::Result<StoreFigures> {
    let scratch = tempfile::tempdir().context("failed to create a scratch directory")?;
    super::scratch_database(&mut settings, database_url, scratch.path(), "store-writes");
    let db = store::connect(&settings.database)
        .await
        .with_context(|| format!("failed to connect to {}", settings.database.url))?;
    store::migrate(&db).await?;
    let run = format!("bench-{}-", Utc::now().timestamp_millis());
    let store = super::launch_store(db.clone(), &settings, &Events::default());
    let handle = StoreHandle::from(&store);

    let ids: Vec<String> = (0..changes).map(|i| format!("{run}{i}")).collect();
    let started = Instant::now();
    super::track_all(&store, ids.iter().cloned()).await?;
    let insert_secs = started.elapsed().as_secs_f64();

    let before = handle.stats().await?;
    let started = Instant::now();
    let now = Utc::now();
    // Ten thousand at a time: each burst is what batching feeds on, and memory stays bounded.
    for chunk in ids.chunks(10_000) {
        let applied = join_all(chunk.iter().map(|id| {
            handle.write(WriteOp::Observe {
                asked: None,
                execution_id: id.clone(),
                observation: Observation {
                    status: Some(JobStatus::Running),
                    raw_state: Some("RUNNING".into()),
                    progress: Some(10),
                    message: None,
                    relaunching: false,
                    successors: Vec::new(),
                    at: now,
                },
            })
        }))
        .await;
        anyhow::ensure!(applied.iter().all(Result::is_ok), "some changes failed");
    }
    let update_secs = started.elapsed().as_secs_f64();
    let after = handle.stats().await?;

    // The database's own client where it has one (a client known to send without stalls),
    // else the same statements in process.
    let url = settings.database.url.expose().to_owned();
    let baseline_secs = match crate::ceiling::upsert_seconds(&url, &ids, settings.store.max_batch)?
    {
        Some(seconds) => seconds,
        None => baseline(&db, &ids, settings.store.max_batch).await?,
    };

    // Leave a shared database as it was.
    history::Entity::delete_many()
        .filter(history::Column::JobId.starts_with(&run))
        .exec(&db)
        .await?;
    executions::Entity::delete_many()
        .filter(executions::Column::ExecutionId.starts_with(&run))
        .exec(&db)
        .await?;
    Ok(StoreFigures {
        changes,
        new_rows_per_second: changes as f64 / insert_secs,
        changes_per_second: changes as f64 / update_secs,
        baseline_per_second: changes as f64 / baseline_secs,
        baseline_client: crate::ceiling::client_name(&url).unwrap_or("in process"),
        transactions: after.transactions - before.transactions,
    })
}

/// The same status change written with no reads, no rules and no history: one multi-row
/// upsert per batch of `batch` rows, one transaction each. What the database allows at best.
async fn baseline(
    db: &sea_orm::DatabaseConnection,
    ids: &[String],
    batch: usize,
) -> anyhow::Result<f64> {
    use executions::Column as C;
    const UPDATED: [C; 7] = [
        C::Status,
        C::SparkState,
        C::Progress,
        C::LastPolledAt,
        C::LastConfirmedAt,
        C::StatusChangedAt,
        C::UpdatedAt,
    ];
    let started = Instant::now();
    let now = Utc::now();
    for chunk in ids.chunks(batch.clamp(1, 500)) {
        let mut insert = Query::insert();
        insert
            .into_table(executions::Entity)
            .columns(std::iter::once(C::ExecutionId).chain(UPDATED));
        for id in chunk {
            insert.values_panic([
                id.clone().into(),
                "Succeeded".into(),
                "FINISHED".into(),
                100i16.into(),
                now.into(),
                now.into(),
                now.into(),
                now.into(),
            ]);
        }
        insert.on_conflict(
            OnConflict::column(C::ExecutionId)
                .update_columns(UPDATED)
                .to_owned(),
        );
        let txn = db.begin().await?;
        txn.execute(&insert).await?;
        txn.commit().await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Prints the store's rate with the configured number of batches side by side
/// (`store.concurrent_batches`) and with one at a time, each beside a ceiling measured right
/// after it.
pub async fn store_writes(
    settings: Settings,
    database_url: Option<String>,
    changes: usize,
) -> anyhow::Result<()> {
    let label = database_url
        .clone()
        .unwrap_or_else(|| "scratch SQLite".into());
    println!(
        "database         {}",
        jobwarden::config::mask_url_password(&label)
    );
    println!("changes          {changes}");
    let sqlite = database_url
        .as_deref()
        .is_none_or(|u| u.starts_with("sqlite"));
    for concurrent in super::concurrencies(&settings, sqlite) {
        let mut settings = settings.clone();
        settings.store.concurrent_batches = concurrent;
        let f = measure(settings, database_url.clone(), changes).await?;
        println!("-- store.concurrent_batches = {concurrent}");
        println!("new rows         {:>10.0} /s", f.new_rows_per_second);
        println!(
            "status changes   {:>10.0} /s  ({} transactions, mean batch {:.0})",
            f.changes_per_second,
            f.transactions,
            f.changes as f64 / f.transactions.max(1) as f64
        );
        println!(
            "baseline upsert  {:>10.0} /s  ({}; ratio {:.2})",
            f.baseline_per_second,
            f.baseline_client,
            f.changes_per_second / f.baseline_per_second
        );
    }
    Ok(())
}
