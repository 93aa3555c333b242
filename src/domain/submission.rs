//! What jobwarden submits on a team's behalf and how it retries: the submission spec, the
//! retry policy, which endings are worth another attempt, and the mark that lets an attempt's
//! driver be recognised on the cluster after a crash.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The Spark property every submitted driver carries: `<execution id>:<attempt>:<nonce>`. Spark
/// passes it to the driver's JVM as `-Dspark.jobwarden.attempt=…`, and the worker writes that
/// launch command at the top of the driver's stderr, where it can be read back.
pub const MARK_PROPERTY: &str = "spark.jobwarden.attempt";

/// One Spark application to submit, as given through the API, a spec file or the row's
/// `submit_spec` column (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitSpec {
    /// The jar (or file) Spark runs, as the workers can reach it: `file:/…`, `hdfs://…`, `s3a://…`.
    pub app_resource: String,
    pub main_class: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Spark properties (`spark.driver.memory = "2g"`…); `spark.app.name` defaults to the job
    /// name, `spark.master` and `spark.submit.deployMode` are jobwarden's to set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spark_properties: BTreeMap<String, String>,
    /// Environment variables of the driver.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// This job's retry policy; unset fields take `[submit]`'s.
    #[serde(default, skip_serializing_if = "RetryOverrides::is_empty")]
    pub retry: RetryOverrides,
}

/// Per-job changes to the configured retry policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "30s")]
    pub initial_backoff: Option<Duration>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "10m")]
    pub max_backoff: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<Ending>>,
}

impl RetryOverrides {
    pub fn is_empty(&self) -> bool {
        self == &RetryOverrides::default()
    }
}

/// Why a spec cannot be submitted; each names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("submit.{0} must not be empty")]
    Empty(&'static str),
    #[error("submit.spark_properties.{0} is set by jobwarden and cannot be given")]
    Reserved(String),
    #[error("submit.retry.max_attempts must be at least 1")]
    NoAttempts,
    #[error("submit: {0}")]
    Unreadable(String),
}

/// Properties a spec may not set: they would send the driver elsewhere or hide its mark.
const RESERVED: [&str; 3] = ["spark.master", "spark.submit.deployMode", MARK_PROPERTY];

impl SubmitSpec {
    /// Reads a spec stored as JSON (the `submit_spec` column).
    pub fn from_json(text: &str) -> Result<SubmitSpec, SpecError> {
        let spec: SubmitSpec =
            serde_json::from_str(text).map_err(|e| SpecError::Unreadable(e.to_string()))?;
        spec.check()?;
        Ok(spec)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn check(&self) -> Result<(), SpecError> {
        if self.app_resource.trim().is_empty() {
            return Err(SpecError::Empty("app_resource"));
        }
        if self.main_class.trim().is_empty() {
            return Err(SpecError::Empty("main_class"));
        }
        if let Some(key) = self
            .spark_properties
            .keys()
            .find(|k| RESERVED.contains(&k.as_str()))
        {
            return Err(SpecError::Reserved(key.clone()));
        }
        if self.retry.max_attempts == Some(0) {
            return Err(SpecError::NoAttempts);
        }
        Ok(())
    }
}

/// How one attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The driver exited with an error (Spark's FAILED).
    Failed,
    /// Spark could not launch the driver (ERROR), or rejected the submission.
    Error,
    /// The driver's worker was lost and the driver was not relaunched.
    LostWorker,
    /// jobwarden's own timeouts gave up on it.
    TimedOut,
    /// Killed: by an operator's cancel, never retried.
    Cancelled,
    Succeeded,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Failed => "failed",
            Ending::Error => "error",
            Ending::LostWorker => "lost_worker",
            Ending::TimedOut => "timed_out",
            Ending::Cancelled => "cancelled",
            Ending::Succeeded => "succeeded",
        }
    }

    /// What an attempt's end was, from the row's status, Spark's word for it and whether
    /// Spark gave a reason.
    pub fn classify(
        status: super::JobStatus,
        raw_state: Option<&str>,
        spark_gave_reason: bool,
        timed_out: bool,
    ) -> Ending {
        use super::JobStatus;
        match status {
            JobStatus::Succeeded => Ending::Succeeded,
            JobStatus::Cancelled => Ending::Cancelled,
            _ if timed_out => Ending::TimedOut,
            _ => match raw_state {
                // A launch failure carries the exception; a driver whose worker was lost (and
                // that was not supervised) ends ERROR with nothing said.
                Some("ERROR") if spark_gave_reason => Ending::Error,
                Some("ERROR") | Some("RELAUNCHING") => Ending::LostWorker,
                _ => Ending::Failed,
            },
        }
    }
}

/// When and how often a job is submitted again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub retry_on: Vec<Ending>,
}

impl RetryPolicy {
    /// The configured policy with the job's own overrides on top.
    pub fn with(&self, overrides: &RetryOverrides) -> RetryPolicy {
        RetryPolicy {
            max_attempts: overrides.max_attempts.unwrap_or(self.max_attempts),
            initial_backoff: overrides.initial_backoff.unwrap_or(self.initial_backoff),
            max_backoff: overrides.max_backoff.unwrap_or(self.max_backoff),
            retry_on: overrides
                .retry_on
                .clone()
                .unwrap_or_else(|| self.retry_on.clone()),
        }
    }

