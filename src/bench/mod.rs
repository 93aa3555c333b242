//! `jobwarden bench`: whole-system measurements anyone can rerun, printed as figures.

pub mod kafka_ingest;
pub mod poll;
pub mod status_check;
pub mod store_writes;
pub mod suite;

use crate::config::{DatabaseUrl, Settings};

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

/// Registers one execution per id (submission `driver-<id>`) through the store, a few
/// thousand at a time so the set-up does not dominate the scenario's peak memory.
pub(crate) async fn track_all(
    store: &actix::Addr<crate::actors::JobStore>,
    ids: impl Iterator<Item = String>,
) -> anyhow::Result<()> {
    use crate::actors::Write;
    use crate::store::{Source, TrackRequest, WriteOp};
    let ids: Vec<String> = ids.collect();
    for chunk in ids.chunks(5_000) {
        let answers = futures::future::join_all(chunk.iter().map(|id| {
            store.send(Write(WriteOp::Track(TrackRequest {
                submission_id: Some(format!("driver-{id}")),
                execution_id: id.clone(),
                job_name: None,
                source: Source::Api,
            })))
        }))
        .await;
        anyhow::ensure!(
            answers.iter().all(|a| matches!(a, Ok(Ok(_)))),
            "registering the jobs failed"
        );
    }
    Ok(())
}
