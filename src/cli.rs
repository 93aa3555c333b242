//! The command line: `run` (the default), `migrate`, `check-config`, `jobs …`, and the shell
//! completions and man pages generated from these same definitions.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

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
    /// Inspect, register, submit, cancel and retry jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Look after the notification outbox.
    #[command(subcommand)]
    Notifications(NotificationsCommand),
    /// Delete the records [retention] no longer keeps, now, as the leader does every
    /// retention.every; with --dry-run only say how many would go.
    Prune {
        /// Count what would be deleted, table by table, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a completion script for bash, zsh or fish to stdout.
    ///
    /// For example `jobwarden completions bash >
    /// /usr/share/bash-completion/completions/jobwarden`; for zsh, write `_jobwarden` into a
    /// directory of $fpath; for fish, write ~/.config/fish/completions/jobwarden.fish. No
    /// configuration is read.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the man page (roff) to stdout, or write every page into a directory.
    ///
    /// `jobwarden man | man -l -` reads it at once; `jobwarden man --out-dir
    /// /usr/local/share/man/man1` installs jobwarden(1) and a page per subcommand
    /// (jobwarden-jobs-track(1) and so on), printing each path. No configuration is read.
    Man {
        /// A directory to write jobwarden.1 and every subcommand's page into (e.g.
        /// /usr/local/share/man/man1); it must exist.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Print the HTTP API's OpenAPI 3.1 document (JSON) to stdout.
    ///
    /// The same document the server answers at /api/v1/openapi.json, for generating a client
    /// or importing into a gateway without a running instance. No configuration is read.
    Openapi,
}

/// The shells `jobwarden completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl Cli {
    /// The completion script for `shell`, completing what [`Cli`] parses.
    pub fn write_completions(shell: CompletionShell, out: &mut dyn Write) {
        let shell = match shell {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        };
        let mut command = Cli::command();
        let name = command.get_name().to_owned();
        clap_complete::generate(shell, &mut command, name, out);
    }

    /// The man page of `jobwarden` itself, in roff; its SUBCOMMANDS section names each one.
    pub fn write_man_page(out: &mut dyn Write) -> io::Result<()> {
        man(man_command()).render(out)
    }

    /// `jobwarden.1` and a page per subcommand (`jobwarden-jobs-track.1`, …) in `dir`; the
    /// paths written, the top page first.
    pub fn write_man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
        fn write(command: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
            written.push(man(command.clone()).generate_to(dir)?);
            for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
                write(sub.clone(), dir, written)?;
            }
            Ok(())
        }
        let mut written = Vec::new();
        write(man_command(), dir, &mut written)?;
        Ok(written)
    }
}

/// The page of `command`, its footer naming jobwarden's version (a subcommand has none).
fn man(command: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(command).source(format!("jobwarden {}", env!("CARGO_PKG_VERSION")))
}

/// The command as the man pages describe it: built, so that each subcommand knows its full
/// name (`jobwarden-jobs-track`), and without clap's `help` subcommand, which `--help` covers.
fn man_command() -> clap::Command {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    command
}

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// Put failed messages back in the outbox (after a receiver's secret or address was
    /// fixed); each gets a fresh give_up_after and keeps its message id.
    Resend {
        /// Resend the messages that failed for good (required: the only kind there is to resend).
        #[arg(long, required = true)]
        failed: bool,
        /// Only those that failed since: an RFC 3339 instant, or a duration ago ("2h").
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only those of this channel ([notifications.channels.<name>]).
        #[arg(long, value_name = "NAME")]
        channel: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List Spark executions, most recently changed first.
    List(ListArgs),
    /// Show one Spark execution with its status history and its attempts.
    Show {
        /// The execution id (primary key of spark_job_executions).
        execution_id: String,
    },
    /// Register a Spark submission for jobwarden to supervise.
    Track(TrackArgs),
    /// Have jobwarden submit a Spark application, and retry it as its policy says.
    #[command(
        long_about = "Have jobwarden submit a Spark application through the master's \
REST submission server, and submit it again when an attempt fails (as [submit] and the spec's \
own [retry] table say).\n\n\
The job is written to the database as Queued; a running jobwarden sends it to Spark within \
submit.check_interval. A cluster whose REST submission server is off is refused at once (exit \
1): enable spark.master.rest.enabled=true (port 6066) on its master, or submit with \
spark-submit and use `jobwarden jobs track`.\n\n\
The spec file (TOML):\n\n\
    app_resource = \"hdfs:///jobs/nightly.jar\"\n\
    main_class = \"com.example.Nightly\"\n\
    args = [\"--date\", \"2026-11-30\"]\n\n\
    [spark_properties]\n\
    \"spark.driver.memory\" = \"2g\"\n\n\
    [environment]\n\
    TZ = \"UTC\"\n\n\
    [retry]            # optional; unset keys take [submit]'s\n\
    max_attempts = 5\n\
    initial_backoff = \"1m\"\n\
    max_backoff = \"30m\"\n\
    retry_on = [\"failed\", \"lost_worker\"]"
    )]
    Submit(SubmitArgs),
    /// Cancel a job: at once when no driver runs, else its driver is killed.
    #[command(long_about = "Cancel a job.\n\n\
A job no driver runs for (waiting to be submitted, or waiting for a retry) ends Cancelled at \
once. Otherwise the cancel is recorded: a running jobwarden kills the driver through Spark's \
REST API, and the job ends Cancelled once Spark reports the driver KILLED. A cancelled job is \
never retried by itself. A finished job cannot be cancelled (exit 1).")]
    Cancel {
        /// The execution id (primary key of spark_job_executions).
        execution_id: String,
    },
    /// Give a finished job that jobwarden submitted one more attempt, due now.
    #[command(
        long_about = "Give a finished job that jobwarden submitted one more attempt, due \
now: the job becomes Retrying and a running jobwarden submits it within submit.check_interval. \
Only finished jobs with a submit spec can be retried (exit 1 otherwise); cancel a running one \
first."
    )]
    Retry {
        /// The execution id (primary key of spark_job_executions).
        execution_id: String,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only executions with this status (Queued, Submitting, Running, Retrying, Succeeded,
    /// Failed, Cancelled).
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

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The submit spec, a TOML file: app_resource, main_class, args, [spark_properties],
    /// [environment], [retry] (see --help).
    #[arg(long, value_name = "SPEC.toml")]
    pub file: PathBuf,
    /// Your id for this execution (primary key of spark_job_executions).
    #[arg(long, value_parser = non_empty)]
    pub execution_id: String,
    /// A readable job name (also the Spark application's name unless the spec sets
    /// spark.app.name).
    #[arg(long)]
    pub name: Option<String>,
    /// The Spark cluster to submit to, a [spark.clusters.<name>] of the configuration; the
    /// default cluster ([spark]) when left out.
    #[arg(long, value_parser = non_empty)]
    pub cluster: Option<String>,
    /// Execution ids it waits for: it is submitted only once all of them succeeded, and ends
    /// Cancelled (naming the parent) if one fails or is cancelled. Comma-separated or repeated.
    #[arg(long, value_delimiter = ',', value_name = "ID")]
    pub after: Vec<String>,
    /// Execution ids it waits for whatever their outcome.
    #[arg(long, value_delimiter = ',', value_name = "ID")]
    pub after_any: Vec<String>,
    /// Its priority in the submission queue: 0 (the default, lowest) to 1000.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// Instead of --cluster: the clusters it may be placed on (comma-separated; `default` is
    /// [spark]); it goes to the one with the most free capacity.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "NAME",
        conflicts_with = "cluster"
    )]
    pub clusters: Option<Vec<String>>,
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
