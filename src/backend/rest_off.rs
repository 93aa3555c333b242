//! Refuses a submission up front when the cluster's REST submission server is off: jobwarden
//! submits only through it, so such a job would wait in Queued for ever instead of failing
//! loudly at the one moment someone is there to read why.

use std::collections::BTreeMap;

use crate::backend::spark::{SparkClient, SparkSetupError};
use crate::config::{SparkSettings, StatusSource};

/// What to do about a REST-off master, the same for every refusal.
const WHAT_TO_DO: &str = "enable the REST submission server on the master \
(spark.master.rest.enabled=true, which listens on port 6066 unless spark.master.rest.port says \
otherwise), or submit with spark-submit and track the driver with `jobwarden jobs track` \
(POST /api/v1/jobs with a submission_id)";

/// One cluster as the gate sees it.
struct Gate {
    client: SparkClient,
    /// Configured as REST-off (`status_source = "master_ui"`): refused without asking.
    rest_off: bool,
}

/// Answers "can jobwarden submit to this cluster?" before a submission is accepted.
pub struct SubmitGate {
    clusters: BTreeMap<Option<String>, Gate>,
}

impl SubmitGate {
    /// One client per configured cluster, the default one under `None`.
    pub fn new(settings: &SparkSettings) -> Result<Self, SparkSetupError> {
        let mut clusters = BTreeMap::new();
        for cluster in settings.clusters() {
            let client = SparkClient::new(&cluster.settings).map_err(|e| match &cluster.name {
                Some(name) => SparkSetupError::Cluster {
                    name: name.clone(),
                    source: Box::new(e),
                },
                None => e,
            })?;
            let gate = Gate {
                client,
                rest_off: cluster.settings.status_source == StatusSource::MasterUi,
            };
            clusters.insert(cluster.name, gate);
        }
        Ok(SubmitGate { clusters })
    }

    /// Why jobwarden cannot submit to `cluster` (none: the default one) now, as a message
    /// that says what to do; `None` when it can, or when nobody answers at all: an outage is
    /// waited out (the job is accepted and submitted once Spark is back), only a master that
    /// answers without REST is a reason to refuse.
    pub async fn refusal(&self, cluster: Option<&str>) -> Option<String> {
        let key = cluster.map(str::to_owned);
        let Some(gate) = self.clusters.get(&key) else {
            return Some(format!(
                "no Spark cluster named {:?} is configured; add [spark.clusters.{}] or leave the cluster out for the default one",
                cluster.unwrap_or_default(),
                cluster.unwrap_or_default()
            ));
        };
        let (what, setting) = match cluster {
            None => (
                "the default Spark cluster".to_owned(),
                "[spark] status_source".to_owned(),
            ),
            Some(name) => (
                format!("Spark cluster {name:?}"),
                format!("[spark.clusters.{name}] status_source"),
            ),
        };
        if gate.rest_off {
            return Some(format!(
                "{what} is configured as having its REST submission server off ({setting} = \
                 \"master_ui\"), and jobwarden submits only through it: {WHAT_TO_DO}, then set \
                 {setting} to \"auto\""
            ));
        }
        // Both at once: a REST port that drops packets costs one timeout, not two in a row.
        let (rest, listing) =
            futures::join!(gate.client.rest_answers(), gate.client.master_listing());
        if rest || listing.is_err() {
            return None;
        }
        Some(format!(
            "{what}'s master answers on its web UI but nothing answers on its REST submission \
             port, so jobwarden cannot submit there: {WHAT_TO_DO}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A master UI answering `/json/` as an alive master with no drivers.
    async fn master_ui() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = r#"{"status":"ALIVE","workers":[],"activedrivers":[],"completeddrivers":[]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        url
    }

    /// An address where nothing listens.
    async fn closed_port() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        url
    }

    fn settings(rest: &str, ui: &str, extra: &str) -> SparkSettings {
        toml::from_str(&format!(
            "rest_url = {rest:?}\nmaster_ui_url = {ui:?}\npoll_interval = \"15s\"\n\
             max_concurrent_polls = 2\nrequest_timeout = \"500ms\"\nstuck_timeout = \"10m\"\n\
             queued_timeout = \"10m\"\nmax_backoff = \"1m\"\nstderr_tail_bytes = 4096\n{extra}"
        ))
        .unwrap()
    }

    #[actix_rt::test]
    async fn a_master_that_answers_without_rest_is_refused_with_what_to_do() {
        let gate =
            SubmitGate::new(&settings(&closed_port().await, &master_ui().await, "")).unwrap();
        let message = gate.refusal(None).await.expect("refused");
        assert!(
            message.contains("spark.master.rest.enabled=true"),
            "{message}"
        );
        assert!(message.contains("jobs track"), "{message}");
    }

    #[actix_rt::test]
    async fn a_cluster_configured_as_rest_off_is_refused_without_asking() {
        let nowhere = closed_port().await;
        let extra =
            format!("[clusters.batch]\nrest_url = {nowhere:?}\nstatus_source = \"master_ui\"\n");
        let gate = SubmitGate::new(&settings(&nowhere, &nowhere, &extra)).unwrap();
        let message = gate.refusal(Some("batch")).await.expect("refused");
        assert!(
            message.contains("[spark.clusters.batch] status_source"),
            "{message}"
        );
        assert!(message.contains("6066"), "{message}");
    }

    #[actix_rt::test]
    async fn a_master_whose_rest_port_answers_is_not_refused() {
        // Any HTTP answer on the REST port will do: the fake answers every path.
        let master = master_ui().await;
        let gate = SubmitGate::new(&settings(&master, &master, "")).unwrap();
        assert_eq!(gate.refusal(None).await, None);
    }

    #[actix_rt::test]
    async fn an_outage_is_not_a_refusal() {
        let nowhere = closed_port().await;
        let gate = SubmitGate::new(&settings(&nowhere, &nowhere, "")).unwrap();
        assert_eq!(gate.refusal(None).await, None);
    }
}
