//! The scheduler's due jobs, queued per cluster and taken in turn, so that the jobs of a slow
//! cluster never stand in front of a healthy cluster's, and no cluster holds more pollers than
//! its share.

use std::collections::{HashMap, VecDeque};

use crate::store_api::DueExecution;

#[derive(Default)]
pub struct Backlog {
    /// A handful of clusters: a vector scans faster than a map.
    queues: Vec<Queue>,
    /// The queue that has the next turn.
    turn: usize,
    len: usize,
    /// The most pollers each cluster may hold; a cluster not listed holds at most one.
    caps: HashMap<Option<String>, usize>,
    /// When no caps were given, every cluster may use every poller.
    capped: bool,
}

struct Queue {
    cluster: Option<String>,
    jobs: VecDeque<DueExecution>,
    busy: usize,
}

impl Backlog {
    pub fn with_caps(caps: impl IntoIterator<Item = (Option<String>, usize)>) -> Self {
        let caps: HashMap<_, _> = caps.into_iter().collect();
        Backlog {
            capped: !caps.is_empty(),
            caps,
            ..Backlog::default()
        }
    }

    pub fn push(&mut self, job: DueExecution) {
        let queue = match self.queues.iter().position(|q| q.cluster == job.cluster) {
            Some(i) => i,
            None => {
                self.queues.push(Queue {
                    cluster: job.cluster.clone(),
                    jobs: VecDeque::new(),
                    busy: 0,
                });
                self.queues.len() - 1
            }
        };
        self.queues[queue].jobs.push_back(job);
        self.len += 1;
    }

    /// The next job whose cluster has a poller to spare, clusters taking turns; counts it busy
    /// until [`Backlog::done`].
    pub fn take(&mut self) -> Option<DueExecution> {
        let count = self.queues.len();
        for step in 0..count {
            let i = (self.turn + step) % count;
            let cap = self.cap(&self.queues[i].cluster);
            let queue = &mut self.queues[i];
            if queue.busy >= cap {
                continue;
            }
            if let Some(job) = queue.jobs.pop_front() {
                queue.busy += 1;
                self.len -= 1;
                self.turn = (i + 1) % count;
                return Some(job);
            }
        }
        None
    }

    /// A poll of this cluster no longer holds its poller.
    pub fn done(&mut self, cluster: &Option<String>) {
        if let Some(queue) = self.queues.iter_mut().find(|q| &q.cluster == cluster) {
            queue.busy = queue.busy.saturating_sub(1);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops the queued jobs; polls under way stay counted.
    pub fn clear(&mut self) {
        for queue in &mut self.queues {
            queue.jobs.clear();
        }
        self.len = 0;
    }

    /// Forgets the polls under way too (a restarted scheduler starts with every poller idle).
    pub fn reset(&mut self) {
        self.clear();
        for queue in &mut self.queues {
            queue.busy = 0;
        }
    }

    fn cap(&self, cluster: &Option<String>) -> usize {
        if !self.capped {
            return usize::MAX;
        }
        self.caps.get(cluster).copied().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, cluster: Option<&str>) -> DueExecution {
        DueExecution {
            execution_id: id.into(),
            submission_id: format!("driver-{id}"),
            cluster: cluster.map(str::to_owned),
            fence: None,
            cycle_started: None,
            seen: None,
        }
    }

    fn ids(taken: &[DueExecution]) -> Vec<&str> {
        taken.iter().map(|j| j.execution_id.as_str()).collect()
    }

    #[test]
    fn clusters_take_turns_whatever_order_their_jobs_arrived_in() {
        let mut backlog = Backlog::default();
        for id in ["a1", "a2", "a3"] {
            backlog.push(job(id, None));
        }
        for id in ["b1", "b2"] {
            backlog.push(job(id, Some("b")));
        }
        let taken: Vec<_> = std::iter::from_fn(|| backlog.take()).collect();
        assert_eq!(ids(&taken), ["a1", "b1", "a2", "b2", "a3"]);
        assert!(backlog.is_empty());
    }

    #[test]
    fn a_cluster_at_its_cap_leaves_the_pollers_to_the_others() {
        let mut backlog = Backlog::with_caps([(None, 2), (Some("b".into()), 2)]);
        for id in ["a1", "a2", "a3", "a4"] {
            backlog.push(job(id, None));
        }
        backlog.push(job("b1", Some("b")));
        let taken: Vec<_> = std::iter::from_fn(|| backlog.take()).collect();
        assert_eq!(ids(&taken), ["a1", "b1", "a2"]);
        assert_eq!(
            backlog.len(),
            2,
            "a3 and a4 wait for one of a's polls to end"
        );
        backlog.done(&None);
        assert_eq!(backlog.take().map(|j| j.execution_id), Some("a3".into()));
        assert!(backlog.take().is_none());
    }

    #[test]
    fn a_cluster_nobody_configured_gets_one_poller() {
        let mut backlog = Backlog::with_caps([(None, 4)]);
        backlog.push(job("x1", Some("gone")));
        backlog.push(job("x2", Some("gone")));
        assert!(backlog.take().is_some());
        assert!(backlog.take().is_none());
    }

    #[test]
    fn a_reset_backlog_counts_no_poller_busy() {
        let mut backlog = Backlog::with_caps([(None, 1)]);
        backlog.push(job("a1", None));
        backlog.push(job("a2", None));
        assert!(backlog.take().is_some());
        backlog.reset();
        backlog.push(job("a3", None));
        assert_eq!(backlog.take().map(|j| j.execution_id), Some("a3".into()));
    }
}
