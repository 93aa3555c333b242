//! Jobs that wait for other jobs: what a waiting child does once its parents' statuses are
//! known (go on waiting, be released into the submission queue, or end cancelled), and the
//! checks a set of new dependencies must pass before it is accepted (no unknown parent, no
//! cycle).

use std::collections::HashMap;
use std::fmt;

use super::status::{JobStatus, Lifecycle};

/// What a child asks of one parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum After {
    /// The child runs only if the parent succeeded (`after`).
    Success,
    /// The child runs once the parent ended, whatever its outcome (`after_any`).
    Any,
}

impl After {
    pub fn as_str(self) -> &'static str {
        match self {
            After::Success => "success",
            After::Any => "any",
        }
    }

    /// The stored name; anything unknown reads as the strict `success`.
    pub fn from_stored(text: &str) -> After {
        if text == "any" {
            After::Any
        } else {
            After::Success
        }
    }
}

/// One parent as the child's decision reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub id: String,
    pub after: After,
    /// `None` when its row is gone (retention deleted it): its outcome cannot be known.
    pub status: Option<JobStatus>,
}

/// What a waiting child does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Some parent has not ended yet (and none has ended in a way that rules the child out).
    Wait,
    /// Every parent ended as the child asked: it joins the submission queue.
    Release { detail: String },
    /// A parent ended in a way the child did not accept: it ends, never submitted.
    Cancel { parent: String, reason: String },
}

/// Decides a waiting child's fate from its parents. A parent that ended against the child's
/// wish cancels it at once, even while other parents still run: the child can never run.
pub fn settle(parents: &[Parent]) -> Settlement {
    let mut waiting = false;
    for parent in parents {
        match parent.status {
            None => {
                return Settlement::Cancel {
                    parent: parent.id.clone(),
                    reason: format!(
                        "parent {} no longer exists, so its outcome cannot be known; not submitted",
                        parent.id
                    ),
                }
            }
            Some(status) if !status.is_terminal() => waiting = true,
            Some(status) if parent.after == After::Success && status != JobStatus::Succeeded => {
                return Settlement::Cancel {
                    parent: parent.id.clone(),
                    reason: format!(
                        "parent {} ended {status}; this job runs only after it succeeds, so it was not submitted",
                        parent.id
                    ),
                }
            }
            Some(_) => {}
        }
    }
    if waiting {
        return Settlement::Wait;
    }
    let ended: Vec<String> = parents
        .iter()
        .map(|p| {
            let status = p.status.map_or("?", JobStatus::as_str);
            match p.after {
                After::Success => format!("{} {status}", p.id),
                After::Any => format!("{} {status} (after_any)", p.id),
            }
        })
        .collect();
    Settlement::Release {
        detail: format!(
            "released for submission: its parents ended ({})",
            ended.join(", ")
        ),
    }
}

/// Why a set of new jobs and their dependencies cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphError {
    /// `job` names a parent that is neither known nor among the new jobs.
    UnknownParent { job: String, parent: String },
    /// `job` depends, directly or through others, on itself.
    Cycle { job: String, path: Vec<String> },
    /// The same job is named twice among the new ones.
    Duplicate { job: String },
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::UnknownParent { job, parent } => write!(
                f,
                "job {job:?} waits for {parent:?}, which is not a known execution: submit the parent first, or in the same request"
            ),
            GraphError::Cycle { job, path } => write!(
                f,
                "job {job:?} would wait for itself: {}",
                path.join(" -> ")
            ),
            GraphError::Duplicate { job } => {
                write!(f, "job {job:?} is given twice in one request")
            }
        }
    }
}

/// One new job with the parents it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob<'a> {
    pub id: &'a str,
    pub parents: Vec<&'a str>,
}

