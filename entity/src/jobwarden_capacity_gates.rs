//! `jobwarden_capacity_gates`: one row per cluster, locked by every capacity decision about it
//! so that two instances never both take its last free place.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jobwarden_capacity_gates")]
pub struct Model {
    /// The cluster's name; `""` is the default cluster.
    #[sea_orm(primary_key, auto_increment = false)]
    pub cluster: String,
    /// How many decisions took the gate: written so that taking it locks the row.
    pub decisions: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
