//! What the job API answers: its own shapes, so the tables can change without changing the
//! API (and internal columns such as leases stay internal).

use chrono::{DateTime, Utc};
use entity::{
    job_status_history as history, jobwarden_outbox as outbox, spark_job_attempts as attempts,
    spark_job_dependencies as dependencies, spark_job_executions as executions,
    transformation_job_queue as queue,
};
use serde::Serialize;
use utoipa::ToSchema;

/// A Spark execution as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionView {
    pub execution_id: String,
    pub job_name: Option<String>,
    pub submission_id: Option<String>,
    /// The Spark cluster; null is the default one.
    pub cluster: Option<String>,
    /// Queued, Submitted, Running, Retrying, Succeeded, Failed, Cancelled or TimedOut
    /// (the README's "Statuses").
    #[schema(example = "Running")]
    pub status: String,
    /// What Spark last said of the driver (SUBMITTED, RUNNING, FINISHED, FAILED, KILLED…).
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
    /// Higher leaves the submission queue first (jobs jobwarden submits).
    pub priority: i32,
    /// The clusters it may be placed on, when the submission named several; `cluster` is where
    /// it was placed.
    pub allowed_clusters: Option<Vec<String>>,
    /// What jobwarden submits for it, as a JSON object; null for jobs submitted by others.
    /// Text that is not JSON (a row written by hand) is shown as a string, as stored.
    #[schema(value_type = Option<Object>)]
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
            priority: row.priority,
            allowed_clusters: row.allowed_clusters.as_deref().map(|text| {
                text.split(',')
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            submit: row
                .submit_spec
                .map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))),
        }
    }
}

/// A transformation queue job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueJobView {
    pub job_id: String,
    pub status: String,
    pub error_message: Option<String>,
    /// What the enrichment produced, as its completion event carried it.
    #[schema(value_type = Option<Object>)]
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
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionDetail {
    pub job: ExecutionView,
    pub history: Vec<HistoryView>,
    pub attempts: Vec<AttemptView>,
    /// The jobs it waits (or waited) for; empty for a job submitted without `after`.
    pub after: Vec<ParentView>,
}

/// One job another waits for.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParentView {
    pub execution_id: String,
    /// `success` (`after`: it must succeed) or `any` (`after_any`: it must end).
    pub mode: String,
    /// Its status now; null once its row is gone.
    pub status: Option<String>,
}

impl ExecutionDetail {
    pub fn new(
        job: executions::Model,
        history: Vec<history::Model>,
        attempts: Vec<attempts::Model>,
        parents: Vec<(dependencies::Model, Option<String>)>,
    ) -> Self {
        ExecutionDetail {
            job: job.into(),
            history: history.into_iter().map(HistoryView::from).collect(),
            attempts: attempts.into_iter().map(AttemptView::from).collect(),
            after: parents
                .into_iter()
                .map(|(edge, status)| ParentView {
                    execution_id: edge.parent_id,
                    mode: edge.mode,
                    status,
                })
                .collect(),
        }
    }
}

/// A page of executions and the cursor for the next one.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionPage {
    pub jobs: Vec<ExecutionView>,
    pub next_cursor: Option<String>,
}

/// The job after an action, read back once the action is durable; left out when that read
/// failed (the action stands either way).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct AfterAction {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<ExecutionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
}

impl From<Option<ExecutionDetail>> for AfterAction {
    fn from(detail: Option<ExecutionDetail>) -> Self {
        match detail {
            Some(d) => AfterAction {
                job: Some(d.job),
                history: Some(d.history),
                attempts: Some(d.attempts),
            },
            None => AfterAction::default(),
        }
    }
}

/// What `POST /api/v1/jobs` answers: the execution as now tracked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tracked {
    pub execution_id: String,
    #[serde(flatten)]
    pub after: AfterAction,
}

/// What `POST /api/v1/jobs/{id}/cancel` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelTaken {
    /// True when no driver ran for it and the job ended Cancelled at once; false when its
    /// driver is being killed (the job ends once Spark reports it KILLED).
    pub ended: bool,
    /// The driver being killed, if any.
    pub submission_id: Option<String>,
    #[serde(flatten)]
    pub after: AfterAction,
}

/// What `POST /api/v1/jobs/{id}/retry` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetryTaken {
    /// The number the new attempt will carry.
    pub attempt: u32,
    #[serde(flatten)]
    pub after: AfterAction,
}

/// Every refusal and failure: a message that says what to do.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    #[schema(example = "limit must be between 1 and 1000")]
    pub error: String,
}

/// One outbox message, as `GET /api/v1/notifications` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxMessageView {
    pub message_id: String,
    pub channel: String,
    /// What the message tells (the README's "Notifications" lists the events).
    pub event: String,
    /// The kind of job it is about, when it is about one job.
    pub job_kind: Option<String>,
    pub job_id: Option<String>,
    /// pending, delivered or failed.
    pub state: String,
    pub attempts: i32,
    /// The receiver's last answer, when a delivery failed.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Messages of one group (a cluster going away) are delivered as one.
    pub group_id: Option<String>,
    /// The notification as delivered (null if the stored payload does not read as JSON).
    #[schema(value_type = Option<Object>)]
    pub notification: serde_json::Value,
}

impl From<outbox::Model> for OutboxMessageView {
    fn from(m: outbox::Model) -> Self {
        OutboxMessageView {
            notification: serde_json::from_str(&m.payload).unwrap_or_default(),
            message_id: m.message_id,
            channel: m.channel,
            event: m.event,
            job_kind: m.job_kind,
            job_id: m.job_id,
            state: m.state,
            attempts: m.attempts,
            last_error: m.last_error,
            created_at: m.created_at,
            next_attempt_at: m.next_attempt_at,
            finished_at: m.finished_at,
            group_id: m.group_id,
        }
    }
}

/// The outbox: how many messages are in each state, and some of them, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxPage {
    pub counts: std::collections::HashMap<String, i64>,
    pub messages: Vec<OutboxMessageView>,
}

/// What `POST /api/v1/notifications/resend` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resent {
    /// Failed messages put back in the outbox.
    pub resent: u64,
}

/// What `/healthz` answers while the process serves.
#[derive(Debug, Serialize, ToSchema)]
pub struct Alive {
    #[schema(example = "ok")]
    pub status: String,
}

/// This instance's share of the work among those sharing the database.
#[derive(Debug, Serialize, ToSchema)]
pub struct Share {
    /// Buckets of the 64 this instance holds leases on.
    pub buckets: f64,
    /// Whether this instance runs the sweeps, retention and notification delivery.
    pub leader: bool,
    pub live_instances: f64,
}

/// What `/readyz` answers: 200 when `ready`, 503 otherwise, with the parts that are not.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub instance: String,
    pub share: Share,
    /// Each part (database, job_store, scheduler, kafka_listener, share, notifications) with
    /// "ok" or what is wrong.
    #[schema(value_type = std::collections::HashMap<String, String>)]
    pub checks: serde_json::Map<String, serde_json::Value>,
    /// The parts that keep this instance from being ready.
    pub not_ready: Vec<String>,
}
