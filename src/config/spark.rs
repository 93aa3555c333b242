//! `[spark]`: the Spark master jobwarden polls, how often, and when it gives up on a job; and
//! `[spark.clusters.<name>]`, further clusters beside that default one, each with its own
//! masters, credentials and share of the poller pool. One module owns the cluster type.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::Secret;
use super::validate::{human, Problems, Validate};
use crate::domain::{PollPolicy, TimeoutPolicy};

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
    /// The masters' RPC address drivers jobwarden submits are told to use (`spark.master`);
    /// defaults to the REST hosts on port 7077, `spark://h1:7077,h2:7077`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_url: Option<String>,
    /// Sent as `Authorization: Bearer …` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// Sent as HTTP basic auth when set (and no bearer token is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// How much of a failed driver's stderr to fetch and keep.
    pub stderr_tail_bytes: usize,
    /// Where drivers' states come from: `auto` (the master UI's `/json/` listing, once per
    /// cycle, and REST per id for what it does not list, when REST answers), `rest` (REST per
    /// id only), `master_ui` (the listing only: masters with REST off).
    #[serde(default)]
    pub status_source: StatusSource,
    /// The most of `max_concurrent_polls` the default cluster's polls may hold at once, when
    /// there are other clusters; an equal split unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_share: Option<f64>,
    /// The most drivers of the default cluster jobwarden starts while others it knows of there
    /// have not ended; unset: no limit. Jobs beyond it wait, in queue order, for a place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
    /// Further clusters, by name; rows name one in their `cluster` column.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clusters: BTreeMap<String, ClusterSettings>,
}

/// See [`SparkSettings::status_source`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusSource {
    #[default]
    Auto,
    Rest,
    MasterUi,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

/// The most pollers (and so Spark requests in flight) one instance runs.
pub const MAX_POOL: usize = 4096;

impl SparkSettings {
    /// `spark.master` for the drivers jobwarden submits: `master_url`, or the REST hosts on
    /// Spark's default RPC port.
    pub fn driver_master(&self) -> String {
        if let Some(url) = &self.master_url {
            return url.clone();
        }
        let hosts: Vec<String> = self
            .rest_url
            .split(',')
            .filter_map(|part| {
                let part = part.trim();
                let part = part.split("://").nth(1).unwrap_or(part);
                let host = part.split(['/', ':']).next()?;
                (!host.is_empty()).then(|| format!("{host}:7077"))
            })
            .collect();
        format!("spark://{}", hosts.join(","))
    }

    pub fn poll_policy(&self) -> PollPolicy {
        PollPolicy {
            interval: self.poll_interval,
            max_backoff: self.max_backoff,
        }
    }

    pub fn timeout_policy(&self) -> TimeoutPolicy {
        TimeoutPolicy {
            stuck_timeout: self.stuck_timeout,
            queued_timeout: self.queued_timeout,
            max_runtime: self.max_runtime,
        }
    }

    /// How long a working scheduler can go without a sign of progress: a tick comes every
    /// interval, and a poll it waits for ends within two request timeouts.
    pub fn scheduler_stale_after(&self) -> Duration {
        let longest = self
            .clusters
            .values()
            .filter_map(|c| c.request_timeout)
            .fold(self.request_timeout, Duration::max);
        self.poll_interval * 2 + longest * 2 + Duration::from_secs(1)
    }
}

impl Validate for SparkSettings {
    fn validate(&self, p: &mut Problems) {
        check_rest_url(p, "spark.rest_url", &self.rest_url);
        p.positive("spark.poll_interval", self.poll_interval);
        p.positive("spark.request_timeout", self.request_timeout);
        p.positive("spark.stuck_timeout", self.stuck_timeout);
        p.positive("spark.queued_timeout", self.queued_timeout);
        p.positive("spark.max_backoff", self.max_backoff);
        if self.max_concurrent_polls == 0 {
            p.refuse("spark.max_concurrent_polls", "0", "must be at least 1");
        }
        if self.max_concurrent_polls > MAX_POOL {
            p.refuse(
                "spark.max_concurrent_polls",
                self.max_concurrent_polls.to_string(),
                "must be at most 4096",
            );
        }
        if self.stderr_tail_bytes == 0 || self.stderr_tail_bytes > 1024 * 1024 {
            p.refuse(
                "spark.stderr_tail_bytes",
                self.stderr_tail_bytes.to_string(),
                "must be between 1 and 1048576",
            );
        }
        if self.bearer_token.is_some() && self.basic_auth.is_some() {
            p.refuse(
                "spark.basic_auth",
                "(set)",
                "set either spark.bearer_token or spark.basic_auth, not both",
            );
        }
        if let Some(ui) = &self.master_ui_url {
            check_master_ui_url(p, "spark.master_ui_url", ui);
        }
        check_pool_share(p, "spark.pool_share", self.pool_share);
        check_max_running(p, "spark.max_running", self.max_running);
        check_clusters(&self.clusters, p);
    }
}

