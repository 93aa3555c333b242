//! The notifications a committed transition triggers, written in the same transaction as the
//! transition itself, so a crash can lose none; the Notifier delivers them and records each
//! attempt here.

use sea_orm_migration::prelude::*;

use crate::columns::instant;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum JobwardenOutbox {
    Table,
    Id,
    MessageId,
    Channel,
    Event,
    JobKind,
    JobId,
    Payload,
    State,
    Attempts,
    NextAttemptAt,
    LastError,
    CreatedAt,
    FinishedAt,
    GroupId,
    DedupKey,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use JobwardenOutbox as T;
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
                    .col(ColumnDef::new(T::MessageId).string_len(64).not_null())
                    .col(ColumnDef::new(T::Channel).string_len(64).not_null())
                    .col(ColumnDef::new(T::Event).string_len(32).not_null())
                    .col(ColumnDef::new(T::JobKind).string_len(16).null())
                    .col(ColumnDef::new(T::JobId).string_len(191).null())
                    .col(ColumnDef::new(T::Payload).text().not_null())
                    .col(ColumnDef::new(T::State).string_len(16).not_null())
                    .col(ColumnDef::new(T::Attempts).integer().not_null().default(0))
                    .col(instant(db, T::NextAttemptAt).not_null())
                    .col(ColumnDef::new(T::LastError).text().null())
                    .col(instant(db, T::CreatedAt).not_null())
                    .col(instant(db, T::FinishedAt))
                    .col(ColumnDef::new(T::GroupId).string_len(64).null())
                    .col(ColumnDef::new(T::DedupKey).string_len(191).null())
                    .to_owned(),
            )
            .await?;
        // One row per message and channel: the id is what receivers deduplicate on.
        manager
            .create_index(
                Index::create()
                    .name("idx_outbox_message_channel")
                    .table(T::Table)
                    .col(T::MessageId)
                    .col(T::Channel)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // A warning (stuck soon, running long) is sent once per job run, whoever notices it.
        manager
            .create_index(
                Index::create()
                    .name("idx_outbox_dedup")
                    .table(T::Table)
                    .col(T::DedupKey)
                    .col(T::Channel)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The Notifier's scan: what is pending, oldest first.
        manager
            .create_index(
                Index::create()
                    .name("idx_outbox_pending")
                    .table(T::Table)
                    .col(T::State)
                    .col(T::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(JobwardenOutbox::Table).to_owned())
            .await
    }
}
