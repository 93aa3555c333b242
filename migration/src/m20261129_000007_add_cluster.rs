//! Which Spark cluster an execution runs on. NULL is the default cluster (`[spark]`), so rows
//! written before clusters existed, and rows other programs insert without it, keep working.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SparkJobExecutions {
    Table,
    Cluster,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SparkJobExecutions::Table)
                    .add_column(
                        ColumnDef::new(SparkJobExecutions::Cluster)
                            .string_len(64)
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SparkJobExecutions::Table)
                    .drop_column(SparkJobExecutions::Cluster)
                    .to_owned(),
            )
            .await
    }
}
