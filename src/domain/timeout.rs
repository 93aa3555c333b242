//! When jobwarden itself ends a job: Spark stopped confirming it, it never left the queue, or
//! it ran past its allowed runtime. Each verdict carries the reason written to the row.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::execution::{Applied, Effect, ExecutionState, HistoryEntry};
use super::policy::TimeoutPolicy;
use super::status::{JobStatus, Lifecycle};

fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or(Duration::ZERO)
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Why `state` must end now, if it must. Its creation time stands in for times never recorded.
pub fn timeout_reason(
    state: &ExecutionState,
    now: DateTime<Utc>,
    policy: &TimeoutPolicy,
) -> Option<String> {
    let created_at = state.created_at;
    if state.status.is_terminal() {
        return None;
    }
    // From the first poll of this run whose answer had nothing usable about the job: the last
    // good answer came at most one poll earlier, so the rule never fires early, and it needs no
    // write per good answer. A backend that is away starts no such run.
    if let Some(since) = state
        .failing_since
        .filter(|_| state.consecutive_poll_failures > 0)
    {
        if elapsed(since, now) >= policy.stuck_timeout {
            return Some(format!(
                "timed out: Spark has not confirmed this job for {} (stuck_timeout {}; polls failing since {}, {} failed polls; last confirmed {})",
                human(elapsed(since, now)),
                human(policy.stuck_timeout),
                stamp(since),
                state.consecutive_poll_failures,
                state.last_confirmed_at.map(stamp).unwrap_or_else(|| "never".into()),
            ));
        }
    }
    if matches!(state.status, JobStatus::Queued | JobStatus::Submitting) {
        let since = state.status_changed_at.unwrap_or(created_at);
        if elapsed(since, now) >= policy.queued_timeout {
            return Some(format!(
                "timed out: {} for {} since {} (queued_timeout {})",
                state.status,
                human(elapsed(since, now)),
                stamp(since),
                human(policy.queued_timeout)
            ));
        }
    }
    if let (JobStatus::Running, Some(limit), Some(started)) =
        (state.status, policy.max_runtime, state.started_at)
    {
        if elapsed(started, now) >= limit {
            return Some(format!(
                "timed out: running for {} since {} (max_runtime {})",
                human(elapsed(started, now)),
                stamp(started),
                human(limit)
            ));
        }
    }
    None
}

