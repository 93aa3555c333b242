//! Typed settings: the embedded defaults (the shipped `config.toml`), then a config file, then
//! `JOBWARDEN__SECTION__KEY` environment variables; refused at start with the key named.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize, Serializer};

/// The shipped `config.toml`, so the binary runs with no file at all.
pub const EMBEDDED_DEFAULTS: &str = include_str!("../config.toml");
pub const ENV_PREFIX: &str = "JOBWARDEN__";
const DEFAULT_FILE: &str = "config.toml";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub spark: SparkSettings,
    pub store: StoreSettings,
    pub telemetry: TelemetrySettings,
    pub http: HttpSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSettings>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Where health, readiness, metrics and the job API listen; empty turns the server off.
    pub bind: String,
    /// Required as `Authorization: Bearer …` on `POST` requests when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SparkSettings {
    pub rest_url: String,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    pub max_concurrent_polls: usize,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub stuck_timeout: Duration,
    /// Longest stay in Queued or Submitting before the job is failed with the reason.
    #[serde(with = "humantime_serde")]
    pub queued_timeout: Duration,
    /// Longest run; unset lets jobs run as long as Spark confirms them.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_runtime: Option<Duration>,
    /// Cap on the per-job delay after consecutive failed polls.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// The master's web UI (for worker addresses); defaults to the REST host on port 8080.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_ui_url: Option<String>,
    /// Sent as `Authorization: Bearer …` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// Sent as HTTP basic auth when set (and no bearer token is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// How much of a failed driver's stderr to fetch and keep.
    pub stderr_tail_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

/// A value that is never displayed, logged or serialized in clear.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub max_batch: usize,
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Payloads above this size go to dead letters unparsed.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Extra librdkafka properties (security.protocol, sasl.*, ssl.*), passed through as is.
    #[serde(default, serialize_with = "serialize_masked_properties")]
    pub properties: BTreeMap<String, String>,
}

fn default_topic() -> String {
    "transformation-job-status".into()
}

fn default_group() -> String {
    "transformation-engine-job-monitor".into()
}

fn default_max_payload() -> usize {
    1024 * 1024
}

/// Whether a librdkafka property holds a secret that must never be shown.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("secret")
}

fn serialize_masked_properties<S: Serializer>(
    props: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let masked: BTreeMap<&str, &str> = props
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret_property(k) {
                MASK
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect();
    masked.serialize(s)
}

const MASK: &str = "****";

/// A database URL whose password is never displayed, logged or serialized.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The real URL, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `****`.
    pub fn masked(&self) -> String {
        mask_url_password(&self.0)
    }
}

/// Replaces the password of a URL-shaped string; text that is not a URL is left alone.
pub fn mask_url_password(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = parsed.set_password(Some(MASK));
            parsed.to_string()
        }
        _ => raw.to_owned(),
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.masked())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist (pass --config with an existing file, or omit it to use ./config.toml or the embedded defaults)")]
    MissingFile(PathBuf),
    #[error("invalid configuration:\n{0}")]
    Invalid(String),
}

/// One refused value, with the key spelled as it is in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "  {} = {}: {}", self.key, self.value, self.reason)
    }
}

/// Where the settings came from, for the start-up log and `check-config`.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub file: Option<PathBuf>,
    pub warnings: Vec<String>,
}

/// Loads settings: embedded defaults, then `path` (or `./config.toml` if present), then env.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    load_with_env(path, std::env::vars())
}

/// Like [`load`], with the environment given explicitly (tests must not share process env).
pub fn load_with_env(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let file = match path {
        Some(p) if !p.exists() => return Err(ConfigError::MissingFile(p.to_owned())),
        Some(p) => Some(p.to_owned()),
        None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.exists()),
    };
    let mut figment = Figment::from(Toml::string(EMBEDDED_DEFAULTS));
    if let Some(file) = &file {
        figment = figment.merge(Toml::file_exact(file));
    }
    let overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    figment = figment.merge(EnvVars(overrides));
    let settings: Settings = figment.extract().map_err(describe_figment_error)?;
    let problems = settings.problems();
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(ConfigError::Invalid(text.join("\n")));
    }
    let warnings = settings.warnings();
    Ok(Loaded {
        settings,
        file,
        warnings,
    })
}

/// `JOBWARDEN__SECTION__KEY` variables, read from a given list rather than the process
/// environment so that tests can load settings side by side.
struct EnvVars(Vec<(String, String)>);

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

