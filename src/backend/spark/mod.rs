//! Spark standalone: a master's REST submission server for a driver's state, the worker's log
//! for why a driver failed, and the driver's own UI for real progress.

mod answers;
mod client;
mod driver_ui;
mod observe;
mod state;
mod submit;
mod worker_page;

pub use answers::{
    driver_status, kill_accepted, master_listing, master_status, master_workers, ui_progress,
    DriverStatus, MasterListing, SparkError,
};
pub use client::{compose_reason, SparkClient, SparkSetupError};
pub use driver_ui::{parse_driver_ui, progress_of, DriverUi, UiJob};
pub use observe::SparkStandalone;
pub use state::{failure_line, DriverState};
pub use submit::{CreateError, CreateRequest, MarkSearch};
pub use worker_page::{drivers_on_worker_page, WorkerDriver};

use std::rc::Rc;

use crate::backend::Clusters;
use crate::config::SparkSettings;

/// A standalone backend for every configured cluster, each with its own HTTP client (its own
/// credentials and timeouts), behind one router.
pub fn clusters(settings: &SparkSettings) -> Result<Clusters, SparkSetupError> {
    // Half an interval: every cycle's first poll of an away cluster tries it again, however
    // the ticks fall.
    let mut all = Clusters::new(settings.poll_interval / 2);
    for cluster in settings.clusters() {
        let backend = SparkStandalone::new(&cluster.settings).map_err(|e| match &cluster.name {
            Some(name) => SparkSetupError::Cluster {
                name: name.clone(),
                source: Box::new(e),
            },
            None => e,
        })?;
        all = all.with(cluster.name, Rc::new(backend));
    }
    Ok(all)
}
