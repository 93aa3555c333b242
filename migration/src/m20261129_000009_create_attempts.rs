//! Jobs jobwarden submits itself: the spec on the execution row, the current attempt, when the
//! next one is due and whether a cancel was asked for; and one row per attempt, recorded
//! before its submission request is sent, so a crash can always be reconciled.

use sea_orm_migration::prelude::*;

use crate::columns::{id_text, instant};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SparkJobExecutions {
    Table,
    SubmitSpec,
    Attempt,
    NextAttemptAt,
    CancelRequestedAt,
}

#[derive(DeriveIden)]
enum SparkJobAttempts {
    Table,
    Id,
    ExecutionId,
    Attempt,
    Mark,
    Cluster,
    SubmissionId,
    State,
    RequestedAt,
    SubmittedAt,
    StartedAt,
    EndedAt,
    Outcome,
    Reason,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use SparkJobExecutions as E;
        let db = manager.get_database_backend();
        // One column per statement: SQLite alters one column at a time.
        for column in [
            ColumnDef::new(E::SubmitSpec).text().null().to_owned(),
            ColumnDef::new(E::Attempt)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
            instant(db, E::NextAttemptAt),
            instant(db, E::CancelRequestedAt),
        ] {
            manager
                .alter_table(Table::alter().table(E::Table).add_column(column).to_owned())
                .await?;
        }
        use SparkJobAttempts as T;
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
                    .col(id_text(T::ExecutionId).not_null())
                    .col(ColumnDef::new(T::Attempt).integer().not_null())
                    .col(id_text(T::Mark).not_null())
                    .col(ColumnDef::new(T::Cluster).string_len(64).null())
                    .col(id_text(T::SubmissionId).null())
                    .col(ColumnDef::new(T::State).string_len(16).not_null())
                    .col(instant(db, T::RequestedAt).not_null())
                    .col(instant(db, T::SubmittedAt))
                    .col(instant(db, T::StartedAt))
                    .col(instant(db, T::EndedAt))
                    .col(ColumnDef::new(T::Outcome).string_len(16).null())
                    .col(ColumnDef::new(T::Reason).text().null())
                    .to_owned(),
            )
            .await?;
        // One row per attempt number: two requests for the same attempt cannot both be recorded.
        manager
            .create_index(
                Index::create()
                    .name("idx_attempts_execution_attempt")
                    .table(T::Table)
                    .col(T::ExecutionId)
                    .col(T::Attempt)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_attempts_state")
                    .table(T::Table)
                    .col(T::State)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use SparkJobExecutions as E;
        manager
            .drop_table(Table::drop().table(SparkJobAttempts::Table).to_owned())
            .await?;
        for column in [
            E::SubmitSpec,
            E::Attempt,
            E::NextAttemptAt,
            E::CancelRequestedAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(E::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
