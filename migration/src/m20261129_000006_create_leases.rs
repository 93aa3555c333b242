//! What several instances share: who is alive (`jobwarden_instances`) and who holds which
//! part of the work (`jobwarden_leases`: the poll buckets and the leader's singleton work),
//! each lease with a fencing token that grows with every claim.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

use crate::columns::{id_text, instant};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Buckets the Spark jobs are spread over; each is leased whole. Fixed here because every
/// instance must hash ids the same way.
pub const BUCKETS: u16 = 64;

#[derive(DeriveIden)]
enum JobwardenLeases {
    Table,
    Name,
    Owner,
    Token,
    LeaseUntil,
}

#[derive(DeriveIden)]
enum JobwardenInstances {
    Table,
    InstanceId,
    StartedAt,
    LastSeen,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(JobwardenLeases::Table)
                    .if_not_exists()
                    .col(id_text(JobwardenLeases::Name).not_null().primary_key())
                    .col(id_text(JobwardenLeases::Owner).null())
                    .col(
                        ColumnDef::new(JobwardenLeases::Token)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(instant(db, JobwardenLeases::LeaseUntil))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(JobwardenInstances::Table)
                    .if_not_exists()
                    .col(
                        id_text(JobwardenInstances::InstanceId)
                            .not_null()
                            .primary_key(),
                    )
                    .col(instant(db, JobwardenInstances::StartedAt).not_null())
                    .col(instant(db, JobwardenInstances::LastSeen).not_null())
                    .to_owned(),
            )
            .await?;
        let mut rows = Query::insert();
        rows.into_table(JobwardenLeases::Table)
            .columns([JobwardenLeases::Name, JobwardenLeases::Token]);
        rows.values_panic(["leader".into(), 0.into()]);
        for bucket in 0..BUCKETS {
            rows.values_panic([format!("bucket:{bucket:02}").into(), 0.into()]);
        }
        manager.get_connection().execute(&rows).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(JobwardenLeases::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(JobwardenInstances::Table).to_owned())
            .await
    }
}
