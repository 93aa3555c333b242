//! Typed settings: the embedded defaults (the shipped `config.toml`), then a config file, then
//! `JOBWARDEN__SECTION__KEY` environment variables; refused at start with the key named. Each
//! section lives in its own file and validates itself.

mod database;
mod http;
mod instance;
mod kafka;
mod layers;
mod notifications;
mod retention;
mod secret;
mod spark;
mod store;
mod submit;
mod tables;
mod telemetry;
mod validate;

use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use database::DatabaseSettings;
pub use http::HttpSettings;
pub use instance::{host_name, made_up_pid, InstanceSettings};
pub use kafka::{KafkaSettings, RESERVED_PROPERTIES};
pub use notifications::{
    AlertmanagerSettings, ChannelKind, ChannelSettings, EmailSettings, EventKind,
    NotificationSettings, RuleSettings, SmtpTls, ALERT_LABELS, DEFAULT_IN_FLIGHT,
};
pub use retention::{KeepFor, RetentionSettings};
pub use secret::{is_secret_property, mask_url_password, DatabaseUrl, Secret, MASK};
pub use spark::{
    BasicAuth, Cluster, ClusterSettings, SparkSettings, StatusSource, DEFAULT_CLUSTER, MAX_POOL,
};
pub use store::StoreSettings;
pub use submit::SubmitSettings;
pub use tables::{
    effective_statuses, ColumnList, ExecutionColumns, MappedTable, QueueColumns, StatusValue,
    TablesSettings,
};
pub use telemetry::{LogFormat, TelemetrySettings};
pub use validate::{Problem, Problems, Validate};

/// The shipped `config.toml`, so the binary runs with no file at all.
pub const EMBEDDED_DEFAULTS: &str = include_str!("../../config.toml");
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
    pub instance: InstanceSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSettings>,
    /// Application tables kept true in place of jobwarden's own.
    #[serde(default, skip_serializing_if = "TablesSettings::is_empty")]
    pub tables: TablesSettings,
    #[serde(default)]
    pub notifications: NotificationSettings,
    /// Jobs jobwarden submits itself: retries and reconciliation.
    #[serde(default)]
    pub submit: SubmitSettings,
    /// How long finished records are kept.
    #[serde(default)]
    pub retention: RetentionSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist (pass --config with an existing file, or omit it to use ./config.toml or the embedded defaults)")]
    MissingFile(PathBuf),
    #[error("invalid configuration:\n{0}")]
    Invalid(String),
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
    figment = figment.merge(layers::EnvVars(overrides));
    let settings: Settings = figment.extract().map_err(layers::describe_figment_error)?;
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

impl Settings {
    /// Values that parse but cannot work, from every section.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Problems::default();
        self.database.validate(&mut problems);
        self.spark.validate(&mut problems);
        self.store.validate(&mut problems);
        self.telemetry.validate(&mut problems);
        self.http.validate(&mut problems);
        self.instance.validate(&mut problems);
        if let Some(kafka) = &self.kafka {
            kafka.validate(&mut problems);
        }
        self.tables.validate(&mut problems);
        self.notifications.validate(&mut problems);
        self.submit.validate(&mut problems);
        self.retention.validate(&mut problems);
        problems.into_vec()
    }

    /// Combinations that work but are probably not what the operator meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.spark.warnings(&mut out);
        out
    }

    /// The effective settings as TOML, secrets masked, with the values chosen for unset keys
    /// written out (the pool's size for the database's kind).
    pub fn to_masked_toml(&self) -> String {
        let mut effective = self.clone();
        effective.database.max_connections = Some(self.database.pool_size());
        toml::to_string_pretty(&effective)
            .unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn concurrent_batches_outside_one_to_eight_is_refused_naming_key_and_value() {
        for value in ["0", "9"] {
            let err = load_file(&format!("[store]\nconcurrent_batches = {value}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("store.concurrent_batches = {value}")),
                "{err}"
            );
        }
        let loaded = load_file("", &[]).unwrap();
        assert_eq!(loaded.settings.store.concurrent_batches, 2);
    }

    #[test]
    fn the_pool_is_two_connections_on_sqlite_and_five_on_a_server_unless_set() {
        let sqlite = load_file("", &[]).unwrap().settings.database;
        assert_eq!(sqlite.pool_size(), 2);
        let server = load_file("[database]\nurl = \"postgres://db/jobs\"\n", &[])
            .unwrap()
            .settings
            .database;
        assert_eq!(server.pool_size(), 5);
        assert!(
            load_file("", &[])
                .unwrap()
                .settings
                .to_masked_toml()
                .contains("max_connections = 2"),
            "check-config shows the size chosen"
        );
        let set = load_file("[database]\nmax_connections = 7\n", &[])
            .unwrap()
            .settings
            .database;
        assert_eq!(set.pool_size(), 7);
        let err = load_file("[database]\nmax_connections = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.max_connections = 0"), "{err}");
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
            "spark://m1:6066,m2:6066",
            "http://m1:6066,http://m2:6066",
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
    fn the_masters_rpc_port_is_refused_as_rest_url_naming_the_rest_port() {
        let err = load_file("[spark]\nrest_url = \"spark://localhost:7077\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spark.rest_url = \"spark://localhost:7077\""),
            "{err}"
        );
        assert!(err.contains("RPC port"), "{err}");
        assert!(err.contains("6066"), "{err}");
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

    #[test]
    fn named_clusters_inherit_what_they_do_not_set_and_split_the_pool() {
        let loaded = load_file(
            "[spark]\nmax_concurrent_polls = 9\nrequest_timeout = \"4s\"\n\
             [spark.clusters.east]\nrest_url = \"spark://east-1:6066,east-2:6066\"\n\
             [spark.clusters.west]\nrest_url = \"http://west:6066\"\nrequest_timeout = \"2s\"\npool_share = 0.5\n",
            &[],
        )
        .unwrap();
        let clusters = loaded.settings.spark.clusters();
        let summary: Vec<(Option<&str>, usize, Duration)> = clusters
            .iter()
            .map(|c| (c.name.as_deref(), c.pollers, c.settings.request_timeout))
            .collect();
        assert_eq!(
            summary,
            [
                (None, 3, Duration::from_secs(4)),
                (Some("east"), 3, Duration::from_secs(4)),
                (Some("west"), 5, Duration::from_secs(2)),
            ]
        );
        assert_eq!(
            clusters[1].settings.rest_url,
            "spark://east-1:6066,east-2:6066"
        );
        assert!(loaded.settings.spark.knows_cluster(Some("west")));
        assert!(!loaded.settings.spark.knows_cluster(Some("north")));
    }

    #[test]
    fn a_cluster_is_checked_like_the_default_one_and_named_in_the_message() {
        let err = load_file(
            "[spark.clusters.east]\nrest_url = \"spark://east:7077\"\npool_share = 1.5\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("spark.clusters.east.rest_url"), "{err}");
        assert!(err.contains("RPC port"), "{err}");
        assert!(
            err.contains("spark.clusters.east.pool_share = 1.5"),
            "{err}"
        );
    }

    #[test]
    fn the_default_cluster_cannot_be_named_again() {
        let err = load_file(
            "[spark.clusters.default]\nrest_url = \"http://x:6066\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("spark.clusters.default"), "{err}");
        assert!(err.contains("[spark] itself"), "{err}");
    }

    #[test]
    fn a_cluster_without_a_rest_url_is_refused_naming_the_key() {
        let err = load_file(
            "[spark.clusters.east]\nmaster_ui_url = \"http://x:8080\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("rest_url"), "{err}");
        assert!(err.contains("east"), "{err}");
    }
}
