//! The command line: `run` (the default), `migrate`, `check-config`, and `jobs …`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::domain::JobStatus;

#[derive(Debug, Parser)]
#[command(
    name = "jobwarden",
    version,
    about = "Supervises Spark and enrichment batch jobs and keeps their database rows true",
    long_about = "jobwarden polls Spark's REST API for every unfinished Spark job row, listens to \
the enrichment pipeline's status events on Kafka, and writes each job's status, progress, \
timing and failure reason to the database, with a history row for every transition.\n\n\
Settings come from the embedded defaults, then ./config.toml (or --config), then \
JOBWARDEN__SECTION__KEY environment variables. Without a subcommand, `run` is assumed."
)]
pub struct Cli {
    /// Config file to read instead of ./config.toml (the embedded defaults apply underneath).
    #[arg(
        long,
        short,
        global = true,
        env = "JOBWARDEN_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor until SIGINT or SIGTERM (applies pending migrations first).
    Run,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration (secrets masked) and exit; non-zero if it is invalid.
    CheckConfig,
    /// Inspect and register jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List Spark executions, most recently changed first.
    List(ListArgs),
    /// Show one Spark execution with its status history.
    Show {
        /// The execution id (primary key of spark_job_executions).
        execution_id: String,
    },
    /// Register a Spark submission for jobwarden to supervise.
    Track(TrackArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only executions with this status (Queued, Submitting, Running, Succeeded, Failed, Cancelled).
    #[arg(long, value_parser = parse_status)]
    pub status: Option<JobStatus>,
    /// At most this many rows.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub limit: u64,
}

#[derive(Debug, Args)]
pub struct TrackArgs {
    /// Your id for this execution (primary key of spark_job_executions).
    #[arg(long, value_parser = non_empty)]
    pub execution_id: String,
    /// Spark's submission id, e.g. driver-20261128210232-0000.
    #[arg(long, value_parser = non_empty)]
    pub submission_id: String,
    /// A readable job name for the dashboard.
    #[arg(long)]
    pub name: Option<String>,
    /// The Spark cluster it runs on, a [spark.clusters.<name>] of the configuration; the
    /// default cluster ([spark]) when left out.
    #[arg(long, value_parser = non_empty)]
    pub cluster: Option<String>,
}

fn parse_status(value: &str) -> Result<JobStatus, String> {
    value.parse().map_err(|e| format!("{e}"))
}

fn non_empty(value: &str) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".into());
    }
    if trimmed.len() > 191 {
        return Err("must be at most 191 characters".into());
    }
    Ok(trimmed.to_owned())
}
