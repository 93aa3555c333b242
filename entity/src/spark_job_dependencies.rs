//! `spark_job_dependencies`: one row per parent a child execution waits for.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "spark_job_dependencies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub child_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub parent_id: String,
    /// `success`: the child runs only if the parent succeeded; `any`: whatever its outcome.
    pub mode: String,
    /// `waiting` for the parent to end, `ended` (the child is to look), `settled` (it looked).
    pub state: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
