//! What the job API answers: its own shapes, so the tables can change without changing the
//! API (and internal columns such as leases stay internal).

use chrono::{DateTime, Utc};
use entity::{
    job_status_history as history, spark_job_attempts as attempts,
    spark_job_executions as executions, transformation_job_queue as queue,
};
use serde::Serialize;

/// A Spark execution as the API shows it.
#[derive(Debug, Serialize)]
pub struct ExecutionView {
    pub execution_id: String,
    pub job_name: Option<String>,
    pub submission_id: Option<String>,
    /// The Spark cluster; null is the default one.
    pub cluster: Option<String>,
    pub status: String,
    pub spark_state: Option<String>,
    pub progress: i16,
    pub submitted_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub last_polled_at: Option<DateTime<Utc>>,
    pub last_confirmed_at: Option<DateTime<Utc>>,
    pub next_poll_at: Option<DateTime<Utc>>,
    pub consecutive_poll_failures: i32,
    pub last_poll_error: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The current (or last) attempt of a job jobwarden submits; 0 before the first.
    pub attempt: i32,
    /// When the next attempt is due (Queued or Retrying jobs jobwarden submits).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When someone asked to cancel it (the job ends once Spark reports the driver KILLED).
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// What jobwarden submits for it, as a JSON object; null for jobs submitted by others.
    /// Text that is not JSON (a row written by hand) is shown as a string, as stored.
    pub submit: Option<serde_json::Value>,
}

impl From<executions::Model> for ExecutionView {
    fn from(row: executions::Model) -> Self {
        ExecutionView {
            execution_id: row.execution_id,
            job_name: row.job_name,
            submission_id: row.submission_id,
            cluster: row.cluster,
            status: row.status,
            spark_state: row.spark_state,
            progress: row.progress,
            submitted_at: row.submitted_at,
            started_at: row.started_at,
            completed_at: row.completed_at,
            status_changed_at: row.status_changed_at,
            error_message: row.error_message,
            last_polled_at: row.last_polled_at,
            last_confirmed_at: row.last_confirmed_at,
            next_poll_at: row.next_poll_at,
            consecutive_poll_failures: row.consecutive_poll_failures,
            last_poll_error: row.last_poll_error,
            failing_since: row.failing_since,
            created_at: row.created_at,
            updated_at: row.updated_at,
            attempt: row.attempt,
            next_attempt_at: row.next_attempt_at,
            cancel_requested_at: row.cancel_requested_at,
            submit: row
                .submit_spec
                .map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))),
        }
    }
}

/// A transformation queue job as the API shows it.
#[derive(Debug, Serialize)]
pub struct QueueJobView {
    pub job_id: String,
    pub status: String,
    pub error_message: Option<String>,
    pub generated_fields: Option<serde_json::Value>,
    pub completed_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub last_event_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<queue::Model> for QueueJobView {
    fn from(row: queue::Model) -> Self {
        QueueJobView {
            job_id: row.job_id,
            status: row.status,
            error_message: row.error_message,
            generated_fields: row.generated_fields,
            completed_at: row.completed_at,
            last_event_at: row.last_event_at,
            last_event_id: row.last_event_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// One line of a job's history.
#[derive(Debug, Serialize)]
pub struct HistoryView {
    pub from_status: Option<String>,
    pub to_status: String,
    pub source: String,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<history::Model> for HistoryView {
    fn from(row: history::Model) -> Self {
        HistoryView {
            from_status: row.from_status,
            to_status: row.to_status,
            source: row.source,
            detail: row.detail,
            at: row.at,
        }
    }
}

/// A job with its history, as `GET …/{id}` answers.
#[derive(Debug, Serialize)]
pub struct WithHistory<J> {
    pub job: J,
    pub history: Vec<HistoryView>,
}

impl<J> WithHistory<J> {
    pub fn new<R: Into<J>>(job: R, history: Vec<history::Model>) -> Self {
        WithHistory {
            job: job.into(),
            history: history.into_iter().map(HistoryView::from).collect(),
        }
    }
}

/// One submission jobwarden made (or was about to make) of a job.
#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub attempt: i32,
    pub submission_id: Option<String>,
    /// `requested` (recorded, the request maybe sent), `submitted` (driver known), `ended`.
    pub state: String,
    pub requested_at: DateTime<Utc>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// succeeded, failed, error, lost_worker, timed_out, cancelled, rejected.
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub cluster: Option<String>,
    /// The `spark.jobwarden.attempt` value its driver carries.
    pub mark: String,
}

impl From<attempts::Model> for AttemptView {
    fn from(row: attempts::Model) -> Self {
        AttemptView {
            attempt: row.attempt,
            submission_id: row.submission_id,
            state: row.state,
            requested_at: row.requested_at,
            submitted_at: row.submitted_at,
            started_at: row.started_at,
            ended_at: row.ended_at,
            outcome: row.outcome,
            reason: row.reason,
            cluster: row.cluster,
            mark: row.mark,
        }
    }
}

/// A Spark execution with its history and its attempts (oldest first), as
/// `GET /api/v1/jobs/{id}` answers.
#[derive(Debug, Serialize)]
pub struct ExecutionDetail {
    pub job: ExecutionView,
    pub history: Vec<HistoryView>,
    pub attempts: Vec<AttemptView>,
}

impl ExecutionDetail {
    pub fn new(
        job: executions::Model,
        history: Vec<history::Model>,
        attempts: Vec<attempts::Model>,
    ) -> Self {
        ExecutionDetail {
            job: job.into(),
            history: history.into_iter().map(HistoryView::from).collect(),
            attempts: attempts.into_iter().map(AttemptView::from).collect(),
        }
    }
}

/// A page of executions and the cursor for the next one.
#[derive(Debug, Serialize)]
pub struct ExecutionPage {
    pub jobs: Vec<ExecutionView>,
    pub next_cursor: Option<String>,
}
