//! Submitting a driver through a master's REST server, and finding an attempt's driver again by
//! its mark when the answer to a submission was lost. Over half of the file is its tests: every
//! answer a master gives to a submission, and every listing a mark search meets, one case each.

use std::collections::{BTreeMap, HashSet};

use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::answers::{not_alive_state, preview, SparkError};
use super::client::{rest_url, SparkClient};
use crate::domain::{SubmitSpec, MARK_PROPERTY};

/// How much of a driver's stderr head to read for its launch command (and so its mark).
const MARK_LOG_HEAD_BYTES: usize = 32 * 1024;

/// What `create` needs besides the spec: what jobwarden decides for this one attempt.
#[derive(Debug, Clone, Copy)]
pub struct CreateRequest<'a> {
    pub spec: &'a SubmitSpec,
    /// `spark.app.name`, unless the spec sets its own.
    pub app_name: &'a str,
    /// The attempt's mark, carried as [`MARK_PROPERTY`].
    pub mark: &'a str,
    /// The cluster's master URL as the driver must use it (`spark://host:7077,…`, the RPC
    /// port, which the REST address does not tell), unless the spec sets `spark.master`.
    pub spark_master: &'a str,
    pub client_spark_version: &'a str,
}

/// Why a submission has no id, told by what it means for a driver on the cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// No master took the request: none could be reached, or none was the alive one (a
    /// failover under way). Spark certainly started nothing.
    #[error("no Spark master took the submission ({0}); no driver was started")]
    NotSent(String),
    /// Spark answered and refused: nothing started; the message is Spark's.
    #[error("Spark refused the submission: {0}; no driver was started")]
    Rejected(String),
    /// The request went out but no usable answer came back: a driver may exist.
    #[error("the submission was sent but its answer is unusable ({0}); a driver may have been started, look for its mark before submitting again")]
    Unknown(String),
}

impl CreateError {
    /// Whether a driver may have been started: sending again could run the job twice.
    pub fn may_have_started(&self) -> bool {
        matches!(self, CreateError::Unknown(_))
    }
}

/// Whether an attempt's mark was found on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkSearch {
    /// The submission id of the driver carrying the mark.
    Found(String),
    /// Every candidate driver's launch command was read and none carries the mark.
    NotFound,
    /// Some candidate could not be read (why, for the log): the mark may be there.
    Undecided(String),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateWire<'a> {
    action: &'static str,
    app_resource: &'a str,
    main_class: &'a str,
    app_args: &'a [String],
    client_spark_version: &'a str,
    environment_variables: BTreeMap<&'a str, &'a str>,
    spark_properties: BTreeMap<&'a str, &'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatedWire {
    action: Option<String>,
    message: Option<String>,
    success: Option<bool>,
    submission_id: Option<String>,
}

#[derive(Deserialize)]
struct ListingWire {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    activedrivers: Vec<ListedWire>,
    #[serde(default)]
    completeddrivers: Vec<ListedWire>,
    #[serde(default)]
    workers: Vec<WorkerWire>,
}

#[derive(Deserialize)]
struct ListedWire {
    id: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    worker: Option<String>,
    #[serde(default)]
    mainclass: Option<String>,
    #[serde(default)]
    starttime: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WorkerWire {
    id: String,
    webuiaddress: String,
}

impl CreateRequest<'_> {
    fn wire(&self) -> CreateWire<'_> {
        let spec = self.spec;
        let mut environment: BTreeMap<&str, &str> = spec
            .environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // spark-submit's REST client sends it too: the driver's spark-env.sh is not sourced again.
        environment.entry("SPARK_ENV_LOADED").or_insert("1");
        let mut properties: BTreeMap<&str, &str> = spec
            .spark_properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if !self.spark_master.is_empty() {
            properties
                .entry("spark.master")
                .or_insert(self.spark_master);
        }
        properties.entry("spark.app.name").or_insert(self.app_name);
        properties
            .entry("spark.jars")
            .or_insert(spec.app_resource.as_str());
        // Cluster mode is what makes the master run the driver (and so find_marked possible);
        // the mark is how a lost answer is recovered: neither is the spec's to change.
        properties.insert("spark.submit.deployMode", "cluster");
        properties.insert(MARK_PROPERTY, self.mark);
        CreateWire {
            action: "CreateSubmissionRequest",
            app_resource: &spec.app_resource,
            main_class: &spec.main_class,
            app_args: &spec.args,
            client_spark_version: self.client_spark_version,
            environment_variables: environment,
            spark_properties: properties,
        }
    }
}

