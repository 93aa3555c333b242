//! What each subcommand does, once settings are loaded.

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};

use crate::actors::JobStore;
use crate::backend::rest_off::SubmitGate;
use crate::cli::{JobsCommand, ListArgs, NotificationsCommand, SubmitArgs, TrackArgs};
use crate::config::Settings;
use crate::domain::SubmitSpec;
use crate::events::Events;
use crate::startup::{connect_patiently, shutdown_signal, Application, StartError};
use crate::store::retention::Aged;
use crate::store::{self, actions_read, read, Rules};
use crate::store_api::{
    OpError, OrderingAsked, ResendFailed, Source, StoreError, StoreHandle, TrackRequest, WriteOp,
    WriteOutcome,
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
        .map_err(|e| StartError::from_migration(&settings.database, e))?;
    println!("{applied} migration(s) applied; schema is up to date");
    Ok(())
}

pub async fn jobs(settings: Settings, command: JobsCommand) -> anyhow::Result<()> {
    let db = connect(&settings).await?;
    store::migrate_exclusively(&db, &settings.database)
        .await
        .map_err(|e| StartError::from_migration(&settings.database, e))?;
    match command {
        JobsCommand::List(args) => list(&db, args).await,
        JobsCommand::Show { execution_id } => show(&db, &execution_id).await,
        JobsCommand::Track(args) => track(db, settings, args).await,
        JobsCommand::Submit(args) => submit(db, settings, args).await,
        JobsCommand::Cancel { execution_id } => cancel(db, settings, &execution_id).await,
        JobsCommand::Retry { execution_id } => retry(db, settings, &execution_id).await,
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
        (
            "submit",
            row.submit_spec
                .as_deref()
                .map(|text| match SubmitSpec::from_json(text) {
                    Ok(spec) => format!("{} from {}", spec.main_class, spec.app_resource),
                    Err(e) => format!("(unusable: {e})"),
                }),
        ),
        (
            "attempt",
            row.submit_spec.as_ref().map(|_| row.attempt.to_string()),
        ),
        (
            "next_attempt_at",
            row.next_attempt_at.map(|t| stamp(Some(t))),
        ),
        (
            "cancel_requested",
            row.cancel_requested_at.map(|t| stamp(Some(t))),
        ),
    ];
    for (name, value) in fields {
        println!("{name:<18} {}", value.as_deref().unwrap_or("-"));
    }
    let parents = actions_read::parents_of(db, execution_id).await?;
    if !parents.is_empty() {
        println!("\nwaits for:");
        for (edge, status) in parents {
            let asks = if edge.mode == "any" {
                "to end (after_any)"
            } else {
                "to succeed"
            };
            println!(
                "  {:<30} {asks:<20} now {}",
                edge.parent_id,
                status.as_deref().unwrap_or("(gone)")
            );
        }
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
    let attempts = actions_read::attempts_of(db, execution_id).await?;
    if row.submit_spec.is_some() || !attempts.is_empty() {
        println!("\nattempts:");
        if attempts.is_empty() {
            println!("  (none yet)");
        }
        for a in attempts {
            let mut times = format!("requested {}", stamp(Some(a.requested_at)));
            for (what, at) in [
                ("submitted", a.submitted_at),
                ("started", a.started_at),
                ("ended", a.ended_at),
            ] {
                if let Some(at) = at {
                    times.push_str(&format!(", {what} {}", stamp(Some(at))));
                }
            }
            println!(
                "  #{:<3} {:<9} {:<11} {:<32} {}{}",
                a.attempt,
                a.state,
                a.outcome.as_deref().unwrap_or("-"),
                a.submission_id.as_deref().unwrap_or("-"),
                times,
                a.reason
                    .as_deref()
                    .map(|r| format!("\n        {}", one_line(r)))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// The first line of a (possibly long, multi-line) reason, for a one-line listing.
fn one_line(text: &str) -> String {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let more = text.lines().filter(|l| !l.trim().is_empty()).count() > 1;
    if more {
        format!("{} …", first.trim())
    } else {
        first.trim().to_owned()
    }
}

/// Goes through the JobStore like every other write.
async fn track(
    db: sea_orm::DatabaseConnection,
    settings: Settings,
    args: TrackArgs,
) -> anyhow::Result<()> {
    if !settings.spark.knows_cluster(args.cluster.as_deref()) {
        return Err(unknown_cluster(args.cluster.as_deref()));
    }
    let store = local_store(db, &settings).await?;
    let outcome = store
        .write(WriteOp::Track(TrackRequest {
            job_name: args.name,
            cluster: args.cluster.clone(),
            ..TrackRequest::new(
                args.execution_id.clone(),
                Some(args.submission_id.clone()),
                None,
                Source::Api,
            )
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

/// Deletes (or with `dry_run` counts) what `[retention]` no longer keeps, through a store of
/// this process's own, and prints a line per `[retention]` key.
pub async fn prune(settings: Settings, dry_run: bool) -> anyhow::Result<()> {
    let db = connect(&settings).await?;
    store::migrate_exclusively(&db, &settings.database)
        .await
        .map_err(|e| StartError::from_migration(&settings.database, e))?;
    let mapping = crate::startup::check_tables(&db, &settings).await?;
    let rules = Rules::from_settings(&settings.spark);
    let store = JobStore::new(db, settings.store.clone(), rules, Events::default())
        .with_mapping(std::sync::Arc::new(mapping))
        .with_retention(settings.retention.clone())
        .launch();
    let counted = store
        .send(crate::actors::job_store::Prune {
            now: Utc::now(),
            dry_run,
        })
        .await
        .context("the store stopped")?
        .context("retention stopped")?;
    let kept: Vec<&str> = Aged::ALL
        .iter()
        .map(|a| a.name())
        .filter(|name| !counted.iter().any(|(n, _)| n == name))
        .collect();
    for (name, rows) in &counted {
        let verb = if dry_run { "would delete" } else { "deleted" };
        println!("{name}: {verb} {rows} row(s)");
    }
    if !kept.is_empty() {
        println!("kept forever: {}", kept.join(", "));
    }
    Ok(())
}

/// `notifications resend --failed`: failed messages back in the outbox, through a store of
/// this process's own; a running jobwarden delivers them.
pub async fn notifications(
    settings: Settings,
    command: NotificationsCommand,
) -> anyhow::Result<()> {
    let NotificationsCommand::Resend { since, channel, .. } = command;
    if let Some(channel) = &channel {
        if !settings.notifications.channels.contains_key(channel) {
            bail!("no channel named {channel:?} in [notifications.channels]");
        }
    }
    let now = Utc::now();
    let since = since
        .map(|s| ResendFailed::since_from(&s, now))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--{e}"))?;
    let db = connect(&settings).await?;
    store::migrate_exclusively(&db, &settings.database)
        .await
        .map_err(|e| StartError::from_migration(&settings.database, e))?;
    let store = local_store(db, &settings).await?;
    let resent = store
        .resend_failed(ResendFailed {
            since,
            channel,
            now,
        })
        .await
        .context("the store could not put the messages back")?;
    println!("{resent} failed message(s) back in the outbox; a running jobwarden delivers them");
    Ok(())
}

/// A JobStore of this process's own: every write goes through one, as in the service.
async fn local_store(
    db: sea_orm::DatabaseConnection,
    settings: &Settings,
) -> anyhow::Result<StoreHandle> {
    let mapping = crate::startup::check_tables(&db, settings).await?;
    let rules = Rules::from_settings(&settings.spark).with_submit(&settings.submit);
    let store = JobStore::new(db, settings.store.clone(), rules, Events::default())
        .with_mapping(std::sync::Arc::new(mapping))
        .launch();
    Ok(StoreHandle::from(&store))
}

fn unknown_cluster(cluster: Option<&str>) -> anyhow::Error {
    let name = cluster.unwrap_or_default();
    anyhow::anyhow!(
        "no Spark cluster named {name:?} in the configuration: add [spark.clusters.{name}] with its rest_url, or leave --cluster out for the default cluster"
    )
}

/// Reads a submit spec from a TOML file; errors name the file and, through the TOML error,
/// the line and field.
fn read_spec(path: &std::path::Path) -> anyhow::Result<SubmitSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the spec file {}", path.display()))?;
    let spec: SubmitSpec = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a usable submit spec: {}",
            path.display(),
            e.to_string().trim_end()
        )
    })?;
    if let Err(e) = spec.check() {
        bail!("{}: {e}", path.display());
    }
    Ok(spec)
}

/// Registers a job for jobwarden to submit; a running jobwarden sends it to Spark.
async fn submit(
    db: sea_orm::DatabaseConnection,
    settings: Settings,
    args: SubmitArgs,
) -> anyhow::Result<()> {
    let spec = read_spec(&args.file)?;
    if !settings.spark.knows_cluster(args.cluster.as_deref()) {
        return Err(unknown_cluster(args.cluster.as_deref()));
    }
    // Mapped tables take no submissions: the store refuses the write and says why.
    if settings.tables.executions.is_none() {
        let gate = SubmitGate::new(&settings.spark).map_err(StartError::from)?;
        if let Some(message) = gate.refusal(args.cluster.as_deref()).await {
            bail!("{message}");
        }
    }
    let request = TrackRequest {
        job_name: args.name,
        cluster: args.cluster.clone(),
        ..TrackRequest::new(
            args.execution_id.clone(),
            None,
            Some(spec.clone()),
            Source::Api,
        )
    };
    let asked = OrderingAsked {
        after: args.after,
        after_any: args.after_any,
        priority: args.priority,
        clusters: args.clusters,
    };
    let request = request
        .ordered(asked, |name| settings.spark.clusters.contains_key(name))
        .map_err(|message| anyhow::anyhow!("{message}"))?;
    let waits = !request.after.is_empty();
    let store = local_store(db, &settings).await?;
    let outcome = store.write(WriteOp::Track(request)).await;
    match outcome {
        Ok(WriteOutcome::Tracked { .. }) if waits => println!(
            "registered {}: it waits for its parents, then a running jobwarden submits it; follow it with `jobwarden jobs show {}`",
            args.execution_id, args.execution_id
        ),
        Ok(WriteOutcome::Tracked { .. }) => println!(
            "queued {} for submission ({} from {}{}): a running jobwarden submits it within submit.check_interval; follow it with `jobwarden jobs show {}`",
            args.execution_id,
            spec.main_class,
            spec.app_resource,
            args.cluster
                .as_deref()
                .map(|c| format!(", cluster {c}"))
                .unwrap_or_default(),
            args.execution_id
        ),
        Ok(other) => bail!("unexpected outcome {other:?}"),
        Err(StoreError::Refused(OpError::Duplicate { execution_id })) => {
            bail!("execution {execution_id:?} already exists (see `jobwarden jobs show {execution_id}`); pick another --execution-id")
        }
        Err(StoreError::Refused(refusal)) => bail!("{refusal}"),
        Err(e) => return Err(e).context("failed to register the job"),
    }
    Ok(())
}

async fn cancel(
    db: sea_orm::DatabaseConnection,
    settings: Settings,
    execution_id: &str,
) -> anyhow::Result<()> {
    let store = local_store(db, &settings).await?;
    let outcome = store
        .write(WriteOp::Cancel {
            execution_id: execution_id.to_owned(),
            at: Utc::now(),
        })
        .await;
    match outcome {
        Ok(WriteOutcome::CancelTaken { ended: true, .. }) => println!(
            "cancelled {execution_id}: no driver was running, so it ended at once as Cancelled"
        ),
        Ok(WriteOutcome::CancelTaken {
            ended: false,
            submission_id,
        }) => {
            let driver = submission_id
                .map(|id| format!("driver {id}"))
                .unwrap_or_else(|| "the driver of the submission in flight (once found)".into());
            println!(
                "cancel requested for {execution_id}: a running jobwarden kills {driver} through Spark's REST API, and the job ends Cancelled once Spark reports it KILLED (see `jobwarden jobs show {execution_id}`)"
            )
        }
        Ok(other) => bail!("unexpected outcome {other:?}"),
        Err(e) => return Err(refusal(e, execution_id, "cancel")),
    }
    Ok(())
}

async fn retry(
    db: sea_orm::DatabaseConnection,
    settings: Settings,
    execution_id: &str,
) -> anyhow::Result<()> {
    let store = local_store(db, &settings).await?;
    let outcome = store
        .write(WriteOp::Retry {
            execution_id: execution_id.to_owned(),
            at: Utc::now(),
        })
        .await;
    match outcome {
        Ok(WriteOutcome::RetryTaken { attempt }) => println!(
            "attempt {attempt} of {execution_id} is due now: a running jobwarden submits it within submit.check_interval (see `jobwarden jobs show {execution_id}`)"
        ),
        Ok(other) => bail!("unexpected outcome {other:?}"),
        Err(e) => return Err(refusal(e, execution_id, "retry")),
    }
    Ok(())
}

/// A cancel or retry the store did not take, as the one line to print.
fn refusal(e: StoreError, execution_id: &str, what: &str) -> anyhow::Error {
    match e {
        StoreError::Refused(OpError::UnknownExecution { .. }) => {
            anyhow::anyhow!("no execution {execution_id:?} (see `jobwarden jobs list`)")
        }
        StoreError::Refused(refusal) => anyhow::anyhow!("{refusal}"),
        e => anyhow::Error::new(e).context(format!("failed to {what} {execution_id}")),
    }
}

fn stamp(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| "-".into())
}
