//! The `jobwarden` binary: parse the command line, load settings, run the chosen command.

use std::process::ExitCode;

use clap::Parser;
use jobwarden::cli::{BenchCommand, Cli, Command};
use jobwarden::{bench, commands, config, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("jobwarden: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::CheckConfig = command {
        let source = loaded
            .file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "embedded defaults".into());
        println!("# effective configuration (file: {source}; secrets masked)");
        print!("{}", loaded.settings.to_masked_toml());
        for warning in &loaded.warnings {
            eprintln!("warning: {warning}");
        }
        return ExitCode::SUCCESS;
    }
    if let Err(e) = telemetry::init(&loaded.settings.telemetry) {
        eprintln!("jobwarden: cannot start logging: {e}");
        return ExitCode::from(2);
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let settings = loaded.settings;
    if let Command::Bench(BenchCommand::Suite(options)) = command {
        return match bench::suite::run(options, cli.config.as_deref()) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("jobwarden: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = actix_rt::System::new().block_on(async move {
        match command {
            Command::Run => commands::run(settings).await,
            Command::Migrate => commands::migrate(settings).await,
            Command::Jobs(jobs) => commands::jobs(settings, jobs).await,
            Command::Bench(BenchCommand::StoreWrites {
                database_url,
                changes,
            }) => bench::store_writes::store_writes(settings, database_url, changes).await,
            Command::Bench(BenchCommand::Poll {
                database_url,
                jobs,
                pools,
            }) => bench::poll::run(settings, database_url, jobs, pools).await,
            Command::Bench(BenchCommand::Scenario { spec }) => {
                let scenario = serde_json::from_str(&spec)
                    .map_err(|e| anyhow::anyhow!("bad scenario {spec:?}: {e}"))?;
                let rows = bench::suite::run_scenario(settings, scenario).await?;
                println!("{}", serde_json::to_string(&rows)?);
                Ok(())
            }
            Command::Bench(BenchCommand::Suite(_)) => Ok(()),
            Command::Bench(BenchCommand::KafkaIngest {
                brokers,
                events,
                database_urls,
            }) => bench::kafka_ingest::run(settings, brokers, events, database_urls).await,
            Command::Bench(BenchCommand::StatusCheck {
                rest_url,
                submission_id,
                spark_home,
                client_checks,
                tool_checks,
            }) => {
                bench::status_check::run(
                    settings,
                    rest_url,
                    submission_id,
                    spark_home,
                    client_checks,
                    tool_checks,
                )
                .await
            }
            Command::CheckConfig => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobwarden: {e:#}");
            ExitCode::FAILURE
        }
    }
}
