//! Several clusters behind one backend: each job is asked of its own cluster's backend, and a
//! cluster found away is probed by one poll at a time instead of being asked by every one of
//! its jobs, so a dead or hung cluster cannot hold the pollers the healthy ones need.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;

use crate::config::DEFAULT_CLUSTER;
use crate::domain::Observation;
use crate::store_api::DueExecution;

use super::{BackendError, StatusBackend};

/// The clusters jobs are routed to, by the name in their row.
pub struct Clusters {
    members: HashMap<Option<String>, Member>,
    /// How long a cluster found away is left alone before one poll tries it again.
    hold: Duration,
}

struct Member {
    label: String,
    backend: Rc<dyn StatusBackend>,
    away: RefCell<Option<Away>>,
}

struct Away {
    reason: String,
    /// A failover under way rather than an outage.
    waiting: bool,
    next_try: Instant,
    /// A poll is trying the cluster now; the others do not pile onto it.
    probing: bool,
}

/// Why a poll was not sent.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("the row names Spark cluster {0:?}, which is not configured: add [spark.clusters.{0}] to the configuration (the job keeps its status meanwhile)")]
    UnknownCluster(String),
    #[error("cluster {cluster} is away: {reason} (one poll at a time tries it again)")]
    Away { cluster: String, reason: String },
}

impl Clusters {
    /// `hold`: the poll interval is a good choice; every cycle then tries an away cluster once.
    pub fn new(hold: Duration) -> Self {
        Clusters {
            members: HashMap::new(),
            hold,
        }
    }

    /// Adds a cluster; `None` is the default one.
    pub fn with(mut self, name: Option<String>, backend: Rc<dyn StatusBackend>) -> Self {
        let label = name.clone().unwrap_or_else(|| DEFAULT_CLUSTER.to_owned());
        self.members.insert(
            name,
            Member {
                label,
                backend,
                away: RefCell::new(None),
            },
        );
        self
    }

    /// The metrics label of every cluster.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.members.values().map(|m| m.label.as_str())
    }

    async fn route(&self, job: &DueExecution) -> Result<Observation, BackendError> {
        let Some(member) = self.members.get(&job.cluster) else {
            let name = job.cluster.clone().unwrap_or_default();
            return Err(BackendError::outage(RouteError::UnknownCluster(name)));
        };
        if let Some(away) = member.away.borrow_mut().as_mut() {
            if away.probing || Instant::now() < away.next_try {
                let error = RouteError::Away {
                    cluster: member.label.clone(),
                    reason: away.reason.clone(),
                };
                return Err(if away.waiting {
                    BackendError::waiting(error)
                } else {
                    BackendError::outage(error)
                });
            }
            away.probing = true;
        }
        let answer = member.backend.observe(job).await;
        let mut away = member.away.borrow_mut();
        match &answer {
            Err(e) if e.is_outage() => {
                *away = Some(Away {
                    reason: e.to_string(),
                    waiting: e.is_waiting(),
                    next_try: Instant::now() + self.hold,
                    probing: false,
                });
            }
            _ => *away = None,
        }
        answer
    }
}

impl StatusBackend for Clusters {
    fn name<'a>(&'a self, job: &'a DueExecution) -> &'a str {
        self.members.get(&job.cluster).map_or_else(
            || job.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER),
            |m| m.label.as_str(),
        )
    }

    fn observe<'a>(
        &'a self,
        job: &'a DueExecution,
    ) -> LocalBoxFuture<'a, Result<Observation, BackendError>> {
        Box::pin(self.route(job))
    }

    /// A cluster found away is left to the poll that probes it.
    fn no_news_now(&self, job: &DueExecution) -> bool {
        self.members
            .get(&job.cluster)
            .is_some_and(|m| m.away.borrow().is_none() && m.backend.no_news_now(job))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A backend that counts its calls and answers as told.
    struct Scripted {
        calls: Cell<usize>,
        down: Cell<bool>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Refused;

    impl StatusBackend for Scripted {
        fn name<'a>(&'a self, _: &'a DueExecution) -> &'a str {
            "scripted"
        }

        fn observe<'a>(
            &'a self,
            _: &'a DueExecution,
        ) -> LocalBoxFuture<'a, Result<Observation, BackendError>> {
            self.calls.set(self.calls.get() + 1);
            let down = self.down.get();
            Box::pin(async move {
                if down {
                    Err(BackendError::outage(Refused))
                } else {
                    Err(BackendError::no_answer(Refused))
                }
            })
        }
    }

    fn scripted(down: bool) -> Rc<Scripted> {
        Rc::new(Scripted {
            calls: Cell::new(0),
            down: Cell::new(down),
        })
    }

    fn job(cluster: Option<&str>) -> DueExecution {
        DueExecution {
            execution_id: "e1".into(),
            submission_id: "driver-1".into(),
            cluster: cluster.map(str::to_owned),
            fence: None,
            cycle_started: None,
            seen: None,
        }
    }

    #[actix_rt::test]
    async fn each_job_is_asked_of_its_own_cluster() {
        let default = scripted(false);
        let east = scripted(false);
        let clusters = Clusters::new(Duration::from_secs(60))
            .with(None, default.clone())
            .with(Some("east".into()), east.clone());
        let _ = clusters.observe(&job(Some("east"))).await;
        let _ = clusters.observe(&job(Some("east"))).await;
        let _ = clusters.observe(&job(None)).await;
        assert_eq!((default.calls.get(), east.calls.get()), (1, 2));
        assert_eq!(clusters.name(&job(Some("east"))), "east");
        assert_eq!(clusters.name(&job(None)), "default");
    }

    #[actix_rt::test]
    async fn a_cluster_found_away_is_not_asked_again_until_its_next_try() {
        let east = scripted(true);
        let clusters =
            Clusters::new(Duration::from_secs(3600)).with(Some("east".into()), east.clone());
        let first = clusters.observe(&job(Some("east"))).await.unwrap_err();
        assert!(first.is_outage());
        for _ in 0..5 {
            let again = clusters.observe(&job(Some("east"))).await.unwrap_err();
            assert!(
                again.is_outage(),
                "an away cluster is an outage, never news about the job"
            );
            assert!(again.to_string().contains("connection refused"), "{again}");
        }
        assert_eq!(
            east.calls.get(),
            1,
            "one request found it away; the others were not sent"
        );
    }

    #[actix_rt::test]
    async fn an_away_cluster_is_tried_again_and_back_at_its_first_answer() {
        let east = scripted(true);
        let clusters = Clusters::new(Duration::ZERO).with(Some("east".into()), east.clone());
        assert!(clusters.observe(&job(Some("east"))).await.is_err());
        east.down.set(false);
        let answer = clusters.observe(&job(Some("east"))).await.unwrap_err();
        assert!(!answer.is_outage(), "the cluster answered");
        let _ = clusters.observe(&job(Some("east"))).await;
        assert_eq!(east.calls.get(), 3);
    }

    #[actix_rt::test]
    async fn a_row_naming_an_unconfigured_cluster_is_an_outage_that_says_how_to_fix_it() {
        let clusters = Clusters::new(Duration::from_secs(60)).with(None, scripted(false));
        let e = clusters.observe(&job(Some("west"))).await.unwrap_err();
        assert!(e.is_outage(), "the job keeps its status");
        assert!(e.to_string().contains("[spark.clusters.west]"), "{e}");
    }
}
