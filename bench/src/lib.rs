//! `jobwarden-bench`: whole-system measurements of jobwarden anyone can rerun, printed as
//! figures beside a ceiling measured in the same run. Not part of the service binary.

pub mod ceiling;
pub mod cpu;
pub mod dashboard;
pub mod instances;
pub mod kafka_ingest;
pub mod listing;
pub mod mapped_schema;
pub mod memory;
pub mod notifications;
pub mod ordering;
pub mod poll;
pub mod retention;
pub mod soak;
pub mod status_check;
pub mod store_writes;
pub mod suite;

pub mod cli;

use actix::{Actor, Addr};
use jobwarden::actors::scheduler::{Scheduler, Ticking};
use jobwarden::actors::{polling, JobStore};
use jobwarden::config::{DatabaseUrl, Settings};
use jobwarden::events::Events;
use jobwarden::store::Rules;
use jobwarden::store_api::{Source, StoreHandle, TrackRequest, WriteOp};

/// The numbers of batches in flight an A/B of the store compares: the configured number, then
/// one at a time (a process's first pass runs cold, which favours the second, so the
/// configured number is not the one favoured). SQLite always writes one at a time.
pub(crate) fn concurrencies(settings: &Settings, sqlite: bool) -> Vec<usize> {
    let configured = settings.store.concurrent_batches;
    if sqlite || configured == 1 {
        vec![1]
    } else {
        vec![configured, 1]
    }
}

/// Points `settings` at `url`, or at a fresh SQLite file in `scratch`.
pub(crate) fn scratch_database(
    settings: &mut Settings,
    url: Option<String>,
    scratch: &std::path::Path,
    name: &str,
) {
    let url = url.unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            scratch.join(format!("{name}.db")).display()
        )
    });
    settings.database.url = DatabaseUrl::new(url);
}

/// Median of a non-empty sample.
pub(crate) fn median(mut sample: Vec<f64>) -> f64 {
    sample.sort_by(|a, b| a.total_cmp(b));
    sample[sample.len() / 2]
}

/// A JobStore on `db` as the service builds it, counting into `events`.
pub(crate) fn launch_store(
    db: sea_orm::DatabaseConnection,
    settings: &Settings,
    events: &Events,
) -> Addr<JobStore> {
    JobStore::new(
        db,
        settings.store.clone(),
        Rules::from_settings(&settings.spark),
        events.clone(),
    )
    .launch()
}

/// The Spark side as the service builds it: a pool of `spark.max_concurrent_polls` pollers
/// asking `spark.rest_url`, and a scheduler ticking as told.
pub(crate) fn start_polling(
    settings: &Settings,
    store: &Addr<JobStore>,
    events: &Events,
    ticking: Ticking,
) -> anyhow::Result<Addr<Scheduler>> {
    let handle = StoreHandle::from(store);
    let (scheduler, _pollers) = polling::assemble(&settings.spark, &handle, events)?;
    Ok(scheduler.ticking(ticking).start())
}

/// Registers one execution per id (submission `driver-<id>`) through the store, a few
/// thousand at a time so the set-up does not dominate the scenario's peak memory.
pub(crate) async fn track_all(
    store: &Addr<JobStore>,
    ids: impl Iterator<Item = String>,
) -> anyhow::Result<()> {
    let store = StoreHandle::from(store);
    let ids: Vec<String> = ids.collect();
    for chunk in ids.chunks(5_000) {
        let answers = futures::future::join_all(chunk.iter().map(|id| {
            store.write(WriteOp::Track(TrackRequest::new(
                id.clone(),
                Some(format!("driver-{id}")),
                None,
                Source::Api,
            )))
        }))
        .await;
        anyhow::ensure!(
            answers.iter().all(Result::is_ok),
            "registering the jobs failed"
        );
    }
    Ok(())
}
