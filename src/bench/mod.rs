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
