//! The Spark side assembled as the service runs it: one backend per cluster behind a router, a
//! pool of `max_concurrent_polls` pollers, and a scheduler that gives each cluster its share.

use std::rc::Rc;

use actix::Addr;

use crate::backend::spark::{self, SparkSetupError};
use crate::backend::Clusters;
use crate::config::SparkSettings;
use crate::events::Events;
use crate::store_api::StoreHandle;

use super::scheduler::Scheduler;
use super::spark_poller::{self, SparkPoller};

/// A scheduler (not started yet, so the caller can set how it ticks) and its pollers, which
/// are running.
pub fn assemble(
    settings: &SparkSettings,
    store: &StoreHandle,
    events: &Events,
) -> Result<(Scheduler, Vec<Addr<SparkPoller>>), SparkSetupError> {
    Ok(assemble_with(
        spark::clusters(settings)?,
        settings,
        store,
        events,
    ))
}

/// Like [`assemble`], with the clusters' backends already built (start-up builds them before
/// anything starts, to refuse a bad setting early).
pub fn assemble_with(
    clusters: Clusters,
    settings: &SparkSettings,
    store: &StoreHandle,
    events: &Events,
) -> (Scheduler, Vec<Addr<SparkPoller>>) {
    for label in clusters.labels() {
        events
            .metrics()
            .spark_up
            .with_label_values(&[label])
            .set(1.0);
    }
    let backend: Rc<dyn crate::backend::StatusBackend> = Rc::new(clusters);
    let pollers = spark_poller::start_pool(
        backend.clone(),
        settings.max_concurrent_polls,
        store,
        events,
    );
    let caps: Vec<(Option<String>, usize)> = if settings.clusters.is_empty() {
        Vec::new()
    } else {
        settings
            .clusters()
            .into_iter()
            .map(|c| (c.name, c.pollers))
            .collect()
    };
    let scheduler = Scheduler::new(
        store.clone(),
        pollers.clone(),
        settings.poll_interval,
        settings.scheduler_stale_after(),
        events.clone(),
    )
    .cluster_caps(caps)
    .answering_from(backend);
    (scheduler, pollers)
}