/// What one master did with a submission.
enum Outcome {
    Created(String),
    /// Nothing reached this master, or it is not the alive one (why): the next may take it.
    Elsewhere(String),
    /// This master has (or may have) acted on it: no other master may be asked.
    Final(CreateError),
}

impl SparkClient {
    /// `POST /v1/submissions/create` to the alive master. A master that could not be reached,
    /// or that says it is not the alive one, passes the submission to the next; once a master
    /// may have received it, no other is asked, so one request never starts two drivers.
    pub async fn create(&self, req: &CreateRequest<'_>) -> Result<String, CreateError> {
        let body = serde_json::to_vec(&req.wire())
            .map_err(|e| CreateError::NotSent(format!("cannot encode the request: {e}")))?;
        let mut reasons = Vec::new();
        for (i, rest) in self.rest_urls_in_turn() {
            let url = rest_url(rest, &["v1", "submissions", "create"]);
            match self.create_at(&url, body.clone()).await {
                Outcome::Created(id) => {
                    self.found_alive(i);
                    return Ok(id);
                }
                Outcome::Final(e) => return Err(e),
                Outcome::Elsewhere(why) => reasons.push(why),
            }
        }
        // A standby's refusal is a failover under way, not a verdict on the submission: like
        // an unreachable master, it is "not sent", to try again later.
        Err(CreateError::NotSent(reasons.join("; ")))
    }

