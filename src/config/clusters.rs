//! `[spark.clusters.<name>]`: further Spark clusters beside the default one (`[spark]`), each
//! with its own masters, credentials and share of the poller pool.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::Secret;
use super::spark::{check_master_ui_url, check_rest_url, BasicAuth, SparkSettings, StatusSource};
use super::validate::Problems;

/// What to call the cluster of rows with no cluster (metrics labels, logs).
pub const DEFAULT_CLUSTER: &str = "default";

/// The longest cluster name: the `cluster` column is `varchar(64)`.
const NAME_MAX: usize = 64;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// The masters' REST servers, in the forms `[spark] rest_url` takes.
    pub rest_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_ui_url: Option<String>,
    /// `spark.master` of the drivers jobwarden submits here; the REST hosts on port 7077
    /// unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// `[spark] status_source` unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_source: Option<StatusSource>,
    /// `[spark] request_timeout` unless set.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_timeout: Option<Duration>,
    /// The most of `max_concurrent_polls` this cluster's polls may hold at once, as a fraction;
    /// an equal split between the clusters unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_share: Option<f64>,
}

/// A cluster as the pollers see it: a name (none for the default) and the settings its client
/// is built from.
pub struct Cluster {
    pub name: Option<String>,
    pub settings: SparkSettings,
    /// Pollers its requests may hold at once.
    pub pollers: usize,
}

impl SparkSettings {
    /// Every cluster, the default first, each with the settings its client needs and its cap
    /// on the pool.
    pub fn clusters(&self) -> Vec<Cluster> {
        let count = 1 + self.clusters.len();
        let pollers = |share: Option<f64>| {
            let share = share.unwrap_or(1.0 / count as f64);
            ((self.max_concurrent_polls as f64 * share).ceil() as usize)
                .clamp(1, self.max_concurrent_polls)
        };
        let mut default = self.clone();
        default.clusters.clear();
        let mut all = vec![Cluster {
            name: None,
            pollers: pollers(self.pool_share),
            settings: default,
        }];
        for (name, cluster) in &self.clusters {
            let mut settings = self.clone();
            settings.clusters.clear();
            settings.rest_url.clone_from(&cluster.rest_url);
            settings.master_ui_url.clone_from(&cluster.master_ui_url);
            settings.master_url.clone_from(&cluster.master_url);
            settings.bearer_token.clone_from(&cluster.bearer_token);
            settings.basic_auth.clone_from(&cluster.basic_auth);
            settings.status_source = cluster.status_source.unwrap_or(self.status_source);
            settings.request_timeout = cluster.request_timeout.unwrap_or(self.request_timeout);
            settings.pool_share = cluster.pool_share;
            all.push(Cluster {
                name: Some(name.clone()),
                pollers: pollers(cluster.pool_share),
                settings,
            });
        }
        all
    }

    /// Whether rows may name this cluster.
    pub fn knows_cluster(&self, name: Option<&str>) -> bool {
        name.is_none_or(|name| self.clusters.contains_key(name))
    }
}

/// Cluster names go into a column, metric labels and URLs: short, plain, and never the
/// default's.
pub fn check_clusters(clusters: &BTreeMap<String, ClusterSettings>, p: &mut Problems) {
    for (name, cluster) in clusters {
        let key = |field: &str| format!("spark.clusters.{name}.{field}");
        let plain = !name.is_empty()
            && name.len() <= NAME_MAX
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            p.refuse(
                &format!("spark.clusters.{name:?}"),
                "(section)",
                "a cluster name is 1 to 64 letters, digits, '-', '_' or '.'",
            );
        }
        if name == DEFAULT_CLUSTER {
            p.refuse(
                "spark.clusters.default",
                "(section)",
                "the default cluster is [spark] itself; give this one another name",
            );
        }
        check_rest_url(p, &key("rest_url"), &cluster.rest_url);
        if let Some(ui) = &cluster.master_ui_url {
            check_master_ui_url(p, &key("master_ui_url"), ui);
        }
        if let Some(timeout) = cluster.request_timeout {
            p.positive(&key("request_timeout"), timeout);
        }
        check_pool_share(p, &key("pool_share"), cluster.pool_share);
        if cluster.bearer_token.is_some() && cluster.basic_auth.is_some() {
            p.refuse(
                &key("basic_auth"),
                "(set)",
                "set either bearer_token or basic_auth for a cluster, not both",
            );
        }
    }
}

pub fn check_pool_share(p: &mut Problems, key: &str, share: Option<f64>) {
    if let Some(share) = share {
        if !(share > 0.0 && share <= 1.0) {
            p.refuse(
                key,
                share.to_string(),
                "a fraction of max_concurrent_polls: more than 0, at most 1",
            );
        }
    }
}