/// A REST URL in one of the forms jobwarden takes, and not the master's RPC port.
pub(super) fn check_rest_url(p: &mut Problems, key: &str, rest: &str) {
    // Spark's own multi-master form names the scheme once: spark://h1:6066,h2:6066.
    let scheme = rest.split("://").next().filter(|_| rest.contains("://"));
    let parts: Vec<String> = rest
        .split(',')
        .map(|part| {
            let part = part.trim();
            match scheme {
                Some(scheme) if !part.contains("://") => format!("{scheme}://{part}"),
                _ => part.to_owned(),
            }
        })
        .collect();
    let parsed = |part: &str| url::Url::parse(&part.replacen("spark://", "http://", 1));
    let rest_ok = parts.iter().all(|part| {
        ["spark://", "http://", "https://"]
            .iter()
            .any(|prefix| part.starts_with(prefix))
            && parsed(part).map(|u| u.host().is_some()).unwrap_or(false)
    });
    if !rest_ok {
        p.refuse(
            key,
            format!("{rest:?}"),
            "expected spark://host:6066, http(s)://host:port, or several masters as spark://host1:6066,host2:6066",
        );
    } else if parts
        .iter()
        .any(|part| parsed(part).is_ok_and(|u| u.port() == Some(7077)))
    {
        // The master URL teams know is the RPC port; the status API is elsewhere.
        p.refuse(
            key,
            format!("{rest:?}"),
            "7077 is the master's RPC port (the spark.master URL jobs are submitted to), not \
             its REST submission server, which listens on 6066 by default \
             (spark.master.rest.port; on Spark 3.5 it is off unless spark.master.rest.enabled \
             = true): use spark://host:6066",
        );
    }
}

pub(super) fn check_master_ui_url(p: &mut Problems, key: &str, ui: &str) {
    if !ui.starts_with("http://") && !ui.starts_with("https://") {
        p.refuse(key, format!("{ui:?}"), "expected an http(s):// URL");
    }
}

impl SparkSettings {
    /// Combinations that work but are probably not what the operator meant.
    pub fn warnings(&self, out: &mut Vec<String>) {
        if self.request_timeout > self.poll_interval {
            out.push(format!(
                "spark.request_timeout ({}) is longer than spark.poll_interval ({}): a hung poll outlives its tick",
                human(self.request_timeout),
                human(self.poll_interval)
            ));
        }
        if self.stuck_timeout < self.poll_interval * 2 {
            out.push(format!(
                "spark.stuck_timeout ({}) is under two poll intervals ({}): one slow answer could time a job out",
                human(self.stuck_timeout),
                human(self.poll_interval)
            ));
        }
    }
}

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
    /// `[spark] max_running` for this cluster; unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
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
            settings.max_running = cluster.max_running;
            all.push(Cluster {
                name: Some(name.clone()),
                pollers: pollers(cluster.pool_share),
                settings,
            });
        }
        all
    }

    /// Each cluster's `max_running`, the default cluster under `None`; clusters without a
    /// limit are absent.
    pub fn capacities(&self) -> std::collections::HashMap<Option<String>, u64> {
        self.clusters()
            .into_iter()
            .filter_map(|c| Some((c.name, u64::from(c.settings.max_running?))))
            .collect()
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
        check_max_running(p, &key("max_running"), cluster.max_running);
        if cluster.bearer_token.is_some() && cluster.basic_auth.is_some() {
            p.refuse(
                &key("basic_auth"),
                "(set)",
                "set either bearer_token or basic_auth for a cluster, not both",
            );
        }
    }
}

/// A capacity of 0 would keep every job of the cluster waiting for ever.
fn check_max_running(p: &mut Problems, key: &str, max: Option<u32>) {
    if max == Some(0) {
        p.refuse(
            key,
            "0",
            "must be at least 1 (leave it out for no limit); with 0 no job would ever be submitted there",
        );
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
