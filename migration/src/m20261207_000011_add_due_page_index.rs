//! The poll cycle's pages in id order, status by status: an index on `(status, execution_id)`
//! lets each page walk only the unfinished rows after its cursor, in order, and stop at the
//! page's size, however many rows the table holds and however many of them are due.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SparkJobExecutions {
    Table,
    Status,
    ExecutionId,
}

const INDEX: &str = "idx_spark_job_executions_due_page";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(SparkJobExecutions::Table)
                    .col(SparkJobExecutions::Status)
                    .col(SparkJobExecutions::ExecutionId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(SparkJobExecutions::Table)
                    .to_owned(),
            )
            .await
    }
}
