//! `spark_job_executions`: one row per Spark submission jobwarden supervises.

use sea_orm::entity::prelude::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "spark_job_executions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub execution_id: String,
    pub job_name: Option<String>,
    pub submission_id: Option<String>,
    pub status: String,
    pub spark_state: Option<String>,
    pub progress: i16,
    pub submitted_at: Option<DateTimeUtc>,
    pub started_at: Option<DateTimeUtc>,
    pub completed_at: Option<DateTimeUtc>,
    pub last_polled_at: Option<DateTimeUtc>,
    pub last_confirmed_at: Option<DateTimeUtc>,
    pub next_poll_at: Option<DateTimeUtc>,
    pub status_changed_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error_message: Option<String>,
    pub consecutive_poll_failures: i32,
    /// Why the last poll got no usable answer; cleared by the next good one.
    #[sea_orm(column_type = "Text", nullable)]
    pub last_poll_error: Option<String>,
    pub owner: Option<String>,
    pub lease_until: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The first failed poll of the current run of failures; cleared by the next good answer.
    pub failing_since: Option<DateTimeUtc>,
    /// The Spark cluster it runs on (`[spark.clusters.<name>]`); none is the default one.
    pub cluster: Option<String>,
    /// What jobwarden submits for this job (JSON); none for jobs others submit.
    #[sea_orm(column_type = "Text", nullable)]
    pub submit_spec: Option<String>,
    /// The number of the current (or last) attempt; 0 before the first.
    pub attempt: i32,
    /// When the next attempt is due (a job waiting to be submitted or retried).
    pub next_attempt_at: Option<DateTimeUtc>,
    /// Someone asked to cancel it; the driver is killed and the row ends once Spark confirms.
    pub cancel_requested_at: Option<DateTimeUtc>,
    /// Higher leaves the submission queue first (0 unless the submission said otherwise).
    pub priority: i32,
    /// Its place in the submission queue, lowest first: when it became ready to submit, in
    /// milliseconds, less its priority's head start (so waiting ages it).
    pub queue_rank: i64,
    /// The clusters it may be placed on, comma-separated (`,a,b,`); none: only `cluster`.
    #[sea_orm(column_type = "Text", nullable)]
    pub allowed_clusters: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
