//! The Spark execution rows that submitters insert and jobwarden keeps true.

use sea_orm_migration::prelude::*;

use crate::columns::{id_text, instant, instant_now};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum SparkJobExecutions {
    Table,
    ExecutionId,
    JobName,
    SubmissionId,
    Status,
    SparkState,
    Progress,
    SubmittedAt,
    StartedAt,
    CompletedAt,
    LastPolledAt,
    LastConfirmedAt,
    NextPollAt,
    StatusChangedAt,
    ErrorMessage,
    ConsecutivePollFailures,
    LastPollError,
    Owner,
    LeaseUntil,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use SparkJobExecutions as T;
        let db = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(T::Table)
                    .if_not_exists()
                    .col(id_text(T::ExecutionId).not_null().primary_key())
                    .col(ColumnDef::new(T::JobName).string_len(255).null())
                    .col(id_text(T::SubmissionId).null())
                    .col(
                        ColumnDef::new(T::Status)
                            .string_len(32)
                            .not_null()
                            .default("Queued"),
                    )
                    .col(ColumnDef::new(T::SparkState).string_len(32).null())
                    .col(
                        ColumnDef::new(T::Progress)
                            .small_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(instant(db, T::SubmittedAt))
                    .col(instant(db, T::StartedAt))
                    .col(instant(db, T::CompletedAt))
                    .col(instant(db, T::LastPolledAt))
                    .col(instant(db, T::LastConfirmedAt))
                    .col(instant(db, T::NextPollAt))
                    .col(instant(db, T::StatusChangedAt))
                    .col(ColumnDef::new(T::ErrorMessage).text().null())
                    .col(
                        ColumnDef::new(T::ConsecutivePollFailures)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(T::LastPollError).text().null())
                    .col(ColumnDef::new(T::Owner).string_len(191).null())
                    .col(instant(db, T::LeaseUntil))
                    .col(instant_now(db, T::CreatedAt))
                    .col(instant_now(db, T::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // "Non-terminal jobs due for a poll": the status picks the few live rows out of the
        // history, last_polled_at gives the oldest-first order within them.
        manager
            .create_index(
                Index::create()
                    .name("idx_spark_job_executions_due")
                    .table(T::Table)
                    .col(T::Status)
                    .col(T::LastPolledAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_spark_job_executions_submission")
                    .table(T::Table)
                    .col(T::SubmissionId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SparkJobExecutions::Table).to_owned())
            .await
    }
}
