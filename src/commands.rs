//! What each subcommand does, once settings are loaded.

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};

use crate::actors::JobStore;
use crate::cli::{JobsCommand, ListArgs, TrackArgs};
use crate::config::Settings;
use crate::events::Events;
use crate::startup::{connect_patiently, shutdown_signal, Application, StartError};
use crate::store::{self, read, Rules};
use crate::store_api::{
    OpError, Source, StoreError, StoreHandle, TrackRequest, WriteOp, WriteOutcome,
};

/// Runs the service until a signal; `Err` only when it could not start.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let app = tokio::select! {
        app = Application::build(settings) => app?,
        reason = &mut signal => {
            tracing::info!(signal = reason, "stopped before start-up finished");
            return Ok(());
        }
    };
    app.run_until(signal).await;
    Ok(())
}

/// Checks the `[tables]` mapping against the database; the resolved mapping as text.
pub async fn check_tables(settings: &Settings) -> Result<String, StartError> {
    // A check answers now: one attempt, no waiting out database.startup_wait.
    let mut once = settings.database.clone();
    once.startup_wait = std::time::Duration::ZERO;
    let db = connect_patiently(&once).await?;
    let mapping = crate::startup::check_tables(&db, settings).await?;
    Ok(crate::store::mapped::describe(&mapping))
}

pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let db = connect(&settings).await?;
    let applied = store::migrate_exclusively(&db, &settings.database)
        .await
        .context("failed to apply database migrations")?;
    println!("{applied} migration(s) applied; schema is up to date");
    Ok(())
}

pub async fn jobs(settings: Settings, command: JobsCommand) -> anyhow::Result<()> {
    let db = connect(&settings).await?;
    store::migrate_exclusively(&db, &settings.database)
        .await
        .context("failed to apply database migrations")?;
    match command {
        JobsCommand::List(args) => list(&db, args).await,
        JobsCommand::Show { execution_id } => show(&db, &execution_id).await,
        JobsCommand::Track(args) => track(db, settings, args).await,
    }
}

async fn connect(settings: &Settings) -> Result<sea_orm::DatabaseConnection, StartError> {
    connect_patiently(&settings.database).await
}

async fn list(db: &sea_orm::DatabaseConnection, args: ListArgs) -> anyhow::Result<()> {
    let rows = read::list_executions(db, args.status, args.limit).await?;
    if rows.is_empty() {
        println!("no executions");
        return Ok(());
    }
    println!(
        "{:<36} {:<11} {:>4}  {:<32} {:<25} JOB",
        "EXECUTION", "STATUS", "PCT", "SUBMISSION", "UPDATED"
    );
    for row in rows {
        println!(
            "{:<36} {:<11} {:>3}%  {:<32} {:<25} {}",
            row.execution_id,
            row.status,
            row.progress,
            row.submission_id.as_deref().unwrap_or("-"),
            stamp(Some(row.updated_at)),
            row.job_name.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

async fn show(db: &sea_orm::DatabaseConnection, execution_id: &str) -> anyhow::Result<()> {
    let Some((row, history)) = read::execution_with_history(db, execution_id).await? else {
        bail!("no execution {execution_id:?} (see `jobwarden jobs list`)");
    };
    let fields = [
        ("execution_id", Some(row.execution_id.clone())),
        ("job_name", row.job_name.clone()),
        ("submission_id", row.submission_id.clone()),
        ("cluster", row.cluster.clone()),
        ("status", Some(row.status.clone())),
        ("spark_state", row.spark_state.clone()),
        ("progress", Some(format!("{}%", row.progress))),
        ("submitted_at", row.submitted_at.map(|t| stamp(Some(t)))),
        ("started_at", row.started_at.map(|t| stamp(Some(t)))),
        ("completed_at", row.completed_at.map(|t| stamp(Some(t)))),
        ("last_polled_at", row.last_polled_at.map(|t| stamp(Some(t)))),
        (
            "status_changed_at",
            row.status_changed_at.map(|t| stamp(Some(t))),
        ),
        ("error_message", row.error_message.clone()),
        (
            "poll_failures",
            Some(row.consecutive_poll_failures.to_string()),
        ),
        ("last_poll_error", row.last_poll_error.clone()),
    ];
    for (name, value) in fields {
        println!("{name:<18} {}", value.as_deref().unwrap_or("-"));
    }
    println!("\nhistory:");
    for h in history {
        println!(
            "  {}  {:>10} -> {:<10} [{}] {}",
            stamp(Some(h.at)),
            h.from_status.as_deref().unwrap_or("(new)"),
            h.to_status,
            h.source,
            h.detail.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// Goes through the JobStore like every other write.
async fn track(
    db: sea_orm::DatabaseConnection,
    settings: Settings,
    args: TrackArgs,
) -> anyhow::Result<()> {
    if !settings.spark.knows_cluster(args.cluster.as_deref()) {
        bail!(
            "no Spark cluster named {:?} in the configuration: add [spark.clusters.{}] with its rest_url, or leave --cluster out for the default cluster",
            args.cluster.as_deref().unwrap_or_default(),
            args.cluster.as_deref().unwrap_or_default()
        );
    }
    let mapping = crate::startup::check_tables(&db, &settings).await?;
    let rules = Rules::from_settings(&settings.spark);
    let store = JobStore::new(db, settings.store, rules, Events::default())
        .with_mapping(std::sync::Arc::new(mapping))
        .launch();
    let outcome = StoreHandle::from(&store)
        .write(WriteOp::Track(TrackRequest {
            execution_id: args.execution_id.clone(),
            submission_id: Some(args.submission_id.clone()),
            job_name: args.name,
            cluster: args.cluster.clone(),
            source: Source::Api,
        }))
        .await;
    match outcome {
        Ok(WriteOutcome::Tracked { created: true }) => {
            println!(
                "tracking {} (submission {})",
                args.execution_id, args.submission_id
            )
        }
        Ok(_) => println!(
            "execution {} now tracks submission {}",
            args.execution_id, args.submission_id
        ),
        Err(StoreError::Refused(OpError::Duplicate { execution_id })) => {
            bail!("execution {execution_id:?} is already tracked (see `jobwarden jobs show {execution_id}`)")
        }
        Err(StoreError::Refused(refusal @ OpError::ApplicationRows { .. })) => bail!("{refusal}"),
        Err(e) => return Err(e).context("failed to register the execution"),
    }
    Ok(())
}

fn stamp(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| "-".into())
}
