//! The benchmark's command line: one subcommand per measurement, and `suite` for all of them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "jobwarden-bench",
    version,
    about = "Measures jobwarden on this machine and prints its figures beside a ceiling measured in the same run",
    long_about = "Measures jobwarden on this machine. Every figure is printed beside a ceiling \
measured in the same run on the same machine, so compare the ratios: absolute numbers move with \
the machine's load. Settings (database, Spark, store) come from the same layers as the service's: \
the embedded defaults, then ./config.toml (or --config), then JOBWARDEN__SECTION__KEY variables."
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
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every scenario, each in its own process, as one table: jobwarden's figure, the ceiling
    /// measured in the same run, the ratio, the peak RSS. Quick by default; --full for the
    /// README's numbers.
    Suite(crate::suite::SuiteOptions),
    #[command(flatten)]
    Measure(Measurement),
}

/// Measurements that run inside one actor system.
#[derive(Debug, Subcommand)]
pub enum Measurement {
    /// The `jobwarden` binary (built beside this one) over a large fleet with steady churn for
    /// a long time: memory, open files, database connections, history and outbox sampled.
    Soak {
        /// Database to soak (a fresh one is made in it and dropped after); a scratch SQLite
        /// file when omitted.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        #[arg(long, default_value_t = 60)]
        minutes: u64,
        /// Time between two samples.
        #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
        sample_every: std::time::Duration,
        /// Jobs that end, and as many new ones tracked, each minute.
        #[arg(long, default_value_t = 1_000)]
        churn_per_minute: usize,
    },
    /// Retention deleting a backlog of aged history rows while polls write, beside the same
    /// polls on an idle store: their write latency in both, side by side.
    Retention {
        /// Database to measure (it must hold no history yet); a scratch SQLite file when omitted.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Aged history rows to delete.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
    },
    /// Status changes per second through the JobStore (registrations, then one change each).
    StoreWrites {
        /// Database to measure; a scratch SQLite file when omitted. Rows it adds are removed.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// How many jobs (and so changes) to send at once.
        #[arg(long, default_value_t = 10_000)]
        changes: usize,
    },
    /// Status checks completed and written per second in one poll cycle, per pool size,
    /// against a Spark-protocol server on loopback.
    Poll {
        /// Database to measure; a scratch SQLite file per pool size when omitted.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Due jobs in the cycle.
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        /// Pool sizes to compare, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "5,64")]
        pools: Vec<usize>,
    },
    /// The dashboard's jobs page (first screen) over a seeded fleet, beside the JSON API's
    /// list of a page of the same size, both through HTTP to the running service.
    Dashboard {
        /// Executions seeded into a scratch SQLite file (three transitions each).
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
    },
    /// One scenario of the suite, given as JSON (the suite runs each in its own process).
    #[command(hide = true)]
    Scenario { spec: String },
    /// Kafka events durably applied per second beside a plain consumer of the same topic.
    KafkaIngest {
        /// A broker to use; librdkafka's in-process mock cluster when omitted.
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Databases to measure, comma-separated; a scratch SQLite file when omitted. Rows the
        /// benchmark adds to a shared database are removed.
        #[arg(long, value_delimiter = ',', value_name = "URL,...")]
        database_urls: Vec<String>,
    },
    /// One status check through jobwarden's client vs one `spark-submit --status`, against a
    /// real cluster.
    StatusCheck {
        /// The master's REST URL.
        #[arg(long, default_value = "http://127.0.0.1:6066")]
        rest_url: String,
        /// A submission the master knows.
        #[arg(long)]
        submission_id: String,
        /// A Spark distribution; without it only jobwarden's client is measured.
        #[arg(long, env = "SPARK_HOME")]
        spark_home: Option<String>,
        #[arg(long, default_value_t = 200)]
        client_checks: usize,
        #[arg(long, default_value_t = 5)]
        tool_checks: usize,
    },
}
