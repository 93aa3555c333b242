//! The attempts of a job jobwarden submits: which attempt the job wants now, what an attempt
//! that started no driver costs, what an operator's cancel and retry do, and how the job's
//! state reads while it waits between attempts. The store records what these decide.

use chrono::{DateTime, Utc};

use super::execution::ExecutionState;
use super::status::{JobStatus, Lifecycle};
use super::submission::{Ending, RetryPolicy};

/// What the attempt rules read of a job's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempts {
    pub status: JobStatus,
    /// jobwarden submits this job (its row carries a submit spec).
    pub ours: bool,
    /// The backend id of the driver the row follows.
    pub driver: Option<String>,
    /// The current attempt's number; 0 before the first.
    pub attempt: u32,
    /// When the next attempt is due; `None` once it has begun (or for a job not ours).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
}

/// What an operator's cancel does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// The job already ended: nothing to cancel.
    Finished,
    /// No driver runs for it: it ends now, cancelled, for this reason.
    EndNow(String),
    /// A driver runs (or may, its request being out): it is to be killed, and the job ends
    /// once Spark confirms it. `first` when this is the first request.
    KillDriver { first: bool },
}

/// Why an operator's retry is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRefused {
    /// jobwarden did not submit the job, so it cannot start it again.
    NotOurs,
    /// The job has not ended.
    NotFinished,
}

/// What an attempt that started no driver leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotStarted {
    /// Proven never to have reached Spark: tried again later, no attempt spent. `note` when
    /// the cause differs from the last one (one history line per cause, however long an
    /// outage lasts); `then_cancel` when an operator cancelled meanwhile.
    Withdrawn { note: bool, then_cancel: bool },
    /// Spark refused it: the attempt is spent and the next is due at `at`.
    Retry { at: DateTime<Utc>, message: String },
    /// Spark refused it and no attempt is left (or the job was cancelled): the job fails.
    Fail { message: String },
}

impl Attempts {
    fn waiting(&self) -> bool {
        matches!(self.status, JobStatus::Queued | JobStatus::Retrying)
    }

    /// The job waits for jobwarden to submit it (its first attempt or a retry), not for Spark.
    pub fn waits_for_jobwarden(&self) -> bool {
        self.ours && self.waiting() && self.driver.is_none()
    }

    /// A request for the current attempt is out (or about to be) and its driver is not known.
    pub fn in_flight(&self) -> bool {
        self.waits_for_jobwarden() && self.attempt > 0 && self.next_attempt_at.is_none()
    }

    /// Whether attempt `attempt` is the one to begin at `at`.
    pub fn wants(&self, attempt: u32, at: DateTime<Utc>) -> bool {
        self.waits_for_jobwarden()
            && !self.cancel_requested
            && !self.in_flight()
            && self.next_attempt_at.is_none_or(|due| due <= at)
            && u64::from(self.attempt) + 1 == u64::from(attempt)
    }

    /// When the attempt that ended as `ending` at `at` is followed by another, or `None` when
    /// the job ends with it. A job an operator cancelled is never tried again.
    pub fn next_after(
        &self,
        policy: &RetryPolicy,
        ending: Ending,
        at: DateTime<Utc>,
        jitter: f64,
    ) -> Option<DateTime<Utc>> {
        if self.cancel_requested {
            return None;
        }
        policy.next_attempt(self.attempt, ending, at, jitter)
    }

    pub fn cancel(&self) -> Cancel {
        if self.status.is_terminal() {
            return Cancel::Finished;
        }
        if self.driver.is_none() && !self.in_flight() {
            return Cancel::EndNow(if self.ours && self.attempt > 0 {
                format!(
                    "cancelled by an operator while waiting for attempt {}; not submitted again",
                    self.attempt + 1
                )
            } else {
                "cancelled by an operator before it was submitted".to_owned()
            });
        }
        Cancel::KillDriver {
            first: !self.cancel_requested,
        }
    }

    /// An operator's retry: the number of the attempt it begins.
    pub fn operator_retry(&self) -> Result<u32, RetryRefused> {
        if !self.ours {
            return Err(RetryRefused::NotOurs);
        }
        if !self.status.is_terminal() {
            return Err(RetryRefused::NotFinished);
        }
        Ok(self.attempt + 1)
    }

    /// The current attempt started no driver, for `reason`; `counts` when Spark refused it
    /// (rather than it never reaching Spark); `last_cause` is the previous withdrawal's.
    pub fn not_started(
        &self,
        reason: &str,
        counts: bool,
        last_cause: Option<&str>,
        policy: &RetryPolicy,
        at: DateTime<Utc>,
        jitter: f64,
    ) -> NotStarted {
        if !counts {
            return NotStarted::Withdrawn {
                note: last_cause != Some(reason),
                then_cancel: self.cancel_requested,
            };
        }
        let message = format!(
            "attempt {} of {}: Spark refused the submission: {reason}",
            self.attempt, policy.max_attempts
        );
        match self.next_after(policy, Ending::Error, at, jitter) {
            Some(next) => NotStarted::Retry { at: next, message },
            None => NotStarted::Fail { message },
        }
    }
}

