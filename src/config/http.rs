//! `[http]`: health, readiness, metrics and the job API.

use serde::{Deserialize, Serialize};

use super::secret::Secret;
use super::validate::{Problems, Validate};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Where health, readiness, metrics and the job API listen; empty turns the server off.
    pub bind: String,
    /// Required as `Authorization: Bearer …` on `POST` requests when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<Secret>,
    /// Required on the dashboard's pages and the read API (`GET`) when set, as
    /// `Authorization: Bearer …`, or for browsers the cookie `?token=…` sets; never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_token: Option<Secret>,
}

impl Validate for HttpSettings {
    fn validate(&self, p: &mut Problems) {
        if !self.bind.is_empty() && self.bind.parse::<std::net::SocketAddr>().is_err() {
            p.refuse(
                "http.bind",
                format!("{:?}", self.bind),
                "expected host:port such as 127.0.0.1:9464 (or \"\" to turn the server off)",
            );
        }
        if self
            .read_token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            p.refuse(
                "http.read_token",
                "\"\"",
                "expected a non-empty token (or leave the key out to serve the dashboard and the read API without one)",
            );
        }
    }
}
