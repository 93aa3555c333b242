//! `jobwarden_leases`: one row per leased part of the work (a poll bucket, or `leader`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jobwarden_leases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// The instance holding it; `None` when free.
    pub owner: Option<String>,
    /// Grows with every claim: a write carrying an older token comes from an owner that lost it.
    pub token: i64,
    pub lease_until: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
