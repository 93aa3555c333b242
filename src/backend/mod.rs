//! Where a backend plugs in: "ask the backend how this job is doing", answered with the
//! backend-neutral [`Observation`] or an error that says whether the backend itself is away.
//! Spark standalone is the one backend today (`spark`), one per cluster behind [`Clusters`];
//! another (YARN, Livy) implements [`StatusBackend`] and the pollers use it unchanged.

mod clusters;
pub mod rest_off;
pub mod spark;

pub use clusters::{Clusters, RouteError};

use futures::future::LocalBoxFuture;

use crate::domain::Observation;
use crate::store_api::DueExecution;

/// Asks one backend about one job at a time.
pub trait StatusBackend: 'static {
    /// What to call the backend that answers about this job in logs and metrics (a cluster
    /// name, a URL).
    fn name<'a>(&'a self, job: &'a DueExecution) -> &'a str;

    /// How the job is doing, as of the answer.
    fn observe<'a>(
        &'a self,
        job: &'a DueExecution,
    ) -> LocalBoxFuture<'a, Result<Observation, BackendError>>;

    /// Whether the job's answer is already known without asking anything (a listing read for
    /// this job's cycle) and is no news against the row as its page read it
    /// ([`DueExecution::seen`]): then the job needs no poll this cycle. A backend that cannot
    /// tell says `false`, and the job is polled as usual.
    fn no_news_now(&self, _job: &DueExecution) -> bool {
        false
    }
}

/// A poll that got no usable answer. It never says anything about the job; it says whether
/// the backend itself is away (an outage: logged once, backed off) or answered without a usable
/// status for this job.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct BackendError {
    kind: Kind,
    source: Box<dyn std::error::Error + Send + Sync>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Outage,
    NoAnswer,
    Waiting,
}

impl BackendError {
    /// The backend is down, failing or not answering.
    pub fn outage(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackendError {
            kind: Kind::Outage,
            source: Box::new(source),
        }
    }

    /// The backend answered, but not with a usable status for this job.
    pub fn no_answer(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackendError {
            kind: Kind::NoAnswer,
            source: Box::new(source),
        }
    }

    /// The backend is handing over (a failover: no master is alive yet, a standby answers):
    /// nobody can say anything now, and nothing is wrong with the job or the poll. Not a
    /// failed poll, no backoff: the job is simply asked again next cycle.
    pub fn waiting(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackendError {
            kind: Kind::Waiting,
            source: Box::new(source),
        }
    }

    /// The backend itself is away (down, or handing over): the job's status says nothing.
    pub fn is_outage(&self) -> bool {
        self.kind != Kind::NoAnswer
    }

    pub fn is_waiting(&self) -> bool {
        self.kind == Kind::Waiting
    }
}
