//! Ordering the jobs jobwarden submits: a priority and a place in the submission queue on each
//! execution, the clusters it may be placed on, one row per dependency (a child waits for its
//! parents), and one gate row per cluster that capacity decisions take in turn.

use sea_orm_migration::prelude::*;

use crate::columns::id_text;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SparkJobExecutions {
    Table,
    Priority,
    QueueRank,
    AllowedClusters,
    Cluster,
    Status,
    NextAttemptAt,
    CancelRequestedAt,
}

#[derive(DeriveIden)]
enum SparkJobDependencies {
    Table,
    ChildId,
    ParentId,
    Mode,
    State,
}

#[derive(DeriveIden)]
enum JobwardenCapacityGates {
    Table,
    Cluster,
    Decisions,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use SparkJobExecutions as E;
        // One column per statement: SQLite alters one column at a time. Rows written before
        // (and rows other programs insert) get priority 0 and the front of the queue.
        for column in [
            ColumnDef::new(E::Priority)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(E::QueueRank)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(E::AllowedClusters).text().null().to_owned(),
        ] {
            manager
                .alter_table(Table::alter().table(E::Table).add_column(column).to_owned())
                .await?;
        }
        // The submission queue of a cluster, in the order jobs leave it.
        manager
            .create_index(
                Index::create()
                    .name("idx_spark_job_executions_queue")
                    .table(E::Table)
                    .col(E::Status)
                    .col(E::QueueRank)
                    .to_owned(),
            )
            .await?;
        // What runs on a cluster, counted for its capacity.
        manager
            .create_index(
                Index::create()
                    .name("idx_spark_job_executions_cluster")
                    .table(E::Table)
                    .col(E::Cluster)
                    .col(E::Status)
                    .to_owned(),
            )
            .await?;
        // Requests out whose driver is not known yet, found without reading the queue.
        manager
            .create_index(
                Index::create()
                    .name("idx_spark_job_executions_undated")
                    .table(E::Table)
                    .col(E::Status)
                    .col(E::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        // Drivers to kill, found without reading every row.
        manager
            .create_index(
                Index::create()
                    .name("idx_spark_job_executions_cancel")
                    .table(E::Table)
                    .col(E::CancelRequestedAt)
                    .to_owned(),
            )
            .await?;
        use SparkJobDependencies as D;
        manager
            .create_table(
                Table::create()
                    .table(D::Table)
                    .if_not_exists()
                    .col(id_text(D::ChildId).not_null())
                    .col(id_text(D::ParentId).not_null())
                    .col(ColumnDef::new(D::Mode).string_len(16).not_null())
                    .col(ColumnDef::new(D::State).string_len(16).not_null())
                    .primary_key(Index::create().col(D::ChildId).col(D::ParentId))
                    .to_owned(),
            )
            .await?;
        // A parent's end wakes its children; the children to look at are found by state.
        manager
            .create_index(
                Index::create()
                    .name("idx_dependencies_parent")
                    .table(D::Table)
                    .col(D::ParentId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_dependencies_state")
                    .table(D::Table)
                    .col(D::State)
                    .to_owned(),
            )
            .await?;
        use JobwardenCapacityGates as G;
        manager
            .create_table(
                Table::create()
                    .table(G::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(G::Cluster)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(G::Decisions)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use SparkJobExecutions as E;
        manager
            .drop_table(
                Table::drop()
                    .table(JobwardenCapacityGates::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(SparkJobDependencies::Table).to_owned())
            .await?;
        for index in [
            "idx_spark_job_executions_queue",
            "idx_spark_job_executions_cluster",
            "idx_spark_job_executions_undated",
            "idx_spark_job_executions_cancel",
        ] {
            manager
                .drop_index(Index::drop().name(index).table(E::Table).to_owned())
                .await?;
        }
        for column in [E::Priority, E::QueueRank, E::AllowedClusters] {
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
