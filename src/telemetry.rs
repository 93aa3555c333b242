//! The tracing subscriber: human-readable or JSON lines, level from `RUST_LOG` or the config.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, TelemetrySettings};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `telemetry.level`.
/// Returns an error if a subscriber is already installed (e.g. twice in one test process).
pub fn init(settings: &TelemetrySettings) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => EnvFilter::try_new(value)?,
        // Migration progress is the startup log's business, not every command's.
        _ => EnvFilter::try_new(format!("{},sea_orm_migration=warn", settings.level))?,
    };
    let registry = tracing_subscriber::registry().with(filter);
    // Colours only for a person at a terminal, never into files, pipes or journald.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    match settings.format {
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_target(true)
                    .with_ansi(colour)
                    .with_writer(std::io::stderr),
            )
            .try_init()?,
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()?,
    }
    Ok(())
}
