//! One Spark standalone poll: the driver's state from the master's REST server, the failure
//! reason from the worker's log when it FAILED, and real progress from the driver's UI while it
//! runs, mapped onto an [`Observation`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::{FutureExt, LocalBoxFuture, Shared};
use tracing::{debug, info, warn};

use crate::backend::{BackendError, StatusBackend};
use crate::config::{SparkSettings, StatusSource};
use crate::domain::Observation;
use crate::store_api::DueExecution;

use super::answers::{DriverStatus, MasterListing, SparkError};
use super::client::{SparkClient, SparkSetupError};
use super::driver_ui::DriverUi;
use super::state::DriverState;

/// A Spark standalone master, asked through one shared HTTP client.
pub struct SparkStandalone {
    client: SparkClient,
    name: String,
    uis: DriverUis,
    source: StatusSource,
    listing: ListingCache,
    /// Since when REST has not been reachable (`auto`): the listing alone answers meanwhile.
    rest_down_since: Cell<Option<Instant>>,
    /// The one log line saying where states come from has been written.
    announced: Cell<bool>,
}

type ListingFuture = Shared<LocalBoxFuture<'static, Result<Rc<MasterListing>, SparkError>>>;

/// A listing or its request, with when it was asked for.
type Asked<T> = (Instant, DateTime<Utc>, T);

/// The master's listing, fetched once and shared by every poll of a cycle (and by any poll
/// within `ttl`): a cycle asks the master once, not once per driver, however long it runs.
struct ListingCache {
    ttl: Duration,
    /// The listing, with when it was asked for (monotonic, and by the wall clock that cycles
    /// are stamped with).
    fetched: RefCell<Option<Asked<Rc<MasterListing>>>>,
    in_flight: RefCell<Option<Asked<ListingFuture>>>,
}

impl ListingCache {
    /// The listing read last, if it is fresh for a poll of the cycle that began at
    /// `cycle_started` (asked for since then) or younger than the TTL.
    fn fresh(&self, cycle_started: Option<DateTime<Utc>>) -> Option<Rc<MasterListing>> {
        let fetched = self.fetched.borrow();
        let (at, asked, listing) = fetched.as_ref()?;
        (at.elapsed() < self.ttl || cycle_started.is_some_and(|c| *asked >= c))
            .then(|| listing.clone())
    }
}

/// The longest a listing is reused.
const LISTING_TTL: Duration = Duration::from_secs(1);

/// How long REST is left alone after it was found unreachable (`auto`).
const REST_RETRY: Duration = Duration::from_secs(300);

impl SparkStandalone {
    pub fn new(settings: &SparkSettings) -> Result<Self, SparkSetupError> {
        let client = SparkClient::new(settings)?;
        Ok(SparkStandalone {
            name: client.rest_base().as_str().to_owned(),
            client,
            uis: DriverUis::default(),
            source: settings.status_source,
            listing: ListingCache {
                // Long enough for the polls of one cycle to share it, short enough that a
                // change is never read a second late.
                ttl: (settings.poll_interval / 2).min(LISTING_TTL),
                fetched: RefCell::new(None),
                in_flight: RefCell::new(None),
            },
            rest_down_since: Cell::new(None),
            announced: Cell::new(false),
        })
    }

    /// The master's listing, from the cache while it is fresh for a poll of the cycle that
    /// began at `cycle_started` (asked for since then) or younger than the TTL; one request at
    /// a time.
    async fn listing(
        &self,
        cycle_started: Option<DateTime<Utc>>,
    ) -> Result<Rc<MasterListing>, SparkError> {
        if let Some(listing) = self.listing.fresh(cycle_started) {
            return Ok(listing);
        }
        let pending = self.listing.in_flight.borrow().clone();
        let (at, asked, fetch) = match pending {
            Some(pending) => pending,
            None => {
                let client = self.client.clone();
                let fetch = async move { client.master_listing().await.map(Rc::new) }
                    .boxed_local()
                    .shared();
                let (at, asked) = (Instant::now(), Utc::now());
                *self.listing.in_flight.borrow_mut() = Some((at, asked, fetch.clone()));
                (at, asked, fetch)
            }
        };
        let answer = fetch.await;
        self.listing.in_flight.borrow_mut().take();
        if let Ok(listing) = &answer {
            *self.listing.fetched.borrow_mut() = Some((at, asked, listing.clone()));
        }
        answer
    }

