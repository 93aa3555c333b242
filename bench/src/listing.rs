//! A refresh cycle answered by the master's `/json/` listing: N jobs, every one of them listed
//! by a Spark-protocol server, polled with `status_source = "master_ui"` (no REST at all).
//! The first cycle moves every job from Queued to Running; the second finds nothing changed
//! but looks each running driver's UI up again (polls 1, 2, 4, 8… do); the third is what most
//! cycles of a steady fleet are: nothing changed, nothing to look up.
//! Beside them: one bare read and parse of the same listing, the floor of any such cycle.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use jobwarden::actors::scheduler::{GetSchedulerStats, Scheduler, StopPolling, Tick, Ticking};
use jobwarden::config::{Settings, StatusSource};
use jobwarden::events::Events;
use jobwarden::store;
use jobwarden_testkit::SparkServer;

#[derive(Debug, Clone, Copy)]
pub struct ListingFigures {
    pub jobs: usize,
    /// Seconds and listing requests of each of the three cycles.
    pub cycles: [(f64, usize); 3],
    /// One GET of the listing and its parse, in seconds.
    pub bare: f64,
}

pub async fn measure(mut settings: Settings, jobs: usize) -> anyhow::Result<ListingFigures> {
    let server = SparkServer::start().await.without_request_counts();
    let scratch = tempfile::tempdir().context("failed to create a scratch directory")?;
    super::scratch_database(&mut settings, None, scratch.path(), "listing");
    let db = store::connect(&settings.database).await?;
    store::migrate(&db).await?;
    let events = Events::default();
    let job_store = super::launch_store(db, &settings, &events);
    let ids: Vec<String> = (0..jobs).map(|i| format!("l{i}")).collect();
    super::track_all(&job_store, ids.iter().cloned()).await?;
    for id in &ids {
        server.list_on_master(&format!("driver-{id}"), "RUNNING");
    }
    drop(ids);

    let bare = bare_listing(&server).await?;

    settings.spark.rest_url = server.url();
    settings.spark.master_ui_url = Some(server.url());
    settings.spark.status_source = StatusSource::MasterUi;
    settings.spark.max_concurrent_polls = 64;
    let scheduler = super::start_polling(&settings, &job_store, &events, Ticking::Manual)?;
    let mut cycles = [(0.0, 0); 3];
    for (n, figures) in cycles.iter_mut().enumerate() {
        let before = server.listing_requests();
        let seconds = cycle(&scheduler, n as u64 + 1, jobs).await?;
        *figures = (seconds, server.listing_requests() - before);
    }
    scheduler.do_send(StopPolling);
    Ok(ListingFigures { jobs, cycles, bare })
}

/// Runs cycle number `n` and waits for it to end, checking it polled every one of `jobs`;
/// its seconds.
pub(crate) async fn cycle(
    scheduler: &actix::Addr<Scheduler>,
    n: u64,
    jobs: usize,
) -> anyhow::Result<f64> {
    let before = scheduler.send(GetSchedulerStats).await?.completed;
    let started = Instant::now();
    scheduler.send(Tick).await?;
    let deadline = started + Duration::from_secs(600);
    loop {
        let stats = scheduler.send(GetSchedulerStats).await?;
        if stats.cycles >= n && !stats.cycle_running {
            anyhow::ensure!(
                (stats.completed - before) as usize == jobs,
                "cycle {n} polled {} of {jobs} jobs",
                stats.completed - before
            );
            return Ok(started.elapsed().as_secs_f64());
        }
        anyhow::ensure!(Instant::now() < deadline, "cycle {n} did not end");
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The median of five plain reads of the listing, each parsed as jobwarden parses it.
async fn bare_listing(server: &SparkServer) -> anyhow::Result<f64> {
    let client = reqwest::Client::new();
    let url = format!("{}/json/", server.url());
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let body = client.get(&url).send().await?.bytes().await?;
        let listing = jobwarden::backend::spark::master_listing(&body)?;
        anyhow::ensure!(!listing.drivers.is_empty(), "an empty listing");
        times.push(started.elapsed().as_secs_f64());
    }
    Ok(super::median(times))
}
