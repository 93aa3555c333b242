//! `dead_letters`: events that could not be applied, byte-exact, with the reason.

use sea_orm::entity::prelude::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "dead_letters")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub source: String,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    #[sea_orm(column_type = "Blob", nullable)]
    pub key: Option<Vec<u8>>,
    #[sea_orm(column_type = "Blob")]
    pub payload: Vec<u8>,
    #[sea_orm(column_type = "Text")]
    pub error: String,
    pub received_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