    async fn create_at(&self, url: &Url, body: Vec<u8>) -> Outcome {
        let sent = self
            .http()
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            // Checked before the timeout: a connect timeout also counts as one, yet sent nothing.
            Err(e) if e.is_connect() => {
                return Outcome::Elsewhere(self.transport(url, e).to_string())
            }
            Err(e) => return Outcome::Final(CreateError::Unknown(self.lost_answer(url, &e))),
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => return Outcome::Final(CreateError::Unknown(self.lost_answer(url, &e))),
        };
        let wire = serde_json::from_str::<CreatedWire>(&text).ok();
        let message = wire.as_ref().and_then(|w| w.message.clone());
        if let Some(state) = message.as_deref().and_then(not_alive_state) {
            return Outcome::Elsewhere(format!(
                "{} is not the alive master (state {state})",
                url.authority()
            ));
        }
        let answer = || format!("HTTP {status}, body starts {:?}", preview(&text));
        // A master that failed while handling the request may have queued the driver first.
        if status.is_server_error() {
            return Outcome::Final(CreateError::Unknown(answer()));
        }
        let Some(wire) = wire else {
            return Outcome::Final(if status.is_client_error() {
                CreateError::Rejected(answer())
            } else {
                CreateError::Unknown(answer())
            });
        };
        let refused = status.is_client_error()
            || wire.success == Some(false)
            || wire.action.as_deref() == Some("ErrorResponse");
        match wire.submission_id {
            Some(id) if !refused && status == StatusCode::OK && wire.success == Some(true) => {
                Outcome::Created(id)
            }
            _ if refused => Outcome::Final(CreateError::Rejected(message.unwrap_or_else(answer))),
            _ => Outcome::Final(CreateError::Unknown(answer())),
        }
    }

    /// Why a request that went out has no answer: Spark was reached (the request may have
    /// started a driver), so this is never "cannot reach Spark".
    fn lost_answer(&self, url: &Url, e: &reqwest::Error) -> String {
        let at = format!("{}://{}", url.scheme(), url.authority());
        if e.is_timeout() {
            format!(
                "the request reached {at} but no answer came within {}",
                humantime::format_duration(self.request_timeout())
            )
        } else {
            format!(
                "the request reached {at} but its answer was lost: {}",
                crate::error_text::with_causes(e)
            )
        }
    }

    /// Looks for the driver launched with `mark` among the alive master's drivers of
    /// `main_class` started at `since_ms` or later (and not in `skip`), by the launch command
    /// at the head of each one's stderr. Errors are the master's: ask again later.
    pub async fn find_marked(
        &self,
        main_class: &str,
        since_ms: i64,
        mark: &str,
        skip: &HashSet<String>,
    ) -> Result<MarkSearch, SparkError> {
        let body = self.master_json().await?;
        let listing: ListingWire = serde_json::from_slice(&body)
            .map_err(|e| SparkError::Garbage(format!("master /json/: {e}")))?;
        if let Some(status) = listing.status.as_deref().filter(|s| *s != "ALIVE") {
            return Err(SparkError::MasterNotAlive(status.to_owned()));
        }
        // The closing quote keeps mark "x:1:ab" from matching "x:1:abc".
        let needle = format!("-D{MARK_PROPERTY}={mark}\"");
        let mut seen = HashSet::new();
        let mut undecided = Vec::new();
        let candidates = listing
            .activedrivers
            .iter()
            .chain(&listing.completeddrivers)
            .filter(|d| d.mainclass.as_deref() == Some(main_class))
            .filter(|d| started_ms(d).is_some_and(|t| t >= since_ms))
            .filter(|d| !skip.contains(&d.id));
        for driver in candidates {
            // A relaunched id is listed both as active and as completed.
            if !seen.insert(driver.id.as_str()) {
                continue;
            }
            match self.launch_command(&listing.workers, driver).await {
                Ok(Some(head)) if head.contains(&needle) => {
                    return Ok(MarkSearch::Found(driver.id.clone()))
                }
                Ok(Some(_)) => {}
                // A worker that could not prepare a driver (its jar could not be fetched, say)
                // ends it ERROR without starting its JVM, leaving an empty log: whoever sent
                // it, it never ran, so submitting again cannot make a second run. Waiting for
                // its launch command would wait for good.
                Ok(None) if driver.state.as_deref() == Some("ERROR") => {}
                Ok(None) => undecided.push(format!(
                    "{}: its log does not start with the launch command",
                    driver.id
                )),
                Err(why) => undecided.push(format!("{}: {why}", driver.id)),
            }
        }
        Ok(if undecided.is_empty() {
            MarkSearch::NotFound
        } else {
            MarkSearch::Undecided(undecided.join("; "))
        })
    }

    /// The head of a driver's stderr, whole through its launch command line; `None` when the
    /// log was read and holds no launch command; or why it cannot be read.
    async fn launch_command(
        &self,
        workers: &[WorkerWire],
        driver: &ListedWire,
    ) -> Result<Option<String>, String> {
        let worker_id = driver
            .worker
            .as_deref()
            .filter(|w| *w != "None")
            .ok_or("no worker has it yet")?;
        let worker = workers
            .iter()
            .find(|w| w.id == worker_id)
            .ok_or_else(|| format!("the master lists no worker {worker_id}"))?;
        let address = Url::parse(&worker.webuiaddress)
            .map_err(|e| format!("worker address {:?}: {e}", worker.webuiaddress))?;
        let head = self
            .driver_stderr(&address, &driver.id, Some(0), MARK_LOG_HEAD_BYTES)
            .await
            .map_err(|e| format!("its log: {e}"))?;
        // A missing work dir is answered with an error text, and a launch command longer than
        // the head is cut: neither says the mark is absent.
        let Some(command) = head.find("Launch Command:") else {
            return Ok(None);
        };
        if !head[command..].contains('\n') {
            return Err("its launch command is longer than the log head read".into());
        }
        Ok(Some(head))
    }
}

