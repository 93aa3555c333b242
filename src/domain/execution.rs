//! How one observation of a Spark execution (or a failure to observe it) changes that
//! execution's row: status by the transition table, progress that never falls, timestamps that
//! are set once.

use chrono::{DateTime, Utc};

use super::status::{judge, JobStatus, Lifecycle, Refusal, Verdict};

/// The part of an execution row that observations may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionState {
    pub status: JobStatus,
    pub spark_state: Option<String>,
    pub progress: u8,
    pub submitted_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub last_polled_at: Option<DateTime<Utc>>,
    pub last_confirmed_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub consecutive_poll_failures: u32,
}

impl ExecutionState {
    /// A freshly registered execution.
    pub fn queued() -> Self {
        ExecutionState {
            status: JobStatus::Queued,
            spark_state: None,
            progress: 0,
            submitted_at: None,
            started_at: None,
            completed_at: None,
            status_changed_at: None,
            last_polled_at: None,
            last_confirmed_at: None,
            error_message: None,
            consecutive_poll_failures: 0,
        }
    }
}

/// What Spark said about an execution, already mapped onto jobwarden's statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// `None` when the answer carries no status information (Spark's UNKNOWN).
    pub status: Option<JobStatus>,
    /// The raw `driverState`, kept for operators.
    pub spark_state: Option<String>,
    /// Completion estimate 0–100, if Spark gave one.
    pub progress: Option<u8>,
    /// Why the job failed, when known.
    pub message: Option<String>,
    pub at: DateTime<Utc>,
}

/// What applying an observation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The status moved forward.
    Transitioned { from: JobStatus, to: JobStatus },
    /// The status stayed; details such as progress or poll times may have been refreshed.
    Refreshed,
    /// The status was refused by the transition table; nothing but poll bookkeeping changed.
    Refused(Refusal<JobStatus>),
}

/// The most a non-succeeded job can show: 100 means "done" and only success is done.
const MAX_UNFINISHED_PROGRESS: u8 = 99;

impl ExecutionState {
    /// Applies one answer from Spark.
    pub fn observe(&mut self, obs: &Observation) -> Applied {
        self.last_polled_at = Some(obs.at);
        if self.status.is_terminal() {
            // A finished row is history: not even the raw state or poll bookkeeping moves.
            return match obs.status {
                Some(observed) if observed != self.status => {
                    Applied::Refused(Refusal::AlreadyFinished {
                        current: self.status,
                        observed,
                    })
                }
                _ => Applied::Refreshed,
            };
        }
        if obs.spark_state.is_some() {
            self.spark_state.clone_from(&obs.spark_state);
        }
        let Some(observed) = obs.status else {
            // Spark answered but knows nothing (UNKNOWN: master recovering). Not a failure to
            // reach it, and not a confirmation that the job is alive either.
            return Applied::Refreshed;
        };
        self.last_confirmed_at = Some(obs.at);
        self.consecutive_poll_failures = 0;
        match judge(self.status, observed) {
            Verdict::Same => {
                self.raise_progress(obs.progress);
                Applied::Refreshed
            }
            Verdict::Refuse(refusal) => Applied::Refused(refusal),
            Verdict::Advance { from, to } => {
                self.advance(to, obs.at, obs.message.as_deref());
                self.raise_progress(obs.progress);
                Applied::Transitioned { from, to }
            }
        }
    }

