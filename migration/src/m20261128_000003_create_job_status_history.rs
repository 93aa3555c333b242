//! One row per status transition of any job, so an operator can see how a job got where it is.

use sea_orm_migration::prelude::*;

use crate::columns::{id_text, instant};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum JobStatusHistory {
    Table,
    Id,
    JobKind,
    JobId,
    FromStatus,
    ToStatus,
    Source,
    Detail,
    At,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use JobStatusHistory as T;
        let db = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(T::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(T::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(T::JobKind).string_len(16).not_null())
                    .col(id_text(T::JobId).not_null())
                    .col(ColumnDef::new(T::FromStatus).string_len(32).null())
                    .col(ColumnDef::new(T::ToStatus).string_len(32).not_null())
                    .col(ColumnDef::new(T::Source).string_len(32).not_null())
                    .col(ColumnDef::new(T::Detail).text().null())
                    .col(instant(db, T::At).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_job_status_history_job")
                    .table(T::Table)
                    .col(T::JobKind)
                    .col(T::JobId)
                    .col(T::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(JobStatusHistory::Table).to_owned())
            .await
    }
}