impl ExecutionState {
    /// Fails the job if a timeout rule says it must end at `now`, with the rule as the reason.
    pub fn time_out(&mut self, now: DateTime<Utc>, policy: &TimeoutPolicy) -> Effect {
        let Some(reason) = timeout_reason(self, now, policy) else {
            return Effect {
                applied: Applied::Refreshed,
                history: None,
            };
        };
        match self.force_finish(JobStatus::Failed, now, &reason) {
            Ok((from, to)) => Effect {
                applied: Applied::Transitioned { from, to },
                history: Some(HistoryEntry {
                    from: Some(from),
                    to,
                    detail: Some(reason),
                    at: now,
                }),
            },
            Err(refusal) => Effect {
                applied: Applied::Refused(refusal),
                history: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Observation, PollPolicy};
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    const POLL: PollPolicy = PollPolicy {
        interval: Duration::from_secs(15),
        max_backoff: Duration::from_secs(300),
    };

    const POLICY: TimeoutPolicy = TimeoutPolicy {
        stuck_timeout: Duration::from_secs(300),
        queued_timeout: Duration::from_secs(3600),
        max_runtime: None,
    };

    fn running_since(at: i64) -> ExecutionState {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&Observation {
            status: Some(JobStatus::Running),
            raw_state: Some("RUNNING".into()),
            progress: None,
            message: None,
            relaunching: false,
            successors: Vec::new(),
            at: t(at),
        });
        job
    }

    #[test]
    fn a_backend_away_for_longer_than_the_stuck_timeout_fails_nothing() {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&Observation {
            status: Some(JobStatus::Running),
            raw_state: Some("RUNNING".into()),
            progress: None,
            message: None,
            relaunching: false,
            successors: Vec::new(),
            at: t(1),
        });
        for i in 0..100 {
            job.backend_away(t(10 + i * 15), "cannot reach Spark", &POLL);
        }
        assert_eq!(timeout_reason(&job, t(3600), &POLICY), None);
        assert_eq!(job.time_out(t(3600), &POLICY).applied, Applied::Refreshed);
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.last_poll_error.as_deref(), Some("cannot reach Spark"));
    }

    #[test]
    fn an_outage_restarts_the_stuck_clock_of_an_unknown_job() {
        let mut job = ExecutionState::queued(t(0));
        job.poll_failed(t(10), "Spark does not know submission driver-1", &POLL);
        job.backend_away(t(200), "cannot reach Spark", &POLL);
        job.poll_failed(t(400), "Spark does not know submission driver-1", &POLL);
        assert_eq!(
            timeout_reason(&job, t(650), &POLICY),
            None,
            "250s since the outage"
        );
        assert!(
            timeout_reason(&job, t(700), &POLICY).is_some(),
            "300s since"
        );
    }

    #[test]
    fn job_spark_keeps_confirming_is_never_timed_out() {
        let mut job = running_since(0);
        for minute in 1..=600 {
            job.observe(&Observation {
                status: Some(JobStatus::Running),
                raw_state: Some("RUNNING".into()),
                progress: None,
                message: None,
                relaunching: false,
                successors: Vec::new(),
                at: t(minute * 60),
            });
        }
        assert_eq!(timeout_reason(&job, t(600 * 60 + 30), &POLICY), None);
    }

    #[test]
    fn unconfirmed_job_times_out_after_stuck_timeout_with_the_reason() {
        let mut job = running_since(0);
        job.poll_failed(t(100), "refused", &POLL);
        // Counted from the first failed poll, never from an older answer.
        assert_eq!(timeout_reason(&job, t(399), &POLICY), None);
        let reason = timeout_reason(&job, t(401), &POLICY).unwrap();
        assert!(reason.contains("has not confirmed"), "{reason}");
        assert!(reason.contains("stuck_timeout 5m"), "{reason}");
        assert!(reason.contains("1 failed polls"), "{reason}");
    }

    #[test]
    fn jobwardens_own_downtime_does_not_time_jobs_out() {
        // No failed poll: nobody asked Spark, so nothing says the job is stuck.
        let job = running_since(0);
        assert_eq!(timeout_reason(&job, t(10_000), &POLICY), None);
    }

    #[test]
    fn queued_too_long_times_out() {
        let job = ExecutionState::queued(t(0));
        assert_eq!(timeout_reason(&job, t(3599), &POLICY), None);
        let reason = timeout_reason(&job, t(3600), &POLICY).unwrap();
        assert!(reason.contains("Queued for 1h"), "{reason}");
    }

    #[test]
    fn max_runtime_ends_long_runs_only_when_set() {
        let job = running_since(0);
        assert_eq!(timeout_reason(&job, t(90_000), &POLICY), None);
        let strict = TimeoutPolicy {
            max_runtime: Some(Duration::from_secs(3600)),
            ..POLICY
        };
        let reason = timeout_reason(&job, t(3600), &strict).unwrap();
        assert!(reason.contains("max_runtime 1h"), "{reason}");
    }

    #[test]
    fn finished_jobs_never_time_out() {
        let mut job = running_since(0);
        job.force_finish(JobStatus::Succeeded, t(1), "done")
            .unwrap();
        job.poll_failed(t(2), "refused", &POLL);
        assert_eq!(timeout_reason(&job, t(1_000_000), &POLICY), None);
    }

    #[test]
    fn time_out_fails_with_the_rule_as_reason_and_history() {
        let policy = TimeoutPolicy {
            stuck_timeout: Duration::from_secs(300),
            queued_timeout: Duration::from_secs(60),
            max_runtime: None,
        };
        let mut job = ExecutionState::queued(t(0));
        assert_eq!(job.time_out(t(59), &policy).history, None);
        let effect = job.time_out(t(61), &policy);
        assert_eq!(job.status, JobStatus::Failed);
        assert!(effect
            .history
            .unwrap()
            .detail
            .unwrap()
            .contains("queued_timeout"));
        assert!(job.error_message.unwrap().contains("queued_timeout"));
    }
}
