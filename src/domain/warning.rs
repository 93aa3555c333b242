//! Early warnings, judged from a job's state alone: a job that will be failed as stuck unless
//! Spark confirms it soon, and a job running far longer than its past successes did. Each
//! warning names the run it is about, so it is sent once per run however often it is asked.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::execution::ExecutionState;
use super::status::{JobStatus, Lifecycle};

/// A warning that holds: what makes it one of a kind, and the words for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The same job in the same run gives the same key, so a warning goes out once.
    pub dedup_key: String,
    pub reason: String,
}

/// Unconfirmed for half of `stuck_timeout`: the stuck rule fails it at the full timeout.
pub fn stuck_soon(
    execution_id: &str,
    state: &ExecutionState,
    stuck_timeout: Duration,
    now: DateTime<Utc>,
) -> Option<Held> {
    if state.status.is_terminal() {
        return None;
    }
    let since = state.failing_since?;
    let stuck = chrono::Duration::from_std(stuck_timeout).ok()?;
    (now - since >= stuck / 2).then(|| Held {
        dedup_key: format!("stuck_soon:{execution_id}:{}", since.timestamp_millis()),
        reason: format!(
            "Spark has not confirmed this job since {} ({}); it will be failed at {} unless Spark confirms it",
            since.format("%Y-%m-%d %H:%M:%SZ"),
            state.last_poll_error.as_deref().unwrap_or("no usable answer"),
            (since + stuck).format("%Y-%m-%d %H:%M:%SZ"),
        ),
    })
}

/// Running for `factor` × `usual` or longer, `usual` being the 95th percentile of the last
/// `runs` successful runs.
pub fn running_long(
    execution_id: &str,
    state: &ExecutionState,
    usual: Duration,
    runs: usize,
    factor: f64,
    now: DateTime<Utc>,
) -> Option<Held> {
    if state.status != JobStatus::Running {
        return None;
    }
    let started = state.started_at?;
    let ran = (now - started).to_std().ok()?;
    (ran >= usual.mul_f64(factor)).then(|| Held {
        dedup_key: format!("running_long:{execution_id}:{}", started.timestamp_millis()),
        reason: format!(
            "running for {}; its last {runs} successful runs took at most {} (95th percentile), and it is past {factor}× that",
            humantime::format_duration(Duration::from_secs(ran.as_secs())),
            humantime::format_duration(Duration::from_secs(usual.as_secs())),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn state(
        status: JobStatus,
        failing_since: Option<i64>,
        started: Option<i64>,
    ) -> ExecutionState {
        ExecutionState {
            status,
            failing_since: failing_since.map(at),
            started_at: started.map(at),
            last_poll_error: Some("connection refused".into()),
            ..ExecutionState::queued(at(0))
        }
    }

    #[test]
    fn stuck_soon_holds_from_half_the_stuck_timeout() {
        let timeout = Duration::from_secs(600);
        // (status, failing since, now, holds)
        let table = [
            (JobStatus::Running, None, 1_000, false),
            (JobStatus::Running, Some(100), 399, false),
            (JobStatus::Running, Some(100), 400, true),
            (JobStatus::Submitting, Some(100), 5_000, true),
            (JobStatus::Failed, Some(100), 5_000, false),
            (JobStatus::Succeeded, Some(100), 5_000, false),
        ];
        for (status, since, now, holds) in table {
            let got = stuck_soon("e1", &state(status, since, None), timeout, at(now));
            assert_eq!(
                got.is_some(),
                holds,
                "{status} failing since {since:?}, now {now}"
            );
        }
    }

    #[test]
    fn stuck_soon_is_one_warning_per_run_of_failures() {
        let timeout = Duration::from_secs(600);
        let first = stuck_soon(
            "e1",
            &state(JobStatus::Running, Some(100), None),
            timeout,
            at(400),
        );
        let later = stuck_soon(
            "e1",
            &state(JobStatus::Running, Some(100), None),
            timeout,
            at(500),
        );
        let next_run = stuck_soon(
            "e1",
            &state(JobStatus::Running, Some(900), None),
            timeout,
            at(1_300),
        );
        assert_eq!(first.as_ref().unwrap().dedup_key, later.unwrap().dedup_key);
        assert_ne!(
            first.as_ref().unwrap().dedup_key,
            next_run.unwrap().dedup_key
        );
        let reason = first.unwrap().reason;
        assert!(reason.contains("connection refused"), "{reason}");
    }

    #[test]
    fn running_long_holds_only_for_a_running_job_past_its_factor() {
        let usual = Duration::from_secs(100);
        // (status, started, now, holds)
        let table = [
            (JobStatus::Running, Some(0), 199, false),
            (JobStatus::Running, Some(0), 200, true),
            (JobStatus::Running, None, 10_000, false),
            (JobStatus::Submitting, Some(0), 10_000, false),
            (JobStatus::Succeeded, Some(0), 10_000, false),
            // A clock that went back: no warning rather than a negative run time.
            (JobStatus::Running, Some(500), 100, false),
        ];
        for (status, started, now, holds) in table {
            let got = running_long("e1", &state(status, None, started), usual, 20, 2.0, at(now));
            assert_eq!(
                got.is_some(),
                holds,
                "{status} started {started:?}, now {now}"
            );
        }
    }

    #[test]
    fn running_long_says_how_long_against_what() {
        let held = running_long(
            "e1",
            &state(JobStatus::Running, None, Some(0)),
            Duration::from_secs(60),
            20,
            2.0,
            at(150),
        )
        .unwrap();
        assert_eq!(
            held.dedup_key,
            format!("running_long:e1:{}", at(0).timestamp_millis())
        );
        assert!(
            held.reason.contains("running for 2m 30s"),
            "{}",
            held.reason
        );
        assert!(
            held.reason
                .contains("last 20 successful runs took at most 1m"),
            "{}",
            held.reason
        );
    }
}
