//! `job_status_history`: one row per status transition, for either kind of job.

use sea_orm::entity::prelude::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "job_status_history")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `spark` for `spark_job_executions`, `queue` for `transformation_job_queue`.
    pub job_kind: String,
    pub job_id: String,
    pub from_status: Option<String>,
    pub to_status: String,
    /// `spark_poll`, `kafka_event`, `timeout_sweep` or `api`.
    pub source: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub detail: Option<String>,
    pub at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