/// Checks new jobs against each other and the jobs that exist (`known`), and answers the order
/// to register them in: every parent before its children. Existing jobs cannot wait for new
/// ones, so a cycle can only run through the new jobs.
pub fn registration_order(
    jobs: &[NewJob<'_>],
    known: impl Fn(&str) -> bool,
) -> Result<Vec<usize>, GraphError> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        if index.insert(job.id, i).is_some() {
            return Err(GraphError::Duplicate {
                job: job.id.to_owned(),
            });
        }
    }
    for job in jobs {
        for parent in &job.parents {
            if !index.contains_key(parent) && !known(parent) {
                return Err(GraphError::UnknownParent {
                    job: job.id.to_owned(),
                    parent: (*parent).to_owned(),
                });
            }
        }
    }
    // Depth-first, iterative (a chain of thousands must not overflow the stack): a job is
    // placed once all its new parents are; meeting a job still on the path is a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Placed,
    }
    let mut mark = vec![Mark::New; jobs.len()];
    let mut order = Vec::with_capacity(jobs.len());
    for start in 0..jobs.len() {
        if mark[start] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::OnPath;
        while let Some((job, next)) = stack.last_mut() {
            let parents = &jobs[*job].parents;
            let Some(parent) = parents.get(*next) else {
                mark[*job] = Mark::Placed;
                order.push(*job);
                stack.pop();
                continue;
            };
            *next += 1;
            let Some(&p) = index.get(parent) else {
                continue;
            };
            match mark[p] {
                Mark::Placed => {}
                Mark::New => {
                    mark[p] = Mark::OnPath;
                    stack.push((p, 0));
                }
                Mark::OnPath => {
                    let from = stack.iter().position(|(j, _)| *j == p).unwrap_or(0);
                    // Each job on the path waits for the next; the last waits for the first.
                    let mut path: Vec<String> = stack[from..]
                        .iter()
                        .map(|(j, _)| jobs[*j].id.to_owned())
                        .collect();
                    path.push(jobs[p].id.to_owned());
                    return Err(GraphError::Cycle {
                        job: jobs[p].id.to_owned(),
                        path,
                    });
                }
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    fn parent(id: &str, after: After, status: Option<JobStatus>) -> Parent {
        Parent {
            id: id.into(),
            after,
            status,
        }
    }

    #[test]
    fn a_child_waits_while_any_parent_runs() {
        for running in [Waiting, Queued, Submitting, Running, Retrying] {
            let parents = [
                parent("a", After::Success, Some(Succeeded)),
                parent("b", After::Success, Some(running)),
            ];
            assert_eq!(settle(&parents), Settlement::Wait, "{running}");
        }
    }

    #[test]
    fn a_child_is_released_once_every_parent_succeeded() {
        let parents = [
            parent("a", After::Success, Some(Succeeded)),
            parent("b", After::Success, Some(Succeeded)),
        ];
        let Settlement::Release { detail } = settle(&parents) else {
            panic!("not released")
        };
        assert!(detail.contains("a Succeeded, b Succeeded"), "{detail}");
    }

    #[test]
    fn a_parent_that_did_not_succeed_cancels_the_child_at_once_naming_it() {
        for ended in [Failed, Cancelled] {
            let parents = [
                parent("a", After::Success, Some(Running)),
                parent("b", After::Success, Some(ended)),
            ];
            let Settlement::Cancel { parent, reason } = settle(&parents) else {
                panic!("{ended}: not cancelled")
            };
            assert_eq!(parent, "b");
            assert!(
                reason.contains(&format!("parent b ended {ended}")),
                "{reason}"
            );
        }
    }

    #[test]
    fn after_any_runs_the_child_whatever_the_parent_ended_as() {
        for ended in [Succeeded, Failed, Cancelled] {
            let parents = [parent("a", After::Any, Some(ended))];
            assert!(
                matches!(settle(&parents), Settlement::Release { .. }),
                "{ended}"
            );
        }
        let running = [parent("a", After::Any, Some(Running))];
        assert_eq!(settle(&running), Settlement::Wait);
    }

    #[test]
    fn a_parent_whose_row_is_gone_cancels_the_child_never_runs_it() {
        let parents = [parent("gone", After::Any, None)];
        let Settlement::Cancel { parent, reason } = settle(&parents) else {
            panic!("not cancelled")
        };
        assert_eq!(parent, "gone");
        assert!(reason.contains("no longer exists"), "{reason}");
    }

    fn new<'a>(id: &'a str, parents: &[&'a str]) -> NewJob<'a> {
        NewJob {
            id,
            parents: parents.to_vec(),
        }
    }

    #[test]
    fn new_jobs_are_registered_parents_first() {
        let jobs = [
            new("join", &["left", "right"]),
            new("left", &["root"]),
            new("right", &["root", "old"]),
            new("root", &[]),
        ];
        let order = registration_order(&jobs, |id| id == "old").unwrap();
        let position = |id: &str| order.iter().position(|&i| jobs[i].id == id).unwrap();
        assert!(position("root") < position("left"));
        assert!(position("root") < position("right"));
        assert!(position("left") < position("join"));
        assert!(position("right") < position("join"));
        assert_eq!(order.len(), 4);
    }

    #[test]
    fn an_unknown_parent_is_refused_naming_it() {
        let jobs = [new("child", &["ghost"])];
        let err = registration_order(&jobs, |_| false).unwrap_err();
        assert_eq!(
            err,
            GraphError::UnknownParent {
                job: "child".into(),
                parent: "ghost".into()
            }
        );
        assert!(err.to_string().contains("\"ghost\""), "{err}");
    }

    #[test]
    fn a_cycle_is_refused_naming_its_jobs() {
        let jobs = [new("a", &["c"]), new("b", &["a"]), new("c", &["b"])];
        let err = registration_order(&jobs, |_| false).unwrap_err();
        let GraphError::Cycle { path, .. } = &err else {
            panic!("{err:?}")
        };
        for id in ["a", "b", "c"] {
            assert!(path.iter().any(|p| p == id), "{path:?}");
        }
        assert_eq!(path.first(), path.last(), "{path:?}");
        let selfish = [new("me", &["me"])];
        let err = registration_order(&selfish, |_| true).unwrap_err();
        assert!(
            err.to_string().contains("\"me\" would wait for itself"),
            "{err}"
        );
    }

    #[test]
    fn a_chain_of_ten_thousand_is_ordered_without_recursion() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("j{i}")).collect();
        let jobs: Vec<NewJob> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| NewJob {
                id,
                parents: if i == 0 { vec![] } else { vec![&ids[i - 1]] },
            })
            .collect();
        let order = registration_order(&jobs, |_| false).unwrap();
        assert_eq!(order, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_job_given_twice_is_refused() {
        let jobs = [new("a", &[]), new("a", &[])];
        assert_eq!(
            registration_order(&jobs, |_| false),
            Err(GraphError::Duplicate { job: "a".into() })
        );
    }
}
