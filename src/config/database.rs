//! `[database]`: where jobwarden keeps its rows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::DatabaseUrl;
use super::validate::{Problems, Validate};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a start waits for a database that does not answer before giving up.
    #[serde(with = "humantime_serde")]
    pub startup_wait: Duration,
}

impl Validate for DatabaseSettings {
    fn validate(&self, p: &mut Problems) {
        let url = self.url.expose();
        let scheme = url.split("://").next().unwrap_or_default();
        if !url.contains("://")
            || !matches!(
                scheme,
                "sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb"
            )
        {
            p.refuse(
                "database.url",
                format!("{:?}", self.url.masked()),
                "expected a sqlite://, postgres:// or mysql:// URL",
            );
        }
        if self.max_connections == 0 {
            p.refuse("database.max_connections", "0", "must be at least 1");
        }
        p.positive("database.connect_timeout", self.connect_timeout);
    }
}