    /// Moves to `to` by an authority other than Spark's status answer (a timeout, an operator).
    pub fn force_finish(
        &mut self,
        to: JobStatus,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<(JobStatus, JobStatus), Refusal<JobStatus>> {
        match judge(self.status, to) {
            Verdict::Advance { from, to } => {
                self.advance(to, at, Some(message));
                Ok((from, to))
            }
            Verdict::Same => Err(Refusal::AlreadyFinished {
                current: self.status,
                observed: to,
            }),
            Verdict::Refuse(refusal) => Err(refusal),
        }
    }

    /// Counts a poll that got no usable answer. The status never moves because of this:
    /// not reaching Spark says nothing about the job.
    pub fn poll_failed(&mut self, at: DateTime<Utc>) {
        if self.status.is_terminal() {
            return;
        }
        self.last_polled_at = Some(at);
        self.consecutive_poll_failures = self.consecutive_poll_failures.saturating_add(1);
    }

    fn advance(&mut self, to: JobStatus, at: DateTime<Utc>, message: Option<&str>) {
        self.status = to;
        self.status_changed_at = Some(at);
        if to.stage() >= JobStatus::Submitting.stage() {
            self.submitted_at.get_or_insert(at);
        }
        if matches!(to, JobStatus::Running | JobStatus::Succeeded) {
            self.started_at.get_or_insert(at);
        }
        if to.is_terminal() {
            self.completed_at.get_or_insert(at);
        }
        if to == JobStatus::Succeeded {
            self.progress = 100;
        }
        if matches!(to, JobStatus::Failed | JobStatus::Cancelled) {
            if let Some(message) = message.filter(|m| !m.trim().is_empty()) {
                self.error_message = Some(message.to_owned());
            }
        }
    }

    fn raise_progress(&mut self, reported: Option<u8>) {
        if self.status == JobStatus::Succeeded {
            return;
        }
        if let Some(reported) = reported {
            self.progress = self.progress.max(reported.min(MAX_UNFINISHED_PROGRESS));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn saw(status: JobStatus, at: i64) -> Observation {
        Observation {
            status: Some(status),
            spark_state: Some(status.as_str().to_uppercase()),
            progress: None,
            message: None,
            at: t(at),
        }
    }

    fn finished_job() -> ExecutionState {
        let mut job = ExecutionState::queued();
        job.observe(&saw(JobStatus::Running, 1));
        job.observe(&saw(JobStatus::Succeeded, 2));
        job
    }

    #[test]
    fn late_running_observation_never_reopens_a_finished_job() {
        let mut job = finished_job();
        let before = job.clone();
        let applied = job.observe(&saw(JobStatus::Running, 3));
        assert!(matches!(
            applied,
            Applied::Refused(Refusal::AlreadyFinished { .. })
        ));
        assert_eq!(job.status, before.status);
        assert_eq!(job.completed_at, before.completed_at);
        assert_eq!(job.spark_state, before.spark_state);
    }

    #[test]
    fn duplicate_terminal_observation_changes_nothing_but_poll_time() {
        let mut job = finished_job();
        let before = job.clone();
        assert_eq!(
            job.observe(&saw(JobStatus::Succeeded, 9)),
            Applied::Refreshed
        );
        assert_eq!(
            ExecutionState {
                last_polled_at: before.last_polled_at,
                ..job
            },
            before
        );
    }

    #[test]
    fn failed_job_is_not_turned_into_success_by_a_later_signal() {
        let mut job = ExecutionState::queued();
        job.observe(&Observation {
            message: Some("boom".into()),
            ..saw(JobStatus::Failed, 1)
        });
        job.observe(&saw(JobStatus::Succeeded, 2));
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.error_message.as_deref(), Some("boom"));
        assert_eq!(job.progress, 0);
    }

    #[test]
    fn timestamps_are_set_once_on_first_entry() {
        let mut job = ExecutionState::queued();
        job.observe(&saw(JobStatus::Submitting, 1));
        job.observe(&saw(JobStatus::Running, 2));
        job.observe(&saw(JobStatus::Running, 3));
        job.observe(&saw(JobStatus::Succeeded, 4));
        assert_eq!(job.submitted_at, Some(t(1)));
        assert_eq!(job.started_at, Some(t(2)));
        assert_eq!(job.completed_at, Some(t(4)));
        assert_eq!(job.status_changed_at, Some(t(4)));
    }

    #[test]
    fn skipping_straight_to_success_fills_the_earlier_timestamps() {
        let mut job = ExecutionState::queued();
        job.observe(&saw(JobStatus::Succeeded, 5));
        assert_eq!(job.submitted_at, Some(t(5)));
        assert_eq!(job.started_at, Some(t(5)));
        assert_eq!(job.completed_at, Some(t(5)));
    }

    #[test]
    fn a_job_that_never_ran_gets_no_start_time() {
        let mut job = ExecutionState::queued();
        job.observe(&saw(JobStatus::Failed, 5));
        assert_eq!(job.started_at, None);
        assert_eq!(job.completed_at, Some(t(5)));
    }

    #[test]
    fn progress_never_decreases() {
        let mut job = ExecutionState::queued();
        for (reported, expected) in [(40, 40), (10, 40), (70, 70), (0, 70)] {
            job.observe(&Observation {
                progress: Some(reported),
                ..saw(JobStatus::Running, 1)
            });
            assert_eq!(job.progress, expected);
        }
    }

    #[test]
    fn progress_reaches_100_only_on_success() {
        let mut job = ExecutionState::queued();
        job.observe(&Observation {
            progress: Some(100),
            ..saw(JobStatus::Running, 1)
        });
        assert_eq!(job.progress, 99);
        job.observe(&saw(JobStatus::Succeeded, 2));
        assert_eq!(job.progress, 100);

        let mut failed = ExecutionState::queued();
        failed.observe(&Observation {
            progress: Some(100),
            ..saw(JobStatus::Failed, 1)
        });
        assert_eq!(failed.progress, 99);
    }

    #[test]
    fn unknown_state_neither_changes_status_nor_confirms_nor_fails() {
        let mut job = ExecutionState::queued();
        job.observe(&saw(JobStatus::Running, 1));
        job.poll_failed(t(2));
        let applied = job.observe(&Observation {
            status: None,
            spark_state: Some("UNKNOWN".into()),
            progress: None,
            message: None,
            at: t(3),
        });
        assert_eq!(applied, Applied::Refreshed);
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.spark_state.as_deref(), Some("UNKNOWN"));
        assert_eq!(job.consecutive_poll_failures, 1);
        assert_eq!(job.last_confirmed_at, Some(t(1)));
        assert_eq!(job.last_polled_at, Some(t(3)));
    }

    #[test]
    fn poll_failures_are_counted_and_never_change_status() {
        let mut job = ExecutionState::queued();
        job.observe(&saw(JobStatus::Running, 1));
        for i in 0..5 {
            job.poll_failed(t(2 + i));
        }
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.consecutive_poll_failures, 5);
        assert_eq!(job.last_confirmed_at, Some(t(1)));
        job.observe(&saw(JobStatus::Running, 10));
        assert_eq!(job.consecutive_poll_failures, 0);
    }

    #[test]
    fn backwards_observation_is_refused_and_keeps_status() {
        let mut job = ExecutionState::queued();
        job.observe(&saw(JobStatus::Running, 1));
        let applied = job.observe(&saw(JobStatus::Submitting, 2));
        assert!(matches!(
            applied,
            Applied::Refused(Refusal::Backwards { .. })
        ));
        assert_eq!(job.status, JobStatus::Running);
    }

    #[test]
    fn forced_finish_records_the_reason_and_refuses_finished_jobs() {
        let mut job = ExecutionState::queued();
        assert_eq!(
            job.force_finish(JobStatus::Failed, t(1), "timed out"),
            Ok((JobStatus::Queued, JobStatus::Failed))
        );
        assert_eq!(job.error_message.as_deref(), Some("timed out"));
        assert!(job.force_finish(JobStatus::Failed, t(2), "again").is_err());
        assert_eq!(job.error_message.as_deref(), Some("timed out"));
    }
}
