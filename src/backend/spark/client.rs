//! The HTTP client for a Spark master's REST submission server and web UI.

use std::time::Duration;

use super::answers::{self, preview, DriverStatus, MasterListing, SparkError};
use super::driver_ui::{parse_driver_ui, DriverUi};
use super::state::failure_line;
use crate::config::SparkSettings;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{StatusCode, Url};

/// How much of a driver's stderr head to read when looking for its UI address.
const DRIVER_LOG_HEAD_BYTES: usize = 32 * 1024;

/// Cheap to clone: every clone shares one connection pool.
#[derive(Clone)]
pub struct SparkClient {
    http: reqwest::Client,
    /// Every configured master (one, or an HA group), each with its REST server and web UI.
    masters: std::sync::Arc<Vec<Master>>,
    /// The master that answered as the alive one last: asked first.
    alive: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    timeout: Duration,
    stderr_tail_bytes: usize,
    /// The master's `/json/` as last read: the driver listing, worker lookups and failure
    /// reasons of one moment share one request.
    master_json: std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, bytes::Bytes)>>>,
    master_json_read: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The workers of the last `/json/` they were read from (that very body, kept so its
    /// address cannot be another's): every poll of a running driver looks its worker up, and
    /// a listing of 100,000 drivers must not be read once per poll.
    workers: std::sync::Arc<std::sync::Mutex<Option<ParsedWorkers>>>,
}

type ParsedWorkers = (
    std::time::Instant,
    bytes::Bytes,
    std::sync::Arc<Vec<answers::ListedWorker>>,
);

/// How long the workers list is trusted for finding a running driver's worker: workers come
/// and go far less often than drivers, and a driver on a worker not yet known is looked up
/// again at a later poll.
const WORKERS_TTL: Duration = Duration::from_secs(15);

/// One master of the configured group.
#[derive(Debug, Clone)]
struct Master {
    rest: Url,
    ui: Url,
}

/// How long one read of the master's `/json/` is reused.
const MASTER_JSON_TTL: Duration = Duration::from_secs(1);

/// Longest failure message stored on a row (the meaningful line plus the stderr tail).
const MAX_REASON_CHARS: usize = 8_000;

