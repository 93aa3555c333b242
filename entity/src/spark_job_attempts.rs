//! `spark_job_attempts`: one row per submission jobwarden made (or was about to make) of a job.

use sea_orm::entity::prelude::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "spark_job_attempts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub execution_id: String,
    pub attempt: i32,
    /// Carried by the driver as `spark.jobwarden.attempt`: how its driver is recognised.
    pub mark: String,
    pub cluster: Option<String>,
    pub submission_id: Option<String>,
    /// `requested` (recorded, request maybe sent), `submitted` (driver id known), `ended`.
    pub state: String,
    pub requested_at: DateTimeUtc,
    pub submitted_at: Option<DateTimeUtc>,
    pub started_at: Option<DateTimeUtc>,
    pub ended_at: Option<DateTimeUtc>,
    /// succeeded, failed, error, lost_worker, timed_out, cancelled, rejected.
    pub outcome: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub reason: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
