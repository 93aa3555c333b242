//! The `jobwarden` binary: parse the command line, load settings, run the chosen command.

use std::process::ExitCode;

use clap::Parser;
use jobwarden::cli::{Cli, Command};
use jobwarden::startup::StartError;
use jobwarden::{commands, config, telemetry};

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
        if loaded.settings.tables.is_empty() {
            return ExitCode::SUCCESS;
        }
        // A mapping is only known to work once the tables it names have been looked at.
        let settings = loaded.settings.clone();
        let checked = actix_rt::System::new()
            .block_on(async move { commands::check_tables(&settings).await });
        return match checked {
            Ok(described) => {
                println!("\n# mapped tables: checked against the database");
                for line in described.lines() {
                    println!("# {line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("jobwarden: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    if let Err(e) = telemetry::init(&loaded.settings.telemetry) {
        eprintln!("jobwarden: cannot start logging: {e}");
        return ExitCode::from(2);
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let settings = loaded.settings;
    let result = actix_rt::System::new().block_on(async move {
        match command {
            Command::Run => commands::run(settings).await.map_err(anyhow::Error::new),
            Command::Migrate => commands::migrate(settings).await,
            Command::Jobs(jobs) => commands::jobs(settings, jobs).await,
            Command::Prune { dry_run } => commands::prune(settings, dry_run).await,
            Command::Notifications(command) => commands::notifications(settings, command).await,
            Command::CheckConfig => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // One line: a start error names the setting and what to do; others carry context.
        Err(e) => match e.downcast_ref::<StartError>() {
            // Its message already holds the cause, which is also its `source()`: the `{:#}`
            // chain would say the cause two or three times over.
            Some(start) => {
                eprintln!("jobwarden: {start}");
                ExitCode::from(start.exit_code())
            }
            None => {
                eprintln!("jobwarden: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}
