//! The transformation queue rows that the enrichment pipeline's events keep current.

use sea_orm_migration::prelude::*;

use crate::columns::{id_text, instant, instant_now};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum TransformationJobQueue {
    Table,
    JobId,
    Status,
    ErrorMessage,
    GeneratedFields,
    CompletedAt,
    LastEventAt,
    LastEventId,
    LastTopic,
    LastPartition,
    LastOffset,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use TransformationJobQueue as T;
        let db = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(T::Table)
                    .if_not_exists()
                    .col(id_text(T::JobId).not_null().primary_key())
                    .col(
                        ColumnDef::new(T::Status)
                            .string_len(32)
                            .not_null()
                            .default("Pending"),
                    )
                    .col(ColumnDef::new(T::ErrorMessage).text().null())
                    .col(ColumnDef::new(T::GeneratedFields).json().null())
                    .col(instant(db, T::CompletedAt))
                    .col(instant(db, T::LastEventAt))
                    .col(ColumnDef::new(T::LastEventId).string_len(191).null())
                    .col(ColumnDef::new(T::LastTopic).string_len(255).null())
                    .col(ColumnDef::new(T::LastPartition).integer().null())
                    .col(ColumnDef::new(T::LastOffset).big_integer().null())
                    .col(instant_now(db, T::CreatedAt))
                    .col(instant_now(db, T::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_transformation_job_queue_status")
                    .table(T::Table)
                    .col(T::Status)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(TransformationJobQueue::Table)
                    .to_owned(),
            )
            .await
    }
}