/// Why a client for the configured Spark master cannot be built; each names its setting.
#[derive(Debug, thiserror::Error)]
pub enum SparkSetupError {
    #[error("spark.rest_url {url:?}: {reason}")]
    RestUrl { url: String, reason: String },
    #[error("spark.master_ui_url {url:?}: {reason}")]
    MasterUiUrl { url: String, reason: String },
    #[error("spark.bearer_token / spark.basic_auth hold characters not allowed in an HTTP header")]
    Credentials,
    #[error("cannot build the HTTP client for Spark: {0}")]
    Http(#[source] reqwest::Error),
    #[error("[spark.clusters.{name}]: {source}")]
    Cluster {
        name: String,
        #[source]
        source: Box<SparkSetupError>,
    },
}

impl SparkClient {
    pub fn new(settings: &SparkSettings) -> Result<Self, SparkSetupError> {
        let rests = rest_base_urls(&settings.rest_url)?;
        let uis: Vec<Url> = match &settings.master_ui_url {
            Some(urls) => {
                let uis = urls
                    .split(',')
                    .map(|url| {
                        Url::parse(url.trim()).map_err(|e| SparkSetupError::MasterUiUrl {
                            url: urls.clone(),
                            reason: e.to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if uis.len() != rests.len() {
                    return Err(SparkSetupError::MasterUiUrl {
                        url: urls.clone(),
                        reason: format!(
                            "names {} master UIs for {} masters in spark.rest_url; give one per master, in the same order",
                            uis.len(),
                            rests.len()
                        ),
                    });
                }
                uis
            }
            None => rests
                .iter()
                .map(|rest| {
                    let mut ui = rest.clone();
                    ui.set_port(Some(8080))
                        .map_err(|_| SparkSetupError::RestUrl {
                            url: settings.rest_url.clone(),
                            reason: "has no host".into(),
                        })?;
                    Ok(ui)
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let masters: Vec<Master> = rests
            .into_iter()
            .zip(uis)
            .map(|(rest, ui)| Master { rest, ui })
            .collect();
        let mut headers = HeaderMap::new();
        let authorization = match (&settings.bearer_token, &settings.basic_auth) {
            (Some(token), _) => Some(format!("Bearer {}", token.expose())),
            (None, Some(basic)) => {
                use base64::Engine as _;
                let pair = format!("{}:{}", basic.username, basic.password.expose());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            (None, None) => None,
        };
        if let Some(authorization) = authorization {
            let mut value =
                HeaderValue::from_str(&authorization).map_err(|_| SparkSetupError::Credentials)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout)
            .pool_max_idle_per_host(settings.max_concurrent_polls.max(1))
            .default_headers(headers)
            .build()
            .map_err(SparkSetupError::Http)?;
        Ok(SparkClient {
            http,
            masters: std::sync::Arc::new(masters),
            alive: Default::default(),
            timeout: settings.request_timeout,
            stderr_tail_bytes: settings.stderr_tail_bytes,
            master_json: Default::default(),
            master_json_read: Default::default(),
            workers: Default::default(),
        })
    }

    /// The masters in the order to ask them: the one alive last time first.
    fn masters_in_turn(&self) -> impl Iterator<Item = (usize, &Master)> {
        let start = self.alive.load(std::sync::atomic::Ordering::Relaxed);
        let n = self.masters.len();
        (0..n).map(move |k| {
            let i = (start + k) % n;
            (i, &self.masters[i])
        })
    }

    pub(super) fn found_alive(&self, index: usize) {
        self.alive
            .store(index, std::sync::atomic::Ordering::Relaxed);
    }

    /// Each master's REST server in the order to ask them, for requests that must reach
    /// at most one of them (a submission).
    pub(super) fn rest_urls_in_turn(&self) -> impl Iterator<Item = (usize, &Url)> {
        self.masters_in_turn().map(|(i, master)| (i, &master.rest))
    }

    pub(super) fn request_timeout(&self) -> Duration {
        self.timeout
    }

    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Whether another master of the group may answer where this one could not.
    fn ask_another(&self, error: &SparkError) -> bool {
        self.masters.len() > 1
            && matches!(
                error,
                SparkError::MasterNotAlive(_)
                    | SparkError::Unreachable { .. }
                    | SparkError::Timeout(_)
            )
    }

    /// `GET MASTER_UI/json/` of the alive master, or its answer of less than a second ago.
    /// With several masters, the first whose status is ALIVE; none alive is
    /// [`SparkError::MasterNotAlive`].
    pub(super) async fn master_json(&self) -> Result<bytes::Bytes, SparkError> {
        if let Some(body) = self.fresh_master_json() {
            return Ok(body);
        }
        // One read at a time: pollers that miss the cache together wait for the first one's
        // answer instead of each asking the master for the same page.
        let _reading = self.master_json_read.lock().await;
        if let Some(body) = self.fresh_master_json() {
            return Ok(body);
        }
        let mut last = None;
        for (i, master) in self.masters_in_turn() {
            let mut url = master.ui.clone();
            url.set_path("/json/");
            let body = match self.get_bytes(url).await {
                Ok(body) => body,
                Err(e) if self.ask_another(&e) => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if self.masters.len() > 1 {
                if let Some(status) = answers::master_status(&body).filter(|s| s != "ALIVE") {
                    last = Some(SparkError::MasterNotAlive(status));
                    continue;
                }
                self.found_alive(i);
            }
            if let Ok(mut cached) = self.master_json.lock() {
                *cached = Some((std::time::Instant::now(), body.clone()));
            }
            return Ok(body);
        }
        Err(last.unwrap_or_else(|| SparkError::MasterNotAlive("unknown".into())))
    }

    fn fresh_master_json(&self) -> Option<bytes::Bytes> {
        let cached = self.master_json.lock().ok()?;
        let (at, body) = cached.as_ref()?;
        (at.elapsed() < MASTER_JSON_TTL).then(|| body.clone())
    }

    /// The first configured master's REST server (for names in logs).
    pub fn rest_base(&self) -> &Url {
        &self.masters[0].rest
    }

    /// Whether any master's REST server answers HTTP at all (any status will do): a REST-off
    /// master has nothing listening on its REST port.
    pub async fn rest_answers(&self) -> bool {
        for master in self.masters.iter() {
            match self.get_bytes(master.rest.clone()).await {
                Ok(_) | Err(SparkError::Http { .. }) => return true,
                Err(_) => continue,
            }
        }
        false
    }

    /// `GET /v1/submissions/status/{id}` on the alive master: a standby's refusal, or a master
    /// out of reach, passes the question to the next master of the group.
    pub async fn status(&self, submission_id: &str) -> Result<DriverStatus, SparkError> {
        let mut last = None;
        for (i, master) in self.masters_in_turn() {
            match self.status_at(master, submission_id).await {
                // A standby's word is worth more than a refused connection: it says a failover
                // is under way, not that the cluster is gone.
                Err(e) if self.ask_another(&e) => {
                    if !matches!(last, Some(SparkError::MasterNotAlive(_))) {
                        last = Some(e);
                    }
                }
                answer => {
                    if answer.is_ok() || matches!(answer, Err(SparkError::UnknownSubmission(_))) {
                        self.found_alive(i);
                    }
                    return answer;
                }
            }
        }
        Err(last.unwrap_or_else(|| SparkError::MasterNotAlive("unknown".into())))
    }

    async fn status_at(
        &self,
        master: &Master,
        submission_id: &str,
    ) -> Result<DriverStatus, SparkError> {
        let url = rest_url(
            &master.rest,
            &["v1", "submissions", "status", submission_id],
        );
        let body = self.get_bytes(url).await?;
        answers::driver_status(&body, submission_id)
    }

    /// `POST /v1/submissions/kill/{id}`; true when Spark accepted the kill.
    pub async fn kill(&self, submission_id: &str) -> Result<bool, SparkError> {
        let alive = &self.masters[self.alive.load(std::sync::atomic::Ordering::Relaxed)];
        let url = rest_url(&alive.rest, &["v1", "submissions", "kill", submission_id]);
        let response = self
            .http
            .post(url.clone())
            .send()
            .await
            .map_err(|e| self.transport(&url, e))?;
        let body = response.text().await.map_err(|e| self.transport(&url, e))?;
        answers::kill_accepted(&body)
    }

    /// Why a FAILED driver failed, read from the tail of its stderr on the worker: the
    /// meaningful line first, then the tail itself.
    pub async fn failure_reason(&self, status: &DriverStatus) -> Result<String, SparkError> {
        let worker = self.worker_ui(status).await?;
        let stderr = self
            .driver_stderr(&worker, &status.submission_id, None, self.stderr_tail_bytes)
            .await?;
        Ok(compose_reason(&stderr))
    }

    /// Where a running driver's UI is, once its log says so (`None` while it is starting).
    pub async fn driver_ui(&self, status: &DriverStatus) -> Result<Option<DriverUi>, SparkError> {
        let worker = self.worker_ui(status).await?;
        let head = self
            .driver_stderr(
                &worker,
                &status.submission_id,
                Some(0),
                DRIVER_LOG_HEAD_BYTES,
            )
            .await?;
        let host = worker.host_str().unwrap_or("127.0.0.1").to_owned();
        Ok(parse_driver_ui(&head, &host))
    }

    /// Share of finished tasks reported by a running driver's UI.
    pub async fn progress(&self, ui: &DriverUi) -> Result<Option<u8>, SparkError> {
        let mut url = Url::parse(&ui.base)
            .map_err(|e| SparkError::Garbage(format!("driver UI {:?}: {e}", ui.base)))?;
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear()
                .extend(["api", "v1", "applications", ui.app_id.as_str(), "jobs"]);
        }
        let body = self.get_text(url).await?;
        answers::ui_progress(&body)
    }

    /// The workers the master's `/json/` lists, parsed once per body, and not read again
    /// while the last list is younger than `max_age`.
    async fn master_workers(
        &self,
        max_age: Duration,
    ) -> Result<std::sync::Arc<Vec<answers::ListedWorker>>, SparkError> {
        let cached = self.workers.lock().ok().and_then(|parsed| parsed.clone());
        if let Some((at, _, workers)) = &cached {
            if at.elapsed() < max_age {
                return Ok(workers.clone());
            }
        }
        let body = self.master_json().await?;
        let workers = match cached {
            Some((_, seen, workers))
                if seen.as_ptr() == body.as_ptr() && seen.len() == body.len() =>
            {
                workers
            }
            _ => std::sync::Arc::new(answers::master_workers(&body)?),
        };
        if let Ok(mut parsed) = self.workers.lock() {
            *parsed = Some((std::time::Instant::now(), body, workers.clone()));
        }
        Ok(workers)
    }

    /// `GET MASTER_UI/json/`: every driver the master knows, with its state and worker, in one
    /// answer that exists whether or not REST is on. A master that is not the alive one lists
    /// nothing authoritative: that is [`SparkError::MasterNotAlive`].
    pub async fn master_listing(&self) -> Result<MasterListing, SparkError> {
        let body = self.master_json().await?;
        answers::master_listing(&body)
    }

    /// Asks every worker the master lists for a driver the master itself no longer knows:
    /// the driver as its worker's page shows it, with that worker's id, or `None` when no
    /// worker lists it. Also says how many workers were asked.
    pub async fn find_on_workers(
        &self,
        submission_id: &str,
    ) -> Result<(Option<(super::worker_page::WorkerDriver, String)>, usize), SparkError> {
        let mut asked = 0;
        // The master forgot the driver: every worker now, none missed for a stale list.
        for worker in self.master_workers(Duration::ZERO).await?.iter() {
            let Ok(mut page) = Url::parse(&worker.webuiaddress) else {
                continue;
            };
            page.set_path("/");
            let html = match self.get_text(page).await {
                Ok(html) => html,
                // A worker that is gone cannot tell; the others may.
                Err(_) => continue,
            };
            asked += 1;
            if let Some(found) = super::worker_page::drivers_on_worker_page(&html)
                .into_iter()
                .find(|d| d.id == submission_id)
            {
                return Ok((Some((found, worker.id.clone())), asked));
            }
        }
        Ok((None, asked))
    }

    /// The web UI of the worker running this driver, from the master's `/json/`.
    async fn worker_ui(&self, status: &DriverStatus) -> Result<Url, SparkError> {
        let worker_id = status
            .worker_id
            .as_deref()
            .ok_or_else(|| SparkError::Garbage("the status names no worker".into()))?;
        let workers = self.master_workers(WORKERS_TTL).await?;
        let worker = workers.iter().find(|w| w.id == worker_id).ok_or_else(|| {
            SparkError::Garbage(format!("the master lists no worker {worker_id}"))
        })?;
        Url::parse(&worker.webuiaddress).map_err(|e| {
            SparkError::Garbage(format!("worker address {:?}: {e}", worker.webuiaddress))
        })
    }

    /// `GET WORKER/log/`: the last `bytes` of the driver's stderr, or from `offset` on.
    pub(super) async fn driver_stderr(
        &self,
        worker: &Url,
        submission_id: &str,
        offset: Option<u64>,
        bytes: usize,
    ) -> Result<String, SparkError> {
        let mut log = worker.clone();
        log.set_path("/log/");
        {
            let mut query = log.query_pairs_mut();
            query
                .append_pair("driverId", submission_id)
                .append_pair("logType", "stderr");
            if let Some(offset) = offset {
                query.append_pair("offset", &offset.to_string());
            }
            query.append_pair("byteLength", &bytes.to_string());
        }
        self.get_text(log).await
    }

    async fn get_text(&self, url: Url) -> Result<String, SparkError> {
        let body = self.get_bytes(url).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The body of a 200 answer as received: JSON is parsed from the bytes, with no text
    /// decoding on the way (the poll path's most frequent request).
    async fn get_bytes(&self, url: Url) -> Result<bytes::Bytes, SparkError> {
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| self.transport(&url, e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport(&url, e))?;
        if status != StatusCode::OK {
            return Err(SparkError::Http {
                status: status.as_u16(),
                body: preview(&String::from_utf8_lossy(&body)).to_owned(),
            });
        }
        Ok(body)
    }

    pub(super) fn transport(&self, url: &Url, e: reqwest::Error) -> SparkError {
        if e.is_timeout() {
            SparkError::Timeout(self.timeout)
        } else {
            SparkError::Unreachable {
                url: format!("{}://{}", url.scheme(), url.authority()),
                detail: crate::error_text::with_causes(&e),
            }
        }
    }
}

pub(super) fn rest_url(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// `spark://h1:6066,h2:6066` (Spark's own multi-master form: the scheme once) or a comma list
/// of URLs, one per master.
fn rest_base_urls(raw: &str) -> Result<Vec<Url>, SparkSetupError> {
    let scheme = raw
        .split("://")
        .next()
        .filter(|_| raw.contains("://"))
        .unwrap_or("spark");
    raw.split(',')
        .map(|part| {
            let part = part.trim();
            if part.contains("://") {
                rest_base_url(part)
            } else {
                rest_base_url(&format!("{scheme}://{part}"))
            }
        })
        .collect()
}

fn rest_base_url(raw: &str) -> Result<Url, SparkSetupError> {
    let http = match raw.strip_prefix("spark://") {
        Some(rest) => format!("http://{rest}"),
        None => raw.to_owned(),
    };
    let refuse = |reason: String| SparkSetupError::RestUrl {
        url: raw.to_owned(),
        reason,
    };
    let url = Url::parse(&http).map_err(|e| refuse(e.to_string()))?;
    if url.host().is_none() {
        return Err(refuse("has no host".into()));
    }
    Ok(url)
}

/// The meaningful line, then the stderr tail, bounded.
pub fn compose_reason(stderr: &str) -> String {
    let line = failure_line(stderr).unwrap_or("driver failed (no exception line in its stderr)");
    let mut reason = format!(
        "{line}\n--- driver stderr (tail) ---\n{}",
        stderr.trim_end()
    );
    if reason.len() > MAX_REASON_CHARS {
        let cut = reason
            .char_indices()
            .map(|(i, _)| i)
            .take_while(|i| *i <= MAX_REASON_CHARS)
            .last()
            .unwrap_or(0);
        reason.truncate(cut);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_scheme_becomes_http() {
        assert_eq!(
            rest_base_url("spark://master:6066").unwrap().as_str(),
            "http://master:6066/"
        );
        assert!(rest_base_url("http://").is_err());
    }

    #[test]
    fn failure_reason_starts_with_the_cause_and_is_bounded() {
        let stderr = include_str!("../../../tests/fixtures/worker-driver-stderr-FAILED.txt");
        let reason = compose_reason(stderr);
        assert!(reason.starts_with(
            "Caused by: java.lang.IllegalStateException: input table missing: s3://bucket/x\n"
        ));
        let huge = "x".repeat(100_000);
        assert!(compose_reason(&huge).len() <= MAX_REASON_CHARS);
    }
}