    /// When attempt `ended + 1` is due after attempt `ended` ended as `ending` at `at`, or
    /// `None` when the job ends here. `jitter` in [0, 1) spreads retries of jobs that failed
    /// together (a cluster-wide failure) over the upper half of the delay.
    pub fn next_attempt(
        &self,
        ended: u32,
        ending: Ending,
        at: DateTime<Utc>,
        jitter: f64,
    ) -> Option<DateTime<Utc>> {
        if matches!(ending, Ending::Succeeded | Ending::Cancelled)
            || !self.retry_on.contains(&ending)
            || ended >= self.max_attempts
        {
            return None;
        }
        let doublings = ended.saturating_sub(1).min(20);
        let full = self
            .initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff.max(self.initial_backoff));
        let delay = full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        Some(at + chrono::Duration::from_std(delay).unwrap_or_default())
    }
}

/// The mark of one attempt's request: unique per request, so a request proven never to have
/// started a driver and sent again is told apart from the first.
pub fn attempt_mark(execution_id: &str, attempt: u32, nonce: &str) -> String {
    format!("{execution_id}:{attempt}:{nonce}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
            retry_on: vec![
                Ending::Failed,
                Ending::Error,
                Ending::LostWorker,
                Ending::TimedOut,
            ],
        }
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
    }

    #[test]
    fn a_failed_attempt_is_retried_after_the_backoff_until_attempts_run_out() {
        let p = policy();
        let first = p.next_attempt(1, Ending::Failed, at(), 1.0).unwrap();
        assert_eq!((first - at()).num_seconds(), 10);
        let second = p.next_attempt(2, Ending::Failed, at(), 1.0).unwrap();
        assert_eq!((second - at()).num_seconds(), 20);
        assert_eq!(p.next_attempt(3, Ending::Failed, at(), 1.0), None);
    }

    #[test]
    fn jitter_keeps_the_delay_within_the_upper_half() {
        let p = policy();
        let low = p.next_attempt(1, Ending::Error, at(), 0.0).unwrap();
        assert_eq!((low - at()).num_seconds(), 5);
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            ..policy()
        };
        let delays: Vec<i64> = (1..=6)
            .map(|n| (p.next_attempt(n, Ending::Failed, at(), 1.0).unwrap() - at()).num_seconds())
            .collect();
        assert_eq!(delays, vec![10, 20, 40, 60, 60, 60]);
    }

    #[test]
    fn a_cancel_and_a_success_are_never_retried() {
        let p = RetryPolicy {
            retry_on: vec![Ending::Cancelled, Ending::Succeeded, Ending::Failed],
            ..policy()
        };
        assert_eq!(p.next_attempt(1, Ending::Cancelled, at(), 0.5), None);
        assert_eq!(p.next_attempt(1, Ending::Succeeded, at(), 0.5), None);
    }

    #[test]
    fn an_ending_left_out_of_retry_on_ends_the_job() {
        let p = RetryPolicy {
            retry_on: vec![Ending::Error],
            ..policy()
        };
        assert_eq!(p.next_attempt(1, Ending::Failed, at(), 0.5), None);
        assert!(p.next_attempt(1, Ending::Error, at(), 0.5).is_some());
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let p = policy().with(&RetryOverrides {
            max_attempts: Some(5),
            ..Default::default()
        });
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.initial_backoff, Duration::from_secs(10));
    }

    #[test]
    fn a_spec_reads_from_json_and_refuses_what_jobwarden_sets() {
        let spec = SubmitSpec::from_json(
            r#"{"app_resource":"file:/a.jar","main_class":"Main","args":["x"],"retry":{"max_attempts":2,"initial_backoff":"5s"}}"#,
        )
        .unwrap();
        assert_eq!(spec.retry.initial_backoff, Some(Duration::from_secs(5)));
        assert_eq!(SubmitSpec::from_json(&spec.to_json()).unwrap(), spec);
        let reserved = SubmitSpec::from_json(
            r#"{"app_resource":"file:/a.jar","main_class":"Main","spark_properties":{"spark.master":"local"}}"#,
        )
        .unwrap_err();
        assert!(reserved.to_string().contains("spark.master"), "{reserved}");
        let empty =
            SubmitSpec::from_json(r#"{"app_resource":" ","main_class":"Main"}"#).unwrap_err();
        assert_eq!(empty, SpecError::Empty("app_resource"));
    }

    #[test]
    fn endings_are_classified_from_status_and_spark_state() {
        use crate::domain::JobStatus;
        assert_eq!(
            Ending::classify(JobStatus::Failed, Some("FAILED"), false, false),
            Ending::Failed
        );
        assert_eq!(
            Ending::classify(JobStatus::Failed, Some("ERROR"), true, false),
            Ending::Error
        );
        assert_eq!(
            Ending::classify(JobStatus::Failed, Some("ERROR"), false, false),
            Ending::LostWorker
        );
        assert_eq!(
            Ending::classify(JobStatus::Failed, Some("RUNNING"), false, true),
            Ending::TimedOut
        );
        assert_eq!(
            Ending::classify(JobStatus::Cancelled, Some("KILLED"), false, false),
            Ending::Cancelled
        );
    }
}
