//! `transformation_job_queue`: one row per enrichment job, kept current from status events.

use sea_orm::entity::prelude::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "transformation_job_queue")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub job_id: String,
    pub status: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub error_message: Option<String>,
    pub generated_fields: Option<Json>,
    pub completed_at: Option<DateTimeUtc>,
    pub last_event_at: Option<DateTimeUtc>,
    pub last_event_id: Option<String>,
    pub last_topic: Option<String>,
    pub last_partition: Option<i32>,
    pub last_offset: Option<i64>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
