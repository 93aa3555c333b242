//! The `jobwarden-bench` binary: parse the command line, load settings, run one measurement.

use std::process::ExitCode;

use clap::Parser;
use jobwarden::{config, telemetry};
use jobwarden_bench::cli::{Cli, Command, Measurement};
use jobwarden_bench::{
    dashboard, kafka_ingest, poll, retention, soak, status_check, store_writes, suite,
};

/// glibc's malloc unless `JOBWARDEN_ALLOCATOR=mimalloc` (see `jobwarden::allocator`).
#[global_allocator]
static ALLOCATOR: jobwarden::allocator::Chosen = jobwarden::allocator::Chosen;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("jobwarden-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = telemetry::init(&loaded.settings.telemetry) {
        eprintln!("jobwarden-bench: cannot start logging: {e}");
        return ExitCode::from(2);
    }
    let settings = loaded.settings;
    let result = match cli.command {
        // The suite only starts child processes: it needs no actor system of its own.
        Command::Suite(options) => suite::run(options, cli.config.as_deref()).map(|_| ()),
        Command::Measure(measurement) => {
            actix_rt::System::new().block_on(measure(settings, measurement))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobwarden-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn measure(settings: config::Settings, measurement: Measurement) -> anyhow::Result<()> {
    match measurement {
        Measurement::StoreWrites {
            database_url,
            changes,
        } => store_writes::store_writes(settings, database_url, changes).await,
        Measurement::Poll {
            database_url,
            jobs,
            pools,
        } => poll::run(settings, database_url, jobs, pools).await,
        Measurement::Dashboard { jobs } => dashboard::run(settings, jobs).await,
        Measurement::Soak {
            database_url,
            jobs,
            minutes,
            sample_every,
            churn_per_minute,
        } => soak::run(database_url, jobs, minutes, sample_every, churn_per_minute).await,
        Measurement::Retention { database_url, rows } => {
            retention::run(settings, database_url, rows).await
        }
        Measurement::Scenario { spec } => {
            let scenario = serde_json::from_str(&spec)
                .map_err(|e| anyhow::anyhow!("bad scenario {spec:?}: {e}"))?;
            let rows = suite::run_scenario(settings, scenario).await?;
            println!("{}", serde_json::to_string(&rows)?);
            Ok(())
        }
        Measurement::KafkaIngest {
            brokers,
            events,
            database_urls,
        } => kafka_ingest::run(settings, brokers, events, database_urls).await,
        Measurement::StatusCheck {
            rest_url,
            submission_id,
            spark_home,
            client_checks,
            tool_checks,
        } => {
            status_check::run(
                settings,
                rest_url,
                submission_id,
                spark_home,
                client_checks,
                tool_checks,
            )
            .await
        }
    }
}