    fn rest_usable(&self) -> bool {
        match self.source {
            StatusSource::MasterUi => false,
            StatusSource::Rest => true,
            StatusSource::Auto => self
                .rest_down_since
                .get()
                .is_none_or(|since| since.elapsed() >= REST_RETRY),
        }
    }

    /// Says once where states come from and why. In `auto` that needs to know whether REST
    /// is on, which a listing that shows every driver would never reveal: one probe tells.
    async fn announce(&self) {
        if self.announced.replace(true) {
            return;
        }
        let how = match self.source {
            StatusSource::Rest => "from REST, one request per driver (spark.status_source = \"rest\")",
            StatusSource::MasterUi => {
                "from the master UI's /json/ listing, one request per cycle (spark.status_source = \"master_ui\": REST not used)"
            }
            StatusSource::Auto => {
                if self.client.rest_answers().await {
                    "from the master UI's /json/ listing, one request per cycle; its REST server answers, and is asked per id only for drivers the listing does not show"
                } else {
                    self.rest_down_since.set(Some(Instant::now()));
                    "from the master UI's /json/ listing alone, one request per cycle: the master's REST server is not reachable (off by default up to Spark 4.0; set spark.status_source = \"master_ui\" to stop trying it)"
                }
            }
        };
        info!(backend = %self.name, "driver states: {how}");
    }

    async fn poll(&self, job: &DueExecution) -> Result<Observation, BackendError> {
        if self.source == StatusSource::Rest {
            self.announce().await;
            return self.poll_rest(job, false).await;
        }
        match self.listing(job.cycle_started).await {
            Ok(listing) => {
                self.announce().await;
                if let Some(listed) = listing.drivers.get(&job.submission_id) {
                    let mut status = listed.clone();
                    if status.state == DriverState::Error && self.rest_usable() {
                        // The listing carries no message; REST has Spark's exception.
                        if let Ok(full) = self.client.status(&job.submission_id).await {
                            status.message = full.message;
                        }
                    }
                    return Ok(self.observation_of(&status, Utc::now()).await);
                }
                if self.rest_usable() {
                    self.poll_rest(job, true).await
                } else {
                    self.ask_workers(&job.submission_id).await
                }
            }
            Err(e) if self.rest_usable() => {
                debug!(error = %e, "no listing from the master UI; asking REST");
                self.poll_rest(job, false).await
            }
            Err(e) => Err(backend_error(e)),
        }
    }

    /// `listed`: the master's UI answered this cycle, so REST out of reach means REST is off,
    /// not that the master is down.
    async fn poll_rest(
        &self,
        job: &DueExecution,
        listed: bool,
    ) -> Result<Observation, BackendError> {
        let status = match self.client.status(&job.submission_id).await {
            Ok(status) => status,
            Err(SparkError::UnknownSubmission(id)) => return self.ask_workers(&id).await,
            Err(e @ SparkError::Unreachable { .. })
                if listed && self.source == StatusSource::Auto =>
            {
                // REST off (Spark 3.5's default) looks like this: use the listing alone for a
                // while, and say so once.
                if self.rest_down_since.replace(Some(Instant::now())).is_none() {
                    warn!(backend = %self.name, error = %e,
                        "Spark's REST server is not reachable; driver states come from the master UI's /json/ listing alone (set spark.status_source = \"master_ui\" to stop trying REST)");
                }
                return self.ask_workers(&job.submission_id).await;
            }
            Err(e) => return Err(backend_error(e)),
        };
        let at = Utc::now();
        Ok(self.observation_of(&status, at).await)
    }

