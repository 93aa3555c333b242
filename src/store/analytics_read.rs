//! Read queries for job analytics: the Spark runs that ended inside a window, the columns the
//! figures need and no more, bounded whatever the table's size.
//!
//! No time column of `spark_job_executions` is indexed (and adding one is the schema's
//! business, not a page's), so a window is one scan of the table that keeps the ended rows
//! of the window. What comes back is bounded twice: the window is at most
//! [`crate::analytics::MAX_DAYS`] days, and at most [`MAX_RUNS_READ`] runs are read, the
//! latest first; the error text is cut in the database to [`ERROR_CHARS`] characters (the
//! first line is all a figure uses).

use chrono::{DateTime, Utc};
use entity::spark_job_executions as executions;
use futures::TryStreamExt;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::analytics::{self, JobDetail, Outcome, Overview, Run, Window};
use crate::domain::JobStatus;

/// Runs one read returns at most: the latest ones when a window holds more.
pub const MAX_RUNS_READ: u64 = 200_000;
/// Rows decoded between two chances for other requests on the same thread.
const YIELD_EVERY: u64 = 1_000;
/// Characters of an error message read for a failed run.
pub const ERROR_CHARS: i32 = 1_024;

#[derive(Debug, FromQueryResult)]
struct Ended {
    job_name: Option<String>,
    status: String,
    created_at: DateTime<Utc>,
    submitted_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    error: Option<String>,
}

/// The runs that ended at or after `from`, latest first, of one job name or of all; and
/// whether [`MAX_RUNS_READ`] cut the read short.
pub async fn ended_runs(
    db: &DatabaseConnection,
    from: DateTime<Utc>,
    job_name: Option<&str>,
) -> Result<(Vec<Run>, bool), DbErr> {
    let ended = Outcome::ALL.map(|(_, status)| status);
    // Only a failed run's error makes a figure: no other row's text is sent.
    let failed_runs_error: Expr = Expr::case(
        Expr::col(executions::Column::Status).eq(JobStatus::Failed.as_str()),
        Func::cust(Alias::new("SUBSTR"))
            .arg(Expr::col(executions::Column::ErrorMessage))
            // PostgreSQL's substr takes integers, not bigints.
            .arg(1i32)
            .arg(ERROR_CHARS),
    )
    .into();
    let mut query = executions::Entity::find()
        .select_only()
        .column(executions::Column::JobName)
        .column(executions::Column::Status)
        .column(executions::Column::CreatedAt)
        .column(executions::Column::SubmittedAt)
        .column(executions::Column::StartedAt)
        .column(executions::Column::CompletedAt)
        .column_as(failed_runs_error, "error")
        .filter(executions::Column::Status.is_in(ended.iter().map(|s| s.as_str())))
        .filter(executions::Column::CompletedAt.gte(from));
    if let Some(name) = job_name {
        query = query.filter(executions::Column::JobName.eq(name));
    }
    let mut rows = query
        .order_by_desc(executions::Column::CompletedAt)
        .limit(MAX_RUNS_READ + 1)
        .into_model::<Ended>()
        .stream(db)
        .await?;
    let (mut runs, mut read, mut truncated) = (Vec::new(), 0u64, false);
    while let Some(row) = rows.try_next().await? {
        read += 1;
        if read > MAX_RUNS_READ {
            truncated = true;
            break;
        }
        // Rows are decoded on the HTTP server's own thread: it answers probes and scrapes
        // in between, not after the last of 200,000 rows.
        if read.is_multiple_of(YIELD_EVERY) {
            tokio::task::yield_now().await;
        }
        runs.extend(Outcome::of_status(&row.status).and_then(|outcome| {
            Some(Run {
                outcome,
                completed_at: row.completed_at?,
                job_name: row.job_name,
                created_at: row.created_at,
                submitted_at: row.submitted_at,
                started_at: row.started_at,
                error: row.error,
            })
        }));
    }
    Ok((runs, truncated))
}

/// Every job name's figures over `window`. The figures are worked out on a blocking thread:
/// sorting and grouping 200,000 runs would hold up the HTTP server's one thread.
pub async fn overview(db: &DatabaseConnection, window: Window) -> Result<Overview, DbErr> {
    let (runs, truncated) = ended_runs(db, window.from, None).await?;
    tokio::task::spawn_blocking(move || analytics::overview(window, &runs, truncated))
        .await
        .map_err(|e| DbErr::Custom(format!("the analytics figures were not worked out: {e}")))
}

/// One job name's figures over `window`; none when no run of it ended there.
pub async fn job_detail(
    db: &DatabaseConnection,
    window: Window,
    job_name: &str,
) -> Result<Option<JobDetail>, DbErr> {
    let (runs, truncated) = ended_runs(db, window.from, Some(job_name)).await?;
    Ok(analytics::job_detail(window, job_name, &runs, truncated))
}