/// Milliseconds, which Spark writes as a JSON string (a number is taken too).
fn started_ms(driver: &ListedWire) -> Option<i64> {
    match driver.starttime.as_ref()? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::SparkSettings;

    enum Reply {
        Answer(u16, String),
        /// Read the request, then hold the connection without a word.
        Hang,
    }

    type Route = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

    /// A one-purpose HTTP/1.1 server: each request's target (path and query) picks the reply.
    struct FakeServer {
        url: String,
        /// Every request as (target, body).
        seen: Arc<Mutex<Vec<(String, String)>>>,
    }

    impl FakeServer {
        async fn start(route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> FakeServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let route: Route = Arc::new(route);
            let log = seen.clone();
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    tokio::spawn(serve(socket, route.clone(), log.clone()));
                }
            });
            FakeServer { url, seen }
        }

        fn requests(&self) -> Vec<(String, String)> {
            self.seen.lock().unwrap().clone()
        }
    }

    async fn serve(
        mut socket: tokio::net::TcpStream,
        route: Route,
        seen: Arc<Mutex<Vec<(String, String)>>>,
    ) {
        let mut data = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while data.len() < head_end + length {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&chunk[..n]),
            }
        }
        let target = head.split(' ').nth(1).unwrap_or("").to_owned();
        let body = String::from_utf8_lossy(&data[head_end..head_end + length]).into_owned();
        seen.lock().unwrap().push((target.clone(), body));
        match route(&target) {
            Reply::Answer(status, body) => {
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
            Reply::Hang => {
                let _ = socket.read(&mut chunk).await;
            }
        }
    }

    fn client(urls: &[&str]) -> SparkClient {
        let urls = urls.join(",");
        let settings: SparkSettings = toml::from_str(&format!(
            "rest_url = {urls:?}\nmaster_ui_url = {urls:?}\npoll_interval = \"15s\"\n\
             max_concurrent_polls = 2\nrequest_timeout = \"300ms\"\nstuck_timeout = \"10m\"\n\
             queued_timeout = \"10m\"\nmax_backoff = \"1m\"\nstderr_tail_bytes = 4096\n"
        ))
        .unwrap();
        SparkClient::new(&settings).unwrap()
    }

    fn spec() -> SubmitSpec {
        SubmitSpec::from_json(
            r#"{"app_resource":"file:/jobs/a.jar","main_class":"Sleep","args":["3"]}"#,
        )
        .unwrap()
    }

    async fn create(client: &SparkClient, spec: &SubmitSpec) -> Result<String, CreateError> {
        client
            .create(&CreateRequest {
                spec,
                app_name: "nightly",
                mark: "exec-1:1:abcd",
                spark_master: "spark://10.0.0.1:7077",
                client_spark_version: "4.3.0",
            })
            .await
    }

    fn created() -> Reply {
        Reply::Answer(
            200,
            include_str!("../../../tests/fixtures/create-response.json").into(),
        )
    }

    fn standby() -> Reply {
        Reply::Answer(
            200,
            serde_json::json!({
                "action": "CreateSubmissionResponse",
                "message": "Exception from the cluster:\njava.lang.Exception: Current state is not alive: STANDBY. Can only accept driver submissions in ALIVE state.",
                "serverSparkVersion": "4.3.0",
                "success": false
            })
            .to_string(),
        )
    }

    /// An address where nothing listens.
    async fn closed_port() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        url
    }

    #[actix_rt::test]
    async fn a_created_submission_returns_its_id() {
        let spark = FakeServer::start(|_| created()).await;
        let id = create(&client(&[&spark.url]), &spec()).await.unwrap();
        assert_eq!(id, "driver-20261128210232-0000");
        assert_eq!(spark.requests()[0].0, "/v1/submissions/create");
    }

    #[actix_rt::test]
    async fn the_request_carries_the_mark_cluster_mode_and_the_defaults() {
        let spark = FakeServer::start(|_| created()).await;
        create(&client(&[&spark.url]), &spec()).await.unwrap();
        let sent: serde_json::Value = serde_json::from_str(&spark.requests()[0].1).unwrap();
        assert_eq!(sent["action"], "CreateSubmissionRequest");
        assert_eq!(sent["appResource"], "file:/jobs/a.jar");
        assert_eq!(sent["mainClass"], "Sleep");
        assert_eq!(sent["appArgs"], serde_json::json!(["3"]));
        assert_eq!(sent["clientSparkVersion"], "4.3.0");
        assert_eq!(sent["environmentVariables"]["SPARK_ENV_LOADED"], "1");
        let properties = &sent["sparkProperties"];
        assert_eq!(properties[MARK_PROPERTY], "exec-1:1:abcd");
        assert_eq!(properties["spark.submit.deployMode"], "cluster");
        assert_eq!(properties["spark.master"], "spark://10.0.0.1:7077");
        assert_eq!(properties["spark.app.name"], "nightly");
        assert_eq!(properties["spark.jars"], "file:/jobs/a.jar");
    }

    #[actix_rt::test]
    async fn the_specs_own_app_name_and_environment_are_kept() {
        let spark = FakeServer::start(|_| created()).await;
        let mut spec = spec();
        spec.spark_properties
            .insert("spark.app.name".into(), "team-name".into());
        spec.environment
            .insert("SPARK_ENV_LOADED".into(), "0".into());
        spec.environment.insert("TZ".into(), "UTC".into());
        create(&client(&[&spark.url]), &spec).await.unwrap();
        let sent: serde_json::Value = serde_json::from_str(&spark.requests()[0].1).unwrap();
        assert_eq!(sent["sparkProperties"]["spark.app.name"], "team-name");
        assert_eq!(sent["environmentVariables"]["SPARK_ENV_LOADED"], "0");
        assert_eq!(sent["environmentVariables"]["TZ"], "UTC");
    }

    #[actix_rt::test]
    async fn a_refusal_from_spark_is_rejected_with_sparks_message() {
        let spark = FakeServer::start(|_| {
            Reply::Answer(
                200,
                serde_json::json!({
                    "action": "CreateSubmissionResponse",
                    "message": "Driver submission failed: no such jar",
                    "success": false
                })
                .to_string(),
            )
        })
        .await;
        let e = create(&client(&[&spark.url]), &spec()).await.unwrap_err();
        assert_eq!(
            e,
            CreateError::Rejected("Driver submission failed: no such jar".into())
        );
        assert!(!e.may_have_started());
    }

    #[actix_rt::test]
    async fn a_malformed_request_answer_is_rejected() {
        let spark = FakeServer::start(|_| {
            Reply::Answer(
                400,
                include_str!("../../../tests/fixtures/create-bad-request.json").into(),
            )
        })
        .await;
        let e = create(&client(&[&spark.url]), &spec()).await.unwrap_err();
        assert!(
            matches!(&e, CreateError::Rejected(m) if m.starts_with("Malformed request")),
            "{e}"
        );
    }

    #[actix_rt::test]
    async fn a_refused_connection_means_nothing_was_started() {
        let nowhere = closed_port().await;
        let e = create(&client(&[&nowhere]), &spec()).await.unwrap_err();
        assert!(matches!(e, CreateError::NotSent(_)), "{e}");
        assert!(!e.may_have_started());
    }

    #[actix_rt::test]
    async fn a_master_that_never_answers_may_have_started_a_driver() {
        let spark = FakeServer::start(|_| Reply::Hang).await;
        let e = create(&client(&[&spark.url]), &spec()).await.unwrap_err();
        assert!(matches!(e, CreateError::Unknown(_)), "{e}");
        assert!(e.may_have_started());
    }

    #[actix_rt::test]
    async fn a_server_error_may_have_started_a_driver() {
        let spark = FakeServer::start(|_| Reply::Answer(500, "{\"success\":false}".into())).await;
        let e = create(&client(&[&spark.url]), &spec()).await.unwrap_err();
        assert!(matches!(e, CreateError::Unknown(_)), "{e}");
    }

    #[actix_rt::test]
    async fn an_unreadable_success_may_have_started_a_driver() {
        let spark = FakeServer::start(|_| Reply::Answer(200, "<html>proxy</html>".into())).await;
        let e = create(&client(&[&spark.url]), &spec()).await.unwrap_err();
        assert!(matches!(e, CreateError::Unknown(_)), "{e}");
    }

    #[actix_rt::test]
    async fn a_standby_master_passes_the_submission_to_the_next() {
        let first = FakeServer::start(|_| standby()).await;
        let second = FakeServer::start(|_| created()).await;
        let client = client(&[&first.url, &second.url]);
        let id = create(&client, &spec()).await.unwrap();
        assert_eq!(id, "driver-20261128210232-0000");
        assert_eq!((first.requests().len(), second.requests().len()), (1, 1));
        create(&client, &spec()).await.unwrap();
        assert_eq!(
            first.requests().len(),
            1,
            "the master that created it is asked first next time"
        );
    }

    #[actix_rt::test]
    async fn an_unreachable_master_passes_the_submission_to_the_next() {
        let nowhere = closed_port().await;
        let second = FakeServer::start(|_| created()).await;
        let id = create(&client(&[&nowhere, &second.url]), &spec())
            .await
            .unwrap();
        assert_eq!(id, "driver-20261128210232-0000");
    }

    #[actix_rt::test]
    async fn once_a_master_may_have_the_submission_no_other_master_gets_it() {
        let first = FakeServer::start(|_| Reply::Hang).await;
        let second = FakeServer::start(|_| created()).await;
        let e = create(&client(&[&first.url, &second.url]), &spec())
            .await
            .unwrap_err();
        assert!(matches!(e, CreateError::Unknown(_)), "{e}");
        assert!(second.requests().is_empty());
    }

    #[actix_rt::test]
    async fn a_group_without_an_alive_master_started_nothing() {
        let first = FakeServer::start(|_| standby()).await;
        let nowhere = closed_port().await;
        let e = create(&client(&[&first.url, &nowhere]), &spec())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, CreateError::NotSent(m) if m.contains("STANDBY")),
            "{e}"
        );
    }

    const MARK: &str = "exec-1:1:abcd";

    fn launch_log(mark: &str) -> String {
        format!(
            "==== Bytes 0-400 of 400 of /work/driver/stderr ====\nLaunch Command: \"/usr/lib/jvm/java-17/bin/java\" \"-cp\" \"/opt/spark/conf/:/opt/spark/jars/*\" \"-Xmx1024M\" \"-Dspark.jobwarden.attempt={mark}\" \"-Dspark.master=spark://127.0.0.1:7077\" \"org.apache.spark.deploy.worker.DriverWrapper\"\n========================================\n"
        )
    }

    /// A master whose `/json/` lists `drivers` on one worker (this same server), and that
    /// worker's logs, by driver id.
    async fn cluster(
        drivers: serde_json::Value,
        logs: &'static [(&'static str, Option<&'static str>)],
    ) -> FakeServer {
        master_and_worker(drivers, serde_json::json!([]), move |target| {
            for (id, mark) in logs {
                if target.contains(&format!("driverId={id}&")) {
                    return match mark {
                        Some(mark) => Reply::Answer(200, launch_log(mark)),
                        None => Reply::Answer(500, "worker trouble".into()),
                    };
                }
            }
            Reply::Answer(404, "no such page".into())
        })
        .await
    }

    /// A master whose `/json/` lists `active` and `completed` drivers on one worker (this same
    /// server), whose every other page is answered by `worker`.
    async fn master_and_worker(
        active: serde_json::Value,
        completed: serde_json::Value,
        worker: impl Fn(&str) -> Reply + Send + Sync + 'static,
    ) -> FakeServer {
        let address: Arc<Mutex<String>> = Arc::default();
        let own = address.clone();
        let server = FakeServer::start(move |target| {
            if target.starts_with("/json/") {
                let listing = serde_json::json!({
                    "status": "ALIVE",
                    "workers": [{"id": "worker-1", "webuiaddress": own.lock().unwrap().clone()}],
                    "activedrivers": active.clone(),
                    "completeddrivers": completed.clone(),
                });
                return Reply::Answer(200, listing.to_string());
            }
            worker(target)
        })
        .await;
        *address.lock().unwrap() = server.url.clone();
        server
    }

    fn driver(id: &str, worker: &str, class: &str, start: i64) -> serde_json::Value {
        serde_json::json!({
            "id": id, "starttime": start.to_string(), "state": "RUNNING",
            "worker": worker, "mainclass": class,
        })
    }

    async fn search(spark: &FakeServer, skip: &[&str]) -> MarkSearch {
        let skip = skip.iter().map(|s| s.to_string()).collect();
        client(&[&spark.url])
            .find_marked("Sleep", 1_000, MARK, &skip)
            .await
            .unwrap()
    }

    fn log_reads(spark: &FakeServer) -> Vec<String> {
        spark
            .requests()
            .into_iter()
            .map(|(target, _)| target)
            .filter(|t| t.starts_with("/log/"))
            .collect()
    }

    #[actix_rt::test]
    async fn a_driver_whose_launch_command_carries_the_mark_is_found() {
        let spark = cluster(
            serde_json::json!([
                driver("driver-1", "worker-1", "Sleep", 2_000),
                driver("driver-2", "worker-1", "Sleep", 3_000),
            ]),
            &[
                ("driver-1", Some("exec-9:1:ffff")),
                ("driver-2", Some(MARK)),
            ],
        )
        .await;
        assert_eq!(
            search(&spark, &[]).await,
            MarkSearch::Found("driver-2".into())
        );
        assert!(
            log_reads(&spark)[0].contains("offset=0&byteLength=32768"),
            "the head of the log is read: {:?}",
            log_reads(&spark)
        );
    }

    #[actix_rt::test]
    async fn no_candidate_carrying_the_mark_is_not_found() {
        let spark = cluster(
            serde_json::json!([driver("driver-1", "worker-1", "Sleep", 2_000)]),
            &[("driver-1", Some("exec-9:1:ffff"))],
        )
        .await;
        assert_eq!(search(&spark, &[]).await, MarkSearch::NotFound);
    }

    #[actix_rt::test]
    async fn a_mark_that_is_a_prefix_of_another_is_not_found() {
        let spark = cluster(
            serde_json::json!([driver("driver-1", "worker-1", "Sleep", 2_000)]),
            &[("driver-1", Some("exec-1:1:abcde"))],
        )
        .await;
        assert_eq!(search(&spark, &[]).await, MarkSearch::NotFound);
    }

    #[actix_rt::test]
    async fn a_candidate_without_a_worker_leaves_the_search_undecided() {
        let spark = cluster(
            serde_json::json!([
                driver("driver-1", "None", "Sleep", 2_000),
                driver("driver-2", "worker-1", "Sleep", 3_000),
            ]),
            &[("driver-2", Some("exec-9:1:ffff"))],
        )
        .await;
        let answer = search(&spark, &[]).await;
        assert!(
            matches!(&answer, MarkSearch::Undecided(why) if why.contains("driver-1")),
            "{answer:?}"
        );
    }

    #[actix_rt::test]
    async fn a_found_mark_wins_over_an_undecided_candidate() {
        let spark = cluster(
            serde_json::json!([
                driver("driver-1", "None", "Sleep", 2_000),
                driver("driver-2", "worker-1", "Sleep", 3_000),
            ]),
            &[("driver-2", Some(MARK))],
        )
        .await;
        assert_eq!(
            search(&spark, &[]).await,
            MarkSearch::Found("driver-2".into())
        );
    }

    #[actix_rt::test]
    async fn an_unreadable_log_leaves_the_search_undecided() {
        let spark = cluster(
            serde_json::json!([driver("driver-1", "worker-1", "Sleep", 2_000)]),
            &[("driver-1", None)],
        )
        .await;
        assert!(matches!(
            search(&spark, &[]).await,
            MarkSearch::Undecided(_)
        ));
    }

    #[actix_rt::test]
    async fn a_log_without_its_launch_command_leaves_the_search_undecided() {
        let spark = master_and_worker(
            serde_json::json!([driver("driver-1", "worker-1", "Sleep", 2_000)]),
            serde_json::json!([]),
            |_| Reply::Answer(200, "Error: invalid log directory /work/driver-1".into()),
        )
        .await;
        assert!(matches!(
            search(&spark, &[]).await,
            MarkSearch::Undecided(_)
        ));
    }

    /// What a 4.3.0 worker answers for a driver whose jar it could not fetch: state ERROR, and
    /// a stderr of no bytes under the worker's `==== Bytes 0-0 of 0 … ====` header.
    #[actix_rt::test]
    async fn an_errored_driver_whose_log_has_no_launch_command_never_ran_and_is_not_waited_for() {
        let mut failed = driver("driver-1", "worker-1", "Sleep", 2_000);
        failed["state"] = "ERROR".into();
        let spark = master_and_worker(serde_json::json!([]), serde_json::json!([failed]), |_| {
            Reply::Answer(
                200,
                "==== Bytes 0-0 of 0 of /work/driver-1/stderr ====\n".into(),
            )
        })
        .await;
        assert_eq!(search(&spark, &[]).await, MarkSearch::NotFound);
    }

    #[actix_rt::test]
    async fn only_drivers_of_the_class_started_since_and_not_skipped_are_read() {
        let spark = cluster(
            serde_json::json!([
                driver("driver-1", "worker-1", "Other", 2_000),
                driver("driver-2", "worker-1", "Sleep", 999),
                driver("driver-3", "worker-1", "Sleep", 2_000),
                driver("driver-4", "worker-1", "Sleep", 2_000),
            ]),
            &[
                ("driver-1", Some(MARK)),
                ("driver-2", Some(MARK)),
                ("driver-3", Some(MARK)),
                ("driver-4", Some("exec-9:1:ffff")),
            ],
        )
        .await;
        assert_eq!(search(&spark, &["driver-3"]).await, MarkSearch::NotFound);
        let reads = log_reads(&spark);
        assert_eq!(reads.len(), 1, "{reads:?}");
        assert!(reads[0].contains("driverId=driver-4&"), "{reads:?}");
    }

    #[actix_rt::test]
    async fn a_master_that_is_not_alive_is_an_error_to_ask_again_later() {
        let spark =
            FakeServer::start(|_| Reply::Answer(200, "{\"status\":\"STANDBY\"}".into())).await;
        let e = client(&[&spark.url])
            .find_marked("Sleep", 0, MARK, &HashSet::new())
            .await
            .unwrap_err();
        assert!(e.is_outage(), "{e}");
    }
}
