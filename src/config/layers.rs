//! The layers settings come from: the embedded defaults, a file, and environment variables,
//! and how a value refused by one of them is described (key, value, and which layer).

use figment::Figment;

use super::ConfigError;
use super::ENV_PREFIX;

/// `JOBWARDEN__SECTION__KEY` variables, read from a given list rather than the process
/// environment so that tests can load settings side by side.
pub struct EnvVars(pub Vec<(String, String)>);

impl figment::Provider for EnvVars {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("environment variables")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut merged = Figment::new();
        for (name, raw) in &self.0 {
            let key = name[ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            // Parsed like TOML scalars: "5" is a number, "15s" a string.
            let value: figment::value::Value = match raw.parse() {
                Ok(v) => v,
                Err(never) => match never {},
            };
            merged = merged.merge(figment::providers::Serialized::default(&key, value));
        }
        merged.data()
    }
}

pub fn describe_figment_error(err: figment::Error) -> ConfigError {
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            let what = e.kind.to_string();
            if key.is_empty() {
                format!("  {what}{source}")
            } else {
                format!("  {key}: {what}{source}")
            }
        })
        .collect();
    ConfigError::Invalid(lines.join("\n"))
}
