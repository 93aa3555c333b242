//! `jobwarden_outbox`: one row per notification and channel, written with the transition that
//! triggered it, updated by each delivery attempt.

use sea_orm::entity::prelude::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "jobwarden_outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The same on every retry, and for every channel: receivers deduplicate on it.
    pub message_id: String,
    pub channel: String,
    pub event: String,
    pub job_kind: Option<String>,
    pub job_id: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    /// `pending`, `delivered` or `failed` (given up, or refused by the receiver).
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTimeUtc,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    /// The grouped message it went out in, when a storm was sent as one.
    pub group_id: Option<String>,
    pub dedup_key: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