impl ExecutionState {
    /// The attempt's driver is known: the row shows this attempt from now on, its times and
    /// its errors and none of the last one's.
    pub fn driver_accepted(&mut self, at: DateTime<Utc>) {
        self.status = JobStatus::Submitting;
        self.status_changed_at = Some(at);
        self.submitted_at = Some(at);
        self.started_at = None;
        self.raw_state = None;
        self.error_message = None;
        self.consecutive_poll_failures = 0;
        self.last_poll_error = None;
        self.failing_since = None;
        self.next_poll_at = None;
    }

    /// An ending that is retried: the job waits for its next attempt, with no driver to poll,
    /// and its completion time stays what it was before the ending.
    pub fn between_attempts(&mut self, before: &ExecutionState) {
        self.status = JobStatus::Retrying;
        self.completed_at = before.completed_at;
        self.next_poll_at = None;
        self.consecutive_poll_failures = 0;
        self.failing_since = None;
        self.last_poll_error = None;
    }

    /// An operator asked a finished job to run again: it waits for an attempt due now.
    pub fn retry_asked(&mut self, at: DateTime<Utc>) {
        self.status = JobStatus::Retrying;
        self.status_changed_at = Some(at);
        self.completed_at = None;
        self.next_poll_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn job(status: JobStatus, attempt: u32, driver: bool, next: Option<i64>) -> Attempts {
        Attempts {
            status,
            ours: true,
            driver: driver.then(|| "driver-1".to_owned()),
            attempt,
            next_attempt_at: next.map(at),
            cancel_requested: false,
        }
    }

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
            retry_on: vec![Ending::Failed, Ending::Error],
        }
    }

    #[test]
    fn a_job_wants_only_its_next_attempt_once_it_is_due() {
        // (job, attempt asked, at, wanted)
        let table = [
            (job(JobStatus::Queued, 0, false, Some(0)), 1, 0, true),
            (job(JobStatus::Queued, 0, false, None), 1, 0, true),
            (job(JobStatus::Queued, 0, false, Some(10)), 1, 9, false),
            (job(JobStatus::Queued, 0, false, Some(0)), 2, 0, false),
            (job(JobStatus::Retrying, 1, false, Some(30)), 2, 30, true),
            // Its request is out: the same attempt is not begun twice.
            (job(JobStatus::Queued, 1, false, None), 2, 0, false),
            (job(JobStatus::Submitting, 1, true, None), 2, 0, false),
            (job(JobStatus::Running, 1, true, None), 2, 0, false),
            (job(JobStatus::Failed, 1, false, None), 2, 0, false),
        ];
        for (job, attempt, now, wanted) in table {
            assert_eq!(
                job.wants(attempt, at(now)),
                wanted,
                "{job:?} asked for {attempt} at {now}"
            );
        }
    }

    #[test]
    fn a_job_not_ours_or_cancelled_wants_no_attempt() {
        let not_ours = Attempts {
            ours: false,
            ..job(JobStatus::Queued, 0, false, None)
        };
        let cancelled = Attempts {
            cancel_requested: true,
            ..job(JobStatus::Queued, 0, false, None)
        };
        assert!(!not_ours.wants(1, at(0)));
        assert!(!cancelled.wants(1, at(0)));
    }

    #[test]
    fn a_cancel_ends_a_job_without_a_driver_at_once_and_kills_one_that_has_one() {
        let requested = Attempts {
            cancel_requested: true,
            ..job(JobStatus::Running, 1, true, None)
        };
        // (job, decision)
        let table = [
            (job(JobStatus::Succeeded, 1, true, None), Cancel::Finished),
            (
                job(JobStatus::Queued, 0, false, Some(0)),
                Cancel::EndNow("cancelled by an operator before it was submitted".into()),
            ),
            (
                job(JobStatus::Retrying, 1, false, Some(60)),
                Cancel::EndNow(
                    "cancelled by an operator while waiting for attempt 2; not submitted again"
                        .into(),
                ),
            ),
            (
                job(JobStatus::Running, 1, true, None),
                Cancel::KillDriver { first: true },
            ),
            // In flight: its driver may exist and is killed once found.
            (
                job(JobStatus::Queued, 1, false, None),
                Cancel::KillDriver { first: true },
            ),
            (requested, Cancel::KillDriver { first: false }),
        ];
        for (job, want) in table {
            assert_eq!(job.cancel(), want, "{job:?}");
        }
    }

    #[test]
    fn only_a_finished_job_jobwarden_submitted_can_be_retried() {
        let not_ours = Attempts {
            ours: false,
            ..job(JobStatus::Failed, 1, true, None)
        };
        assert_eq!(
            job(JobStatus::Failed, 2, true, None).operator_retry(),
            Ok(3)
        );
        assert_eq!(
            job(JobStatus::Cancelled, 0, false, None).operator_retry(),
            Ok(1)
        );
        assert_eq!(
            job(JobStatus::Running, 1, true, None).operator_retry(),
            Err(RetryRefused::NotFinished)
        );
        assert_eq!(not_ours.operator_retry(), Err(RetryRefused::NotOurs));
    }

    #[test]
    fn an_attempt_that_never_reached_spark_costs_nothing_and_is_noted_once_per_cause() {
        let waiting = job(JobStatus::Queued, 1, false, None);
        let cancelled = Attempts {
            cancel_requested: true,
            ..waiting.clone()
        };
        let p = policy(3);
        // (job, last cause, decision)
        let table = [
            (
                &waiting,
                None,
                NotStarted::Withdrawn {
                    note: true,
                    then_cancel: false,
                },
            ),
            (
                &waiting,
                Some("refused"),
                NotStarted::Withdrawn {
                    note: true,
                    then_cancel: false,
                },
            ),
            (
                &waiting,
                Some("down"),
                NotStarted::Withdrawn {
                    note: false,
                    then_cancel: false,
                },
            ),
            (
                &cancelled,
                Some("down"),
                NotStarted::Withdrawn {
                    note: false,
                    then_cancel: true,
                },
            ),
        ];
        for (job, last, want) in table {
            assert_eq!(
                job.not_started("down", false, last, &p, at(0), 0.5),
                want,
                "{job:?}, {last:?}"
            );
        }
    }

    #[test]
    fn a_refused_attempt_is_spent_then_retried_while_attempts_remain() {
        let message = |n| format!("attempt {n} of 2: Spark refused the submission: bad jar");
        let first = job(JobStatus::Queued, 1, false, None);
        let last = job(JobStatus::Retrying, 2, false, None);
        let cancelled = Attempts {
            cancel_requested: true,
            ..first.clone()
        };
        let p = policy(2);
        assert_eq!(
            first.not_started("bad jar", true, None, &p, at(0), 1.0),
            NotStarted::Retry {
                at: at(10),
                message: message(1)
            }
        );
        assert_eq!(
            last.not_started("bad jar", true, None, &p, at(0), 1.0),
            NotStarted::Fail {
                message: message(2)
            }
        );
        assert_eq!(
            cancelled.not_started("bad jar", true, None, &p, at(0), 1.0),
            NotStarted::Fail {
                message: message(1)
            }
        );
    }

    #[test]
    fn an_ending_is_retried_by_the_policy_unless_the_job_was_cancelled() {
        let running = job(JobStatus::Running, 1, true, None);
        let cancelled = Attempts {
            cancel_requested: true,
            ..running.clone()
        };
        let p = policy(3);
        assert_eq!(
            running.next_after(&p, Ending::Failed, at(0), 1.0),
            Some(at(10))
        );
        assert_eq!(running.next_after(&p, Ending::Succeeded, at(0), 1.0), None);
        assert_eq!(running.next_after(&p, Ending::LostWorker, at(0), 1.0), None);
        assert_eq!(cancelled.next_after(&p, Ending::Failed, at(0), 1.0), None);
    }

    #[test]
    fn between_attempts_the_job_has_nothing_to_poll_and_keeps_its_old_completion_time() {
        let before = ExecutionState {
            status: JobStatus::Running,
            ..ExecutionState::queued(at(0))
        };
        let mut ended = ExecutionState {
            status: JobStatus::Failed,
            completed_at: Some(at(50)),
            consecutive_poll_failures: 2,
            failing_since: Some(at(40)),
            last_poll_error: Some("timeout".into()),
            ..before.clone()
        };
        ended.between_attempts(&before);
        assert_eq!(ended.status, JobStatus::Retrying);
        assert_eq!(ended.completed_at, None);
        assert_eq!(
            (ended.consecutive_poll_failures, ended.failing_since),
            (0, None)
        );
        assert_eq!(ended.last_poll_error, None);
    }

    #[test]
    fn a_new_driver_clears_what_the_last_attempt_left() {
        let mut state = ExecutionState {
            status: JobStatus::Retrying,
            started_at: Some(at(5)),
            error_message: Some("lost worker".into()),
            raw_state: Some("ERROR".into()),
            ..ExecutionState::queued(at(0))
        };
        state.driver_accepted(at(100));
        assert_eq!(state.status, JobStatus::Submitting);
        assert_eq!(
            (state.submitted_at, state.started_at),
            (Some(at(100)), None)
        );
        assert_eq!((state.error_message, state.raw_state), (None, None));
    }
}
