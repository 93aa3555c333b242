//! `[submit]`: how jobs jobwarden submits itself are sent to Spark and retried.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::{human, Problems, Validate};
use crate::domain::{Ending, RetryPolicy};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmitSettings {
    /// Attempts a job gets in all, the first included (a job's spec may say otherwise).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each further one, up to `max_backoff`, and
    /// spread over the upper half of that by jitter.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Endings that earn another attempt: failed, error, lost_worker, timed_out. A cancel never does.
    pub retry_on: Vec<Ending>,
    /// How long a submission request whose answer was lost may still start a driver: an
    /// attempt in that state is only declared "never started" once no driver carries its mark
    /// this long after the request. Spark's own bound is `spark.rpc.askTimeout` (120s).
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// Sent as `clientSparkVersion` (Spark requires the field and checks only that it is there).
    pub client_spark_version: String,
    /// How often waiting submissions, retries and cancels are looked for.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// The head start one priority point gives in the submission queue: a job is overtaken
    /// only by jobs that became ready less than (their priority - its priority) × `aging`
    /// after it.
    #[serde(with = "humantime_serde")]
    pub aging: Duration,
}

impl Default for SubmitSettings {
    fn default() -> Self {
        SubmitSettings {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(600),
            retry_on: vec![
                Ending::Failed,
                Ending::Error,
                Ending::LostWorker,
                Ending::TimedOut,
            ],
            settle: Duration::from_secs(120),
            client_spark_version: "3.5.0".into(),
            check_interval: Duration::from_secs(5),
            aging: Duration::from_secs(60),
        }
    }
}

impl SubmitSettings {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            retry_on: self.retry_on.clone(),
        }
    }
}

impl Validate for SubmitSettings {
    fn validate(&self, p: &mut Problems) {
        if self.max_attempts == 0 {
            p.refuse(
                "submit.max_attempts",
                "0",
                "must be at least 1 (1 means no retries)",
            );
        }
        p.positive("submit.initial_backoff", self.initial_backoff);
        p.positive("submit.check_interval", self.check_interval);
        p.positive("submit.aging", self.aging);
        if self.initial_backoff > self.max_backoff {
            p.refuse(
                "submit.initial_backoff",
                format!("{:?}", human(self.initial_backoff)),
                "must not exceed submit.max_backoff",
            );
        }
        if self.retry_on.contains(&Ending::Cancelled) || self.retry_on.contains(&Ending::Succeeded)
        {
            p.refuse(
                "submit.retry_on",
                format!("{:?}", self.retry_on),
                "may list failed, error, lost_worker and timed_out; a cancel or a success is never retried",
            );
        }
        if self.client_spark_version.trim().is_empty() {
            p.refuse(
                "submit.client_spark_version",
                "\"\"",
                "must name a Spark version (Spark requires the field)",
            );
        }
    }
}
