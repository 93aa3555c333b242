//! Events that could not be applied, kept byte-exact with the reason, so none is silently lost.

use sea_orm_migration::prelude::*;

use crate::columns::{bytes, instant};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum DeadLetters {
    Table,
    Id,
    Source,
    Topic,
    Partition,
    Offset,
    Key,
    Payload,
    Error,
    ReceivedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use DeadLetters as T;
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
                    .col(ColumnDef::new(T::Source).string_len(32).not_null())
                    .col(ColumnDef::new(T::Topic).string_len(255).null())
                    .col(ColumnDef::new(T::Partition).integer().null())
                    .col(ColumnDef::new(T::Offset).big_integer().null())
                    .col(bytes(db, T::Key).null())
                    .col(bytes(db, T::Payload).not_null())
                    .col(ColumnDef::new(T::Error).text().not_null())
                    .col(instant(db, T::ReceivedAt).not_null())
                    .to_owned(),
            )
            .await?;
        // A redelivered bad message must not become a second dead letter.
        manager
            .create_index(
                Index::create()
                    .name("idx_dead_letters_position")
                    .table(T::Table)
                    .col(T::Topic)
                    .col(T::Partition)
                    .col(T::Offset)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DeadLetters::Table).to_owned())
            .await
    }
}
