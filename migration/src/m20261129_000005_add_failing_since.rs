//! When the current run of failed polls began: the stuck rule counts from it, so a job whose
//! answers bring no news needs no write at every poll to keep "last confirmed" current.

use sea_orm_migration::prelude::*;

use crate::columns::instant;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SparkJobExecutions {
    Table,
    FailingSince,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_database_backend();
        manager
            .alter_table(
                Table::alter()
                    .table(SparkJobExecutions::Table)
                    .add_column(instant(db, SparkJobExecutions::FailingSince))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SparkJobExecutions::Table)
                    .drop_column(SparkJobExecutions::FailingSince)
                    .to_owned(),
            )
            .await
    }
}
