//! `[telemetry]`: how logs look and how much is logged.

use serde::{Deserialize, Serialize};

use super::validate::{Problems, Validate};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Validate for TelemetrySettings {
    fn validate(&self, p: &mut Problems) {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            p.refuse(
                "telemetry.level",
                format!("{:?}", self.level),
                "expected a level (error, warn, info, debug, trace) or a RUST_LOG-style filter",
            );
        }
    }
}