    /// The alive master does not know the driver: after a restart or failover, or once more
    /// than `spark.deploy.retainedDrivers` others finished, it forgets drivers that ran (and
    /// may still run) on its workers. The workers' pages still say how each driver is doing.
    async fn ask_workers(&self, submission_id: &str) -> Result<Observation, BackendError> {
        let (found, asked) = match self.client.find_on_workers(submission_id).await {
            Ok(answer) => answer,
            // The master itself is away: nothing is known about the driver.
            Err(e) if e.is_outage() => return Err(backend_error(e)),
            Err(e) => {
                return Err(BackendError::no_answer(SparkError::UnknownSubmission(
                    format!("{submission_id} (and its workers could not be asked: {e})"),
                )))
            }
        };
        if found.is_none() && asked == 0 {
            return Err(BackendError::outage(SparkError::NoWorkerToAsk(
                submission_id.to_owned(),
            )));
        }
        let Some((driver, worker_id)) = found else {
            return Err(BackendError::no_answer(SparkError::UnknownSubmission(
                format!(
                    "{submission_id}: neither the master nor any of its {asked} workers lists it"
                ),
            )));
        };
        let Some(state) = DriverState::parse(&driver.state) else {
            return Err(BackendError::no_answer(SparkError::UnknownState(
                driver.state,
            )));
        };
        debug!(worker = %worker_id, state = %driver.state, "the master forgot the driver; its worker knows it");
        let status = DriverStatus {
            submission_id: submission_id.to_owned(),
            state,
            message: driver.notes.clone(),
            worker_id: Some(worker_id.clone()),
        };
        let mut observation = self.observation_of(&status, Utc::now()).await;
        if state == DriverState::Killed {
            // The master cannot say who killed it; a restarted master without recovery kills
            // the drivers it does not know, which is worth saying.
            observation.message = Some(format!(
                "driver KILLED on worker {worker_id}, and the master no longer knows it: killed \
                 through Spark, or by a master that restarted without a recovery mode (it kills \
                 the drivers it does not know)"
            ));
        }
        observation.raw_state = Some(format!(
            "{} (worker page; master forgot it)",
            state.as_str()
        ));
        Ok(observation)
    }

    /// What [`SparkStandalone::poll`] would make of a driver the listing already read for this
    /// job's cycle shows, when that needs no further request (a driver submitted, or running
    /// with no UI lookup due) and changes nothing in the row as its page read it. The UI
    /// lookup schedule moves on as that poll's would, only then.
    fn listed_without_news(&self, job: &DueExecution) -> bool {
        let Some(seen) = &job.seen else { return false };
        if self.source == StatusSource::Rest {
            return false;
        }
        let Some(listing) = self.listing.fresh(job.cycle_started) else {
            return false;
        };
        let Some(listed) = listing.drivers.get(&job.submission_id) else {
            return false;
        };
        let missed = match listed.state {
            DriverState::Submitted => None,
            DriverState::Running => match self.uis.get(&job.submission_id) {
                Some(UiLookup::Missing(n)) if !n.saturating_add(1).is_power_of_two() => {
                    Some(n.saturating_add(1))
                }
                _ => return false,
            },
            _ => return false,
        };
        let observation = Observation {
            status: listed.state.job_status(),
            raw_state: Some(listed.state.as_str().to_owned()),
            progress: listed.state.estimated_progress(),
            message: None,
            relaunching: false,
            successors: Vec::new(),
            at: Utc::now(),
        };
        if seen.is_news(&observation) {
            return false;
        }
        if let Some(polls) = missed {
            self.uis.set(&job.submission_id, UiLookup::Missing(polls));
        }
        true
    }

