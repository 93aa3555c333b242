//! The `jobwarden` binary: parse the command line, load settings, run the chosen command.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use jobwarden::cli::{Cli, Command};
use jobwarden::startup::StartError;
use jobwarden::{commands, config, telemetry};

/// glibc's malloc unless `JOBWARDEN_ALLOCATOR=mimalloc` (see `jobwarden::allocator`).
#[global_allocator]
static ALLOCATOR: jobwarden::allocator::Chosen = jobwarden::allocator::Chosen;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Generated from the command line's own definitions: no settings are read, so a broken
    // config.toml cannot keep an operator from installing completions or the manual.
    match &cli.command {
        Some(Command::Completions { shell }) => {
            // Into memory first: the generator panics on a failed write (`| head`).
            let mut script = Vec::new();
            Cli::write_completions(*shell, &mut script);
            return print(&script);
        }
        Some(Command::Man { out_dir }) => return man(out_dir.as_deref()),
        Some(Command::Openapi) => return print(jobwarden::http::openapi_json().as_bytes()),
        _ => {}
    }
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
            Command::CheckConfig
            | Command::Completions { .. }
            | Command::Man { .. }
            | Command::Openapi => Ok(()),
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

/// `jobwarden man`: the page on stdout, or every page into `out_dir` (each path printed).
fn man(out_dir: Option<&Path>) -> ExitCode {
    let Some(dir) = out_dir else {
        let mut page = Vec::new();
        return match Cli::write_man_page(&mut page) {
            Ok(()) => print(&page),
            Err(e) => {
                eprintln!("jobwarden: cannot render the man page: {e}");
                ExitCode::from(1)
            }
        };
    };
    match Cli::write_man_pages(dir) {
        Ok(paths) => {
            let listed: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
            print(listed.as_bytes())
        }
        Err(e) => {
            eprintln!(
                "jobwarden: cannot write the man pages into {}: {e}",
                dir.display()
            );
            ExitCode::from(1)
        }
    }
}

/// `bytes` on stdout; a reader that stopped early (`| head`) is no failure.
fn print(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobwarden: cannot write to stdout: {e}");
            ExitCode::from(1)
        }
    }
}