fn describe_figment_error(err: figment::Error) -> ConfigError {
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

impl Settings {
    /// Values that parse but cannot work.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut refuse = |key: &str, value: String, reason: &str| {
            out.push(Problem {
                key: key.into(),
                value,
                reason: reason.into(),
            })
        };
        let url = self.database.url.expose();
        let scheme = url.split("://").next().unwrap_or_default();
        if !url.contains("://")
            || !matches!(
                scheme,
                "sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb"
            )
        {
            refuse(
                "database.url",
                format!("{:?}", self.database.url.masked()),
                "expected a sqlite://, postgres:// or mysql:// URL",
            );
        }
        if self.database.max_connections == 0 {
            refuse("database.max_connections", "0".into(), "must be at least 1");
        }
        if self.database.connect_timeout.is_zero() {
            refuse(
                "database.connect_timeout",
                "\"0s\"".into(),
                "must be longer than zero",
            );
        }
        let rest = &self.spark.rest_url;
        let rest_ok = ["spark://", "http://", "https://"]
            .iter()
            .any(|p| rest.starts_with(p))
            && url::Url::parse(&rest.replacen("spark://", "http://", 1))
                .map(|u| u.host().is_some())
                .unwrap_or(false);
        if !rest_ok {
            refuse(
                "spark.rest_url",
                format!("{rest:?}"),
                "expected spark://host:6066 or http(s)://host:port",
            );
        }
        for (key, value) in [
            ("spark.poll_interval", self.spark.poll_interval),
            ("spark.request_timeout", self.spark.request_timeout),
            ("spark.stuck_timeout", self.spark.stuck_timeout),
            ("spark.queued_timeout", self.spark.queued_timeout),
            ("spark.max_backoff", self.spark.max_backoff),
            ("store.retry_initial", self.store.retry_initial),
            ("store.retry_max", self.store.retry_max),
            ("store.sweep_interval", self.store.sweep_interval),
        ] {
            if value.is_zero() {
                refuse(key, "\"0s\"".into(), "must be longer than zero");
            }
        }
        if self.spark.max_concurrent_polls == 0 {
            refuse(
                "spark.max_concurrent_polls",
                "0".into(),
                "must be at least 1",
            );
        }
        if self.spark.max_concurrent_polls > 4096 {
            refuse(
                "spark.max_concurrent_polls",
                self.spark.max_concurrent_polls.to_string(),
                "must be at most 4096",
            );
        }
        if self.spark.stderr_tail_bytes == 0 || self.spark.stderr_tail_bytes > 1024 * 1024 {
            refuse(
                "spark.stderr_tail_bytes",
                self.spark.stderr_tail_bytes.to_string(),
                "must be between 1 and 1048576",
            );
        }
        if self.spark.bearer_token.is_some() && self.spark.basic_auth.is_some() {
            refuse(
                "spark.basic_auth",
                "(set)".into(),
                "set either spark.bearer_token or spark.basic_auth, not both",
            );
        }
        if let Some(ui) = &self.spark.master_ui_url {
            if !ui.starts_with("http://") && !ui.starts_with("https://") {
                refuse(
                    "spark.master_ui_url",
                    format!("{ui:?}"),
                    "expected an http(s):// URL",
                );
            }
        }
        if !self.http.bind.is_empty() && self.http.bind.parse::<std::net::SocketAddr>().is_err() {
            refuse(
                "http.bind",
                format!("{:?}", self.http.bind),
                "expected host:port such as 127.0.0.1:9464 (or \"\" to turn the server off)",
            );
        }
        if let Some(kafka) = &self.kafka {
            for key in kafka.properties.keys() {
                if crate::kafka::RESERVED_PROPERTIES.contains(&key.as_str()) {
                    refuse(
                        &format!("kafka.properties.{key}"),
                        "(set)".into(),
                        "is set by jobwarden itself (offsets are stored only after a write)",
                    );
                }
            }
        }
        if self.store.max_batch == 0 {
            refuse("store.max_batch", "0".into(), "must be at least 1");
        }
        if self.store.retry_initial > self.store.retry_max {
            refuse(
                "store.retry_initial",
                format!(
                    "{:?}",
                    humantime::format_duration(self.store.retry_initial).to_string()
                ),
                "must not exceed store.retry_max",
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.level).is_err() {
            refuse(
                "telemetry.level",
                format!("{:?}", self.telemetry.level),
                "expected a level (error, warn, info, debug, trace) or a RUST_LOG-style filter",
            );
        }
        if let Some(kafka) = &self.kafka {
            if kafka.bootstrap_servers.trim().is_empty() {
                refuse(
                    "kafka.bootstrap_servers",
                    "\"\"".into(),
                    "must name at least one broker",
                );
            }
            if kafka.topic.trim().is_empty() {
                refuse("kafka.topic", "\"\"".into(), "must not be empty");
            }
            if kafka.group_id.trim().is_empty() {
                refuse("kafka.group_id", "\"\"".into(), "must not be empty");
            }
            if kafka.max_payload_bytes == 0 {
                refuse("kafka.max_payload_bytes", "0".into(), "must be at least 1");
            }
        }
        out
    }

    /// Combinations that work but are probably not what the operator meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.spark.request_timeout > self.spark.poll_interval {
            out.push(format!(
                "spark.request_timeout ({}) is longer than spark.poll_interval ({}): a hung poll outlives its tick",
                humantime::format_duration(self.spark.request_timeout),
                humantime::format_duration(self.spark.poll_interval)
            ));
        }
        if self.spark.stuck_timeout < self.spark.poll_interval * 2 {
            out.push(format!(
                "spark.stuck_timeout ({}) is under two poll intervals ({}): one slow answer could time a job out",
                humantime::format_duration(self.spark.stuck_timeout),
                humantime::format_duration(self.spark.poll_interval)
            ));
        }
        out
    }

    /// The effective settings as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_file(body: &str, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, body).unwrap();
        load_with_env(Some(&path), env(vars))
    }

    #[test]
    fn embedded_defaults_are_the_documented_ones() {
        let loaded = load_file("", &[]).unwrap();
        let s = loaded.settings;
        assert_eq!(s.database.url.expose(), "sqlite://jobwarden.db?mode=rwc");
        assert_eq!(s.spark.poll_interval, Duration::from_secs(15));
        assert_eq!(s.spark.max_concurrent_polls, 5);
        assert_eq!(s.spark.stuck_timeout, Duration::from_secs(300));
        assert!(s.kafka.is_none());
    }

    #[test]
    fn env_overrides_file_with_double_underscore_keys() {
        let loaded = load_file(
            "[spark]\npoll_interval = \"30s\"\n",
            &[
                ("JOBWARDEN__SPARK__POLL_INTERVAL", "10s"),
                ("JOBWARDEN__SPARK__MAX_CONCURRENT_POLLS", "64"),
            ],
        )
        .unwrap();
        assert_eq!(loaded.settings.spark.poll_interval, Duration::from_secs(10));
        assert_eq!(loaded.settings.spark.max_concurrent_polls, 64);
    }

    #[test]
    fn kafka_section_fills_topic_and_group_defaults() {
        let loaded = load_file("[kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\n", &[]).unwrap();
        let kafka = loaded.settings.kafka.unwrap();
        assert_eq!(kafka.topic, "transformation-job-status");
        assert_eq!(kafka.group_id, "transformation-engine-job-monitor");
    }

    #[test]
    fn bad_duration_is_refused_naming_key_and_value() {
        let err = load_file("[spark]\npoll_interval = \"15 parsecs\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("spark.poll_interval"), "{err}");
        assert!(err.contains("15 parsecs"), "{err}");
    }

    #[test]
    fn wrong_type_from_env_is_refused_naming_key_and_value() {
        let err = load_file("", &[("JOBWARDEN__SPARK__MAX_CONCURRENT_POLLS", "lots")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("spark.max_concurrent_polls"), "{err}");
        assert!(err.contains("lots"), "{err}");
    }

    #[test]
    fn unknown_key_is_refused_naming_it() {
        let err = load_file("[spark]\npoll_intervall = \"15s\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("poll_intervall"), "{err}");
        assert!(err.contains("spark"), "{err}");
    }

    #[test]
    fn unknown_section_is_refused() {
        let err = load_file("[sparkk]\nrest_url = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sparkk"), "{err}");
    }

    #[test]
    fn zero_pool_size_is_refused_naming_key_and_value() {
        let err = load_file("[spark]\nmax_concurrent_polls = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("spark.max_concurrent_polls = 0"), "{err}");
    }

    #[test]
    fn unsupported_database_scheme_is_refused() {
        let err = load_file("[database]\nurl = \"oracle://db\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
    }

    #[test]
    fn spark_url_forms_are_checked() {
        for ok in [
            "spark://master:6066",
            "http://127.0.0.1:6066",
            "https://spark.example:443",
        ] {
            let body = format!("[spark]\nrest_url = \"{ok}\"\n");
            assert!(load_file(&body, &[]).is_ok(), "{ok}");
        }
        let err = load_file("[spark]\nrest_url = \"master:6066\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("spark.rest_url = \"master:6066\""), "{err}");
    }

    #[test]
    fn missing_explicit_file_is_an_error_naming_it() {
        let err = load_with_env(Some(Path::new("/nonexistent/jw.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/jw.toml"), "{err}");
    }

    #[test]
    fn database_password_never_appears_in_rendered_settings() {
        let loaded = load_file(
            "[database]\nurl = \"postgres://app:hunter2@db:5432/jobs\"\n",
            &[],
        )
        .unwrap();
        let s = &loaded.settings;
        assert!(!s.to_masked_toml().contains("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!s.database.url.to_string().contains("hunter2"));
        assert_eq!(
            s.database.url.expose(),
            "postgres://app:hunter2@db:5432/jobs"
        );
    }

    #[test]
    fn kafka_secret_properties_are_masked() {
        let loaded = load_file(
            "[kafka]\nbootstrap_servers = \"b:9092\"\n[kafka.properties]\n\"sasl.password\" = \"s3cret\"\n\"security.protocol\" = \"SASL_SSL\"\n",
            &[],
        )
        .unwrap();
        let text = loaded.settings.to_masked_toml();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("SASL_SSL"), "{text}");
    }

    #[test]
    fn request_timeout_longer_than_interval_warns() {
        let loaded = load_file(
            "[spark]\npoll_interval = \"5s\"\nrequest_timeout = \"20s\"\n",
            &[],
        )
        .unwrap();
        assert!(loaded
            .warnings
            .iter()
            .any(|w| w.contains("spark.request_timeout")));
    }
}