    /// Turns a status answer into an observation, fetching the failure reason when the driver
    /// FAILED (its status answer has none) and real progress while it runs.
    async fn observation_of(
        &self,
        status: &DriverStatus,
        at: chrono::DateTime<Utc>,
    ) -> Observation {
        let message = match status.state {
            DriverState::Failed => Some(match self.client.failure_reason(status).await {
                Ok(reason) => reason,
                Err(e) => {
                    warn!(error = %e, "could not fetch the failed driver's log");
                    format!(
                        "driver FAILED; the reason could not be fetched from the worker's log: {e}"
                    )
                }
            }),
            DriverState::Error => Some(status.message.clone().unwrap_or_else(|| {
                "driver ERROR with no message from Spark (e.g. its worker was lost)".into()
            })),
            DriverState::Killed => Some("driver KILLED".into()),
            _ => None,
        };
        let progress = match status.state {
            DriverState::Running => match self.real_progress(status).await {
                Some(p) => Some(p),
                None => status.state.estimated_progress(),
            },
            DriverState::Failed | DriverState::Error | DriverState::Killed => {
                self.uis.forget(&status.submission_id);
                None
            }
            other => {
                if other == DriverState::Finished {
                    self.uis.forget(&status.submission_id);
                }
                other.estimated_progress()
            }
        };
        let relaunching = status.state == DriverState::Relaunching;
        let successors = if relaunching {
            // The relaunched driver has a new id; the listing is the only place to find it.
            match self.listing(None).await {
                Ok(listing) => listing.successors_of(&status.submission_id),
                Err(e) => {
                    debug!(error = %e, "no listing to look for the relaunched driver in");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        Observation {
            status: status.state.job_status(),
            raw_state: Some(status.state.as_str().to_owned()),
            progress,
            message,
            relaunching,
            successors,
            at,
        }
    }

    /// Task-count progress from the driver's UI; `None` when it has none (yet) or cannot be
    /// read.
    async fn real_progress(&self, status: &DriverStatus) -> Option<u8> {
        let id = status.submission_id.as_str();
        let ui = match self.uis.get(id) {
            Some(UiLookup::Found(ui)) => ui,
            lookup => {
                let polls = match lookup {
                    Some(UiLookup::Missing(n)) => n.saturating_add(1),
                    _ => 1,
                };
                if !polls.is_power_of_two() {
                    self.uis.set(id, UiLookup::Missing(polls));
                    return None;
                }
                match self.client.driver_ui(status).await {
                    Ok(Some(ui)) => {
                        debug!(ui = %ui.base, app_id = %ui.app_id, "found the driver's UI");
                        self.uis.set(id, UiLookup::Found(ui.clone()));
                        ui
                    }
                    Ok(None) => {
                        self.uis.set(id, UiLookup::Missing(polls));
                        return None;
                    }
                    Err(e) => {
                        debug!(error = %e, "could not look for the driver's UI");
                        self.uis.set(id, UiLookup::Missing(polls));
                        return None;
                    }
                }
            }
        };
        match self.client.progress(&ui).await {
            Ok(progress) => progress,
            Err(e) => {
                debug!(error = %e, "driver UI did not give progress");
                None
            }
        }
    }
}

/// A standby or recovering master (no alive one yet) is a failover under way; other outages
/// are Spark being away; anything else is an answer without the job.
fn backend_error(e: SparkError) -> BackendError {
    match e {
        e @ SparkError::MasterNotAlive(_) => BackendError::waiting(e),
        e if e.is_outage() => BackendError::outage(e),
        e => BackendError::no_answer(e),
    }
}

impl StatusBackend for SparkStandalone {
    fn name<'a>(&'a self, _: &'a DueExecution) -> &'a str {
        &self.name
    }

    fn observe<'a>(
        &'a self,
        job: &'a DueExecution,
    ) -> LocalBoxFuture<'a, Result<Observation, BackendError>> {
        Box::pin(self.poll(job))
    }

    fn no_news_now(&self, job: &DueExecution) -> bool {
        self.listed_without_news(job)
    }
}

/// What is known about each running driver's UI, so a driver's log is read once rather than
/// at every poll. Kept small, since every running driver without a UI has an entry: a found UI
/// is keyed by the full submission id, a miss count by a 64-bit hash of it (about 20 bytes per
/// driver; a collision could only shift when a log is read again, never mix up two UIs).
#[derive(Debug, Default)]
struct DriverUis {
    known: Mutex<Lookups>,
}

#[derive(Debug, Default)]
struct Lookups {
    found: HashMap<String, DriverUi>,
    missing: HashMap<u64, u16>,
}

#[derive(Debug, Clone)]
enum UiLookup {
    Found(DriverUi),
    /// Not found in this many polls. A driver logs its UI some seconds after it starts, and
    /// one without a SparkContext never does, so lookups thin out: only at polls 1, 2, 4, 8…
    Missing(u16),
}

fn key(submission_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    submission_id.hash(&mut hasher);
    hasher.finish()
}

impl DriverUis {
    fn get(&self, submission_id: &str) -> Option<UiLookup> {
        let known = self.known.lock().ok()?;
        if let Some(ui) = known.found.get(submission_id) {
            return Some(UiLookup::Found(ui.clone()));
        }
        known
            .missing
            .get(&key(submission_id))
            .map(|n| UiLookup::Missing(*n))
    }

    fn set(&self, submission_id: &str, lookup: UiLookup) {
        if let Ok(mut known) = self.known.lock() {
            match lookup {
                UiLookup::Found(ui) => {
                    known.missing.remove(&key(submission_id));
                    known.found.insert(submission_id.to_owned(), ui);
                }
                UiLookup::Missing(n) => {
                    known.missing.insert(key(submission_id), n);
                }
            }
        }
    }

    fn forget(&self, submission_id: &str) {
        if let Ok(mut known) = self.known.lock() {
            known.found.remove(submission_id);
            known.missing.remove(&key(submission_id));
        }
    }
}
