//! The dashboard in a real headless Chromium (driven through chromedriver by WebDriver)
//! against the real `jobwarden` binary, with jobs moved by a Spark-protocol server and rows
//! another program would write put straight into the database. Each page test saves a
//! screenshot into `target/screenshots/`. Without Chromium the browser tests are skipped with
//! a printed reason, except under CI, where they fail. Other tests read pages over plain HTTP,
//! from the binary or from the server started in the test's process, or call the dashboard's
//! queries directly, on every database.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use jobwarden_testkit::{Answer, SparkServer};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{json, Value};

use crate::binary::{jobwarden_in, workdir, Running};
use crate::helpers::{require_all_backends, wait_until};

const WAIT: Duration = Duration::from_secs(40);

/// The flags without which Chromium stalls on a machine with no network, or refuses to run
/// as root in a container.
const CHROMIUM_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
    "--hide-scrollbars",
];

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Headless Chromium behind its own chromedriver; both end with this value.
struct Browser {
    client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

/// chromedriver in a process group of its own: dropping this ends it and the Chromium it
/// started, also when a test fails before the browser is up.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this value started, by its id.
        unsafe {
            libc::kill(-(self.0.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

impl Browser {
    /// A browser, or `None` (with the reason printed) where Chromium is not installed, except
    /// under CI, where that fails the test.
    async fn start() -> Option<Browser> {
        Browser::start_with(&[]).await
    }

    async fn start_with(extra_flags: &[&str]) -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver"))
        else {
            assert!(
                !require_all_backends(),
                "CI must run the dashboard's browser tests: install Chromium with `bash .ci/chromium.sh`"
            );
            eprintln!("SKIPPED dashboard browser test: chromium or chromedriver is not on PATH (run `bash .ci/chromium.sh`)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut driver = Command::new(chromedriver);
        driver
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that ending it ends the Chromium it started too.
        std::os::unix::process::CommandExt::process_group(&mut driver, 0);
        let driver = Driver(driver.spawn().expect("chromedriver starts"));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait_until(WAIT, "chromedriver to be ready", || {
            let status = http.get(format!("{url}/status")).send();
            async move {
                match status.await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            }
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra_flags.iter().map(|f| f.to_string()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Some(Browser {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Waits until `script` (a function body) returns true in the page.
    async fn wait_for(&self, what: &str, script: &str) {
        let client = self.client.clone();
        wait_until(WAIT, what, || {
            let client = client.clone();
            async move {
                client
                    .execute(script, vec![])
                    .await
                    .ok()
                    .and_then(|v| v.as_bool())
                    == Some(true)
            }
        })
        .await;
    }

    async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css:?} on the page: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Saves what the page shows into `target/screenshots/<name>.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshots();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// `target/screenshots`, beside the build.
fn screenshots() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("screenshots")
}

/// The real binary on a fresh SQLite file, polling `spark` every second.
struct Service {
    base: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    _running: Running,
}

impl Service {
    fn start(spark: &SparkServer, env: &[(&str, &str)]) -> Service {
        let dir = workdir();
        let mut running = jobwarden_in(dir.path())
            .env("JOBWARDEN__SPARK__REST_URL", spark.url())
            .env("JOBWARDEN__SPARK__MASTER_UI_URL", spark.url())
            .env("JOBWARDEN__SPARK__POLL_INTERVAL", "1s")
            .envs(env.iter().copied())
            .start();
        Service {
            base: running.http_url(),
            http: reqwest::Client::new(),
            dir,
            _running: running,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A second connection to the service's database, as another program would have.
    async fn database(&self) -> DatabaseConnection {
        let file = self.dir.path().join("jobwarden.db");
        Database::connect(format!("sqlite://{}?mode=rw", file.display()))
            .await
            .unwrap()
    }

    async fn track(&self, id: &str, name: &str) {
        let body = json!({ "execution_id": id, "submission_id": format!("driver-{id}"), "job_name": name });
        let response = self
            .http
            .post(self.url("/api/v1/jobs"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "tracking {id}");
    }

    async fn status_of(&self, id: &str) -> String {
        let job: Value = self
            .http
            .get(self.url(&format!("/api/v1/jobs/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        job["job"]["status"].as_str().unwrap_or_default().to_owned()
    }

    async fn wait_for_status(&self, id: &str, status: &str) {
        wait_until(WAIT, &format!("{id} to be {status}"), || async {
            self.status_of(id).await == status
        })
        .await;
    }
}

/// A queue job with one transition, as the Kafka listener would have written it.
async fn insert_queue_job(db: &DatabaseConnection, id: &str, status: &str, error: &str) {
    db.execute_unprepared(&format!(
        "INSERT INTO transformation_job_queue (job_id, status, error_message) VALUES ('{id}', '{status}', '{error}'); \
         INSERT INTO job_status_history (job_kind, job_id, from_status, to_status, source, at) \
         VALUES ('queue', '{id}', 'Pending', '{status}', 'kafka_event', strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))"
    ))
    .await
    .unwrap();
}

#[actix_rt::test]
async fn jobs_page_shows_each_job_with_status_text_progress_and_eta() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let spark = SparkServer::start().await;
    let service = Service::start(&spark, &[]);
    // A finished run of "nightly-etl" gives the running one an ETA; "fresh" has none yet.
    spark.answer("driver-etl-1", Answer::State("RUNNING"));
    service.track("etl-1", "nightly-etl").await;
    service.wait_for_status("etl-1", "Running").await;
    spark.answer("driver-etl-1", Answer::State("FINISHED"));
    service.wait_for_status("etl-1", "Succeeded").await;
    spark.answer("driver-etl-2", Answer::State("RUNNING"));
    spark.answer("driver-fresh-1", Answer::State("RUNNING"));
    spark.answer("driver-broken-1", Answer::State("FAILED"));
    service.track("etl-2", "nightly-etl").await;
    service.track("fresh-1", "fresh").await;
    service.track("broken-1", "broken").await;
    for (id, status) in [
        ("etl-2", "Running"),
        ("fresh-1", "Running"),
        ("broken-1", "Failed"),
    ] {
        service.wait_for_status(id, status).await;
    }
    insert_queue_job(&service.database().await, "enrich-7", "Completed", "").await;

    browser.open(&service.url("/")).await;
    for id in ["etl-1", "etl-2", "fresh-1", "broken-1", "enrich-7"] {
        let row = browser.text(&format!("tr[data-id='{id}']")).await;
        assert!(!row.is_empty(), "{id} is listed");
    }
    assert_eq!(browser.text("tr[data-id='etl-1'] .st").await, "Succeeded");
    assert_eq!(browser.text("tr[data-id='broken-1'] .st").await, "Failed");
    assert_eq!(
        browser.text("tr[data-id='enrich-7'] .st").await,
        "Completed"
    );
    assert!(browser
        .text("tr[data-id='enrich-7'] .kind")
        .await
        .contains("QUEUE"));
    let failed = browser.text("tr[data-id='broken-1'] td.error").await;
    assert!(failed.contains("input table missing"), "{failed}");
    let progress = browser
        .eval("return document.querySelector(\"tr[data-id='etl-1'] progress\").value")
        .await;
    assert_eq!(progress, json!(100));
    let eta = browser.text("tr[data-id='etl-2'] td.eta").await;
    assert!(
        eta.contains("of 1 run"),
        "ETA from the one earlier run: {eta}"
    );
    let eta = browser.text("tr[data-id='fresh-1'] td.eta").await;
    assert_eq!(eta, "no history yet");
    browser.screenshot("jobs").await;
    browser.close().await;
}

#[actix_rt::test]
async fn job_page_shows_the_timeline_failure_reason_and_last_poll() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let spark = SparkServer::start().await;
    let service = Service::start(&spark, &[]);
    spark.answer("driver-nightly-9", Answer::State("RUNNING"));
    service.track("nightly-9", "nightly rollup").await;
    service.wait_for_status("nightly-9", "Running").await;
    spark.answer("driver-nightly-9", Answer::State("FAILED"));
    service.wait_for_status("nightly-9", "Failed").await;

    browser
        .open(&service.url("/job?kind=spark&id=nightly-9"))
        .await;
    assert_eq!(browser.text("h1").await, "Spark execution nightly-9");
    let timeline = browser.text("table.timeline").await;
    assert!(
        timeline.contains("(new)\n→ Queued") || timeline.contains("(new) → Queued"),
        "{timeline}"
    );
    assert!(
        timeline.contains("Running → Failed") || timeline.contains("Running\n→ Failed"),
        "{timeline}"
    );
    assert!(timeline.contains("spark_poll"), "{timeline}");
    let reason = browser.text("pre#failure").await;
    assert!(
        reason.contains("input table missing: s3://bucket/x"),
        "{reason}"
    );
    let facts = browser.text("[data-live='job']").await;
    assert!(
        facts.contains("Spark state (raw)") && facts.contains("FAILED"),
        "{facts}"
    );
    assert!(facts.contains("Last poll that changed the row"), "{facts}");
    assert!(facts.contains("Last poll error"), "{facts}");
    browser.screenshot("job-failed").await;
    browser.close().await;
}

#[actix_rt::test]
async fn health_page_shows_the_database_each_spark_cluster_and_the_store() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let spark = SparkServer::start().await;
    let service = Service::start(&spark, &[]);
    spark.answer("driver-h-1", Answer::State("RUNNING"));
    service.track("h-1", "health check").await;
    service.wait_for_status("h-1", "Running").await;

    browser.open(&service.url("/health")).await;
    let database = browser.text("#database").await;
    assert!(
        database.contains("Answers now") && database.contains("up"),
        "{database}"
    );
    browser
        .wait_for(
            "the default cluster to show as up",
            "return (document.querySelector(\"tr[data-cluster='default']\") || {}).textContent.includes('up')",
        )
        .await;
    let pollers = browser.text("#pollers").await;
    assert!(pollers.contains("of 5"), "{pollers}");
    let store = browser.text("#store").await;
    assert!(
        store.contains("Commit time") && store.contains("on average"),
        "{store}"
    );
    assert!(browser.text("#kafka").await.contains("Not configured"));
    assert!(browser.text("#restarts").await.contains("None since start"));
    browser.screenshot("health").await;
    browser.close().await;
}

#[actix_rt::test]
async fn dead_letters_page_shows_payloads_escaped_and_binary_as_hex() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let spark = SparkServer::start().await;
    let service = Service::start(&spark, &[]);
    service
        .database()
        .await
        .execute_unprepared(
            "INSERT INTO dead_letters (source, topic, partition, \"offset\", key, payload, error, received_at) VALUES \
             ('kafka', 'transformation-job-status', 0, 41, CAST('job-41' AS BLOB), X'00FF10EE', 'payload is not UTF-8 JSON', strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')), \
             ('kafka', 'transformation-job-status', 1, 42, NULL, CAST('{\"jobId\":\"<script>window.__pwned=1</script>\"}' AS BLOB), 'unknown status', strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))",
        )
        .await
        .unwrap();

    browser.open(&service.url("/dead-letters")).await;
    let rows = browser.text("table.dead-letters tbody").await;
    assert!(rows.contains("00 ff 10 ee"), "binary as hex: {rows}");
    assert!(
        rows.contains("offset 41") && rows.contains("offset 42"),
        "{rows}"
    );
    assert!(
        rows.contains("payload is not UTF-8 JSON") && rows.contains("unknown status"),
        "{rows}"
    );
    assert!(
        rows.contains("{\"jobId\":\"<script>window.__pwned=1</script>\"}"),
        "text as text: {rows}"
    );
    assert_eq!(
        browser.eval("return window.__pwned === undefined").await,
        json!(true)
    );
    browser.screenshot("dead-letters").await;
    browser.close().await;
}

#[actix_rt::test]
async fn a_row_changed_while_the_page_is_open_appears_without_reload() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let spark = SparkServer::start().await;
    let service = Service::start(&spark, &[]);
    spark.answer("driver-live-1", Answer::State("RUNNING"));
    service.track("live-1", "live").await;
    service.wait_for_status("live-1", "Running").await;

    browser.open(&service.url("/")).await;
    assert_eq!(browser.text("tr[data-id='live-1'] .st").await, "Running");
    // Gone if the page were loaded again.
    browser
        .eval("window.__sameDocument = true; return true")
        .await;
    spark.answer("driver-live-1", Answer::State("FINISHED"));
    browser
        .wait_for(
            "the row to turn Succeeded on the open page",
            "const badge = document.querySelector(\"tr[data-id='live-1'] .st\"); return !!badge && badge.textContent === 'Succeeded'",
        )
        .await;
    assert_eq!(
        browser.eval("return window.__sameDocument === true").await,
        json!(true)
    );
    let live = browser.text("#live-status").await;
    assert!(live.starts_with("live"), "{live}");
    browser.close().await;
}

#[actix_rt::test]
async fn script_tags_in_a_job_name_and_an_error_render_as_text() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let spark = SparkServer::start().await;
    let service = Service::start(&spark, &[]);
    let name = "<script>window.__pwned=1</script>\"><img src=x onerror=\"window.__pwned=2\">";
    let error = "<script>window.__pwned=3</script> failed";
    spark.answer("driver-xss-1", Answer::State("FAILED"));
    service.track("xss-1", name).await;
    service.wait_for_status("xss-1", "Failed").await;
    service
        .database()
        .await
        .execute_unprepared(&format!(
            "UPDATE spark_job_executions SET error_message = '{error}' WHERE execution_id = 'xss-1'"
        ))
        .await
        .unwrap();

    let analytics = format!(
        "/analytics/job?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("name", name)
            .finish()
    );
    for page in ["/", "/job?kind=spark&id=xss-1", analytics.as_str()] {
        browser.open(&service.url(page)).await;
        let shown = browser.text("main").await;
        assert!(shown.contains(name), "the name as text on {page}: {shown}");
        assert!(
            shown.contains(error),
            "the error as text on {page}: {shown}"
        );
        let scripts = browser
            .eval("return Array.from(document.scripts).map(s => s.src)")
            .await;
        assert_eq!(
            scripts.as_array().map(Vec::len),
            Some(1),
            "only the dashboard's script: {scripts}"
        );
        assert_eq!(
            browser.eval("return document.images.length").await,
            json!(0)
        );
        assert_eq!(
            browser.eval("return window.__pwned === undefined").await,
            json!(true)
        );
    }
    browser.close().await;
}

#[actix_rt::test]
async fn read_token_refuses_pages_and_the_read_api_without_it_and_accepts_it() {
    let spark = SparkServer::start().await;
    let service = Service::start(&spark, &[("JOBWARDEN__HTTP__READ_TOKEN", "r3ad-only")]);
    // Redirects are followed by hand: the cookie the first answer sets is the point.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| http.get(service.url(path));

    for path in [
        "/",
        "/health",
        "/dead-letters",
        "/analytics",
        "/live/",
        "/api/v1/jobs",
        "/api/v1/analytics",
    ] {
        let refused = get(path).send().await.unwrap();
        assert_eq!(refused.status().as_u16(), 401, "{path} without the token");
        let wrong = get(path).bearer_auth("guess").send().await.unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{path} with a wrong token");
        let accepted = get(path).bearer_auth("r3ad-only").send().await.unwrap();
        assert_eq!(accepted.status().as_u16(), 200, "{path} with the token");
    }
    let page = get("/").send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("name=\"token\""),
        "the refusal asks for the token: {page}"
    );

    let opened = get("/?status=Failed&token=r3ad-only").send().await.unwrap();
    assert_eq!(opened.status().as_u16(), 303);
    assert_eq!(opened.headers()["location"], "/?status=Failed");
    let cookie = opened.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    for path in ["/?status=Failed", "/live/?status=Failed", "/api/v1/jobs"] {
        let with_cookie = get(path).header("cookie", &pair).send().await.unwrap();
        assert_eq!(with_cookie.status().as_u16(), 200, "{path} with the cookie");
    }
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/assets/dashboard.css?v=1",
    ] {
        assert_eq!(
            get(path).send().await.unwrap().status().as_u16(),
            200,
            "{path} stays open"
        );
    }
}

#[actix_rt::test]
async fn pages_are_complete_without_javascript() {
    let spark = SparkServer::start().await;
    let service = Service::start(&spark, &[]);
    spark.answer("driver-plain-1", Answer::State("RUNNING"));
    service.track("plain-1", "plain <b>name</b>").await;
    service.wait_for_status("plain-1", "Running").await;
    let html = |path: &'static str| {
        let request = service.http.get(service.url(path));
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let jobs = html("/").await;
    assert!(jobs.contains("data-id=\"plain-1\""), "{jobs}");
    assert!(jobs.contains("plain &lt;b&gt;name&lt;/b&gt;"), "{jobs}");
    assert!(jobs.contains(">Running<"), "{jobs}");
    let job = html("/job?kind=spark&id=plain-1").await;
    assert!(
        job.contains("Timeline") && job.contains("tracking submission driver-plain-1"),
        "{job}"
    );
    let health = html("/health").await;
    assert!(
        health.contains("Spark clusters") && health.contains("Pollers"),
        "{health}"
    );
    assert!(html("/dead-letters").await.contains("No dead letters"));
}

#[actix_rt::test]
async fn live_updates_answer_not_modified_while_nothing_changed() {
    let spark = SparkServer::start().await;
    let service = Service::start(&spark, &[]);
    spark.answer("driver-quiet-1", Answer::State("FINISHED"));
    service.track("quiet-1", "quiet").await;
    service.wait_for_status("quiet-1", "Succeeded").await;
    let first = service
        .http
        .get(service.url("/live/dead-letters"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = first.json().await.unwrap();
    assert!(body["regions"]["letters"]
        .as_str()
        .unwrap()
        .contains("No dead letters"));
    for path in ["/live/dead-letters", "/live/job?kind=spark&id=quiet-1"] {
        let again = |tag: String| {
            service
                .http
                .get(service.url(path))
                .header("if-none-match", tag)
                .send()
        };
        let tag = if path == "/live/dead-letters" {
            etag.clone()
        } else {
            let r = service.http.get(service.url(path)).send().await.unwrap();
            r.headers()["etag"].to_str().unwrap().to_owned()
        };
        let unchanged = again(tag).await.unwrap();
        assert_eq!(unchanged.status().as_u16(), 304, "{path}");
        assert!(unchanged.bytes().await.unwrap().is_empty());
    }
}

crate::on_every_database!(
    last_change_lists_each_job_once_newest_first_and_filters_it,
    dead_letter_previews_read_the_start_of_each_payload,
    a_retrying_jobs_page_shows_its_attempts_escaped_reason_and_next_attempt,
);

async fn last_change_lists_each_job_once_newest_first_and_filters_it(db: crate::helpers::TestDb) {
    use entity::{job_status_history as history, transformation_job_queue as queue};
    use jobwarden::store::dashboard_read::{jobs_by_last_change, JobFilter, Kind};
    use jobwarden::store_api::{Source, StoreHandle, TrackRequest, WriteOp};
    use sea_orm::{ActiveValue::Set, EntityTrait};

    let settings = crate::helpers::settings_for(&db.url);
    let store = StoreHandle::from(&crate::helpers::launch_store(db.db.clone(), &settings));
    for (id, name) in [("e1", "Nightly-A"), ("e2", "other"), ("e3", "other 50%")] {
        store
            .write(WriteOp::Track(TrackRequest {
                spec: None,
                execution_id: id.into(),
                submission_id: Some(format!("driver-{id}")),
                job_name: Some(name.into()),
                cluster: None,
                source: Source::Api,
                after: Vec::new(),
                priority: 0,
                allowed: None,
            }))
            .await
            .unwrap();
    }
    let now = chrono::Utc::now();
    queue::Entity::insert(queue::ActiveModel {
        job_id: Set("q1".into()),
        status: Set("Processing".into()),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    })
    .exec(&db.db)
    .await
    .unwrap();
    // A later transition of e1 puts it first; its earlier one is not listed again.
    for (kind, id, to) in [("queue", "q1", "Processing"), ("spark", "e1", "Queued")] {
        history::Entity::insert(history::ActiveModel {
            job_kind: Set(kind.into()),
            job_id: Set(id.into()),
            from_status: Set(None),
            to_status: Set(to.into()),
            source: Set("api".into()),
            detail: Set(None),
            at: Set(now),
            ..Default::default()
        })
        .exec(&db.db)
        .await
        .unwrap();
    }
    let ids = |filter: JobFilter| {
        let db = db.db.clone();
        async move {
            let page = jobs_by_last_change(&db, &filter, None).await.unwrap();
            page.jobs
                .iter()
                .map(|(row, _)| row.id().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(JobFilter::default()).await, ["e1", "q1", "e3", "e2"]);
    let kind = |kind| JobFilter {
        kind: Some(kind),
        ..JobFilter::default()
    };
    assert_eq!(ids(kind(Kind::Queue)).await, ["q1"]);
    assert_eq!(ids(kind(Kind::Spark)).await, ["e1", "e3", "e2"]);
    let named = |name: &str| JobFilter {
        name: Some(name.into()),
        ..JobFilter::default()
    };
    assert_eq!(ids(named("nightly")).await, ["e1"]);
    assert_eq!(ids(named("50%")).await, ["e3"]);
    assert_eq!(ids(named("5_%")).await, Vec::<String>::new());
    let status = |status: &str| JobFilter {
        status: Some(status.into()),
        ..JobFilter::default()
    };
    assert_eq!(ids(status("Processing")).await, ["q1"]);
    assert_eq!(ids(status("Queued")).await, ["e1", "e3", "e2"]);
    let default_cluster = JobFilter {
        cluster: Some(None),
        ..JobFilter::default()
    };
    assert_eq!(ids(default_cluster).await, ["e1", "e3", "e2"]);
}

async fn dead_letter_previews_read_the_start_of_each_payload(db: crate::helpers::TestDb) {
    use entity::dead_letters;
    use jobwarden::store::dashboard_read::{dead_letters as previews, PREVIEW_BYTES};
    use sea_orm::{ActiveValue::Set, EntityTrait};

    for (offset, payload) in [(7, vec![0xffu8; 5_000]), (8, b"{\"jobId\":1}".to_vec())] {
        dead_letters::Entity::insert(dead_letters::ActiveModel {
            source: Set("kafka".into()),
            topic: Set(Some("t".into())),
            partition: Set(Some(0)),
            offset: Set(Some(offset)),
            key: Set(None),
            payload: Set(payload),
            error: Set("unparseable".into()),
            received_at: Set(chrono::Utc::now()),
            ..Default::default()
        })
        .exec(&db.db)
        .await
        .unwrap();
    }
    let (rows, next) = previews(&db.db, None).await.unwrap();
    assert_eq!(next, None);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].offset, Some(8), "newest first");
    assert_eq!(rows[0].payload, b"{\"jobId\":1}");
    assert_eq!(rows[1].payload.len() as i64, PREVIEW_BYTES + 1);
}

/// A jobs page left open with a job whose row changes every second (so every live answer is
/// new and swapped in). Prints the page's JavaScript heap after a garbage collection and its
/// element count every 30 s, and fails if either grew. One minute in every test run; an hour
/// by hand: `JOBWARDEN_SOAK_SECONDS=3600 cargo test --test it dashboard::a_live_page -- --nocapture`
#[actix_rt::test]
async fn a_live_page_left_open_keeps_its_memory_flat() {
    let Some(browser) = Browser::start_with(&["--js-flags=--expose-gc"]).await else {
        return;
    };
    let seconds: u64 = std::env::var("JOBWARDEN_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let spark = SparkServer::start().await;
    let service = Service::start(&spark, &[]);
    spark.answer("driver-soak-1", Answer::State("RUNNING"));
    service.track("soak-1", "soak").await;
    service.wait_for_status("soak-1", "Running").await;
    browser.open(&service.url("/")).await;
    browser
        .wait_for(
            "the first live update",
            "return document.getElementById('live-status').textContent.startsWith('live ·')",
        )
        .await;
    let sample = || async {
        let v = browser
            .eval(
                "window.gc(); return [performance.memory.usedJSHeapSize, \
                 document.getElementsByTagName('*').length]",
            )
            .await;
        (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0))
    };
    let started = std::time::Instant::now();
    let first = sample().await;
    let mut last = first;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(30)).await;
        last = sample().await;
        eprintln!(
            "soak {:>5} s: JS heap {} bytes, {} elements",
            started.elapsed().as_secs(),
            last.0,
            last.1
        );
    }
    assert_eq!(first.1, last.1, "the page's element count stays the same");
    assert!(
        last.0 < first.0 + 1024 * 1024,
        "the page's heap grew from {} to {} bytes",
        first.0,
        last.0
    );
    browser.close().await;
}

/// The dashboard served in this process over `db`, with a JobStore of its own to write through
/// (the binary would also submit the job itself, racing the attempts a test writes by hand).
async fn dashboard_on(
    db: &crate::helpers::TestDb,
) -> (
    String,
    jobwarden::store_api::StoreHandle,
    actix_web::dev::ServerHandle,
) {
    use jobwarden::actors::JobStore;
    use jobwarden::events::Events;
    use jobwarden::http::HttpState;
    use jobwarden::store_api::StoreHandle;

    let settings = crate::helpers::settings_for(&db.url);
    let job_store = JobStore::new(
        db.db.clone(),
        settings.store.clone(),
        crate::helpers::rules(&settings),
        Events::default(),
    );
    let store_health = job_store.health();
    let store = StoreHandle::from(&job_store.launch());
    let state = HttpState {
        db: db.db.clone(),
        store: store.clone(),
        store_health,
        heartbeats: Vec::new(),
        kafka_topic: None,
        notifications: None,
        metrics: std::sync::Arc::new(jobwarden::metrics::Metrics::new()),
        api_token: None,
        instance: "dashboard-test".into(),
        clusters: Vec::new(),
        read_token: None,
        max_concurrent_polls: 1,
        submit_gate: None,
    };
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let (addr, server) = jobwarden::http::start(socket, state).unwrap();
    (format!("http://{addr}"), store, server)
}

async fn a_retrying_jobs_page_shows_its_attempts_escaped_reason_and_next_attempt(
    db: crate::helpers::TestDb,
) {
    use entity::spark_job_executions as executions;
    use jobwarden::domain::{JobStatus, Observation, SubmitSpec};
    use jobwarden::store_api::{Source, TrackRequest, WriteOp};
    use sea_orm::EntityTrait;

    let (base, store, server) = dashboard_on(&db).await;
    let id = "nightly-r1";
    store
        .write(WriteOp::Track(TrackRequest {
            spec: Some(
                SubmitSpec::from_json(r#"{"app_resource":"file:/j.jar","main_class":"Nightly"}"#)
                    .unwrap(),
            ),
            execution_id: id.into(),
            submission_id: None,
            job_name: Some("nightly".into()),
            cluster: None,
            source: Source::Api,
            after: Vec::new(),
            priority: 0,
            allowed: None,
        }))
        .await
        .unwrap();
    // Not before the Track: a job is due for its first attempt from then on.
    let at = chrono::Utc::now();
    let second = chrono::Duration::seconds(1);
    store
        .write(WriteOp::BeginAttempt {
            execution_id: id.into(),
            attempt: 1,
            mark: format!("{id}:1:m1"),
            at,
            candidates: Vec::new(),
        })
        .await
        .unwrap();
    store
        .write(WriteOp::AttemptSubmitted {
            execution_id: id.into(),
            attempt: 1,
            submission_id: "driver-20261201-0001".into(),
            at: at + second,
            recovered: false,
        })
        .await
        .unwrap();
    // The first of the default policy's three attempts fails: the job waits for the second.
    store
        .write(WriteOp::Observe {
            execution_id: id.into(),
            observation: Observation {
                status: Some(JobStatus::Failed),
                raw_state: Some("FAILED".into()),
                progress: None,
                message: Some("Caused by: boom <script>".into()),
                relaunching: false,
                successors: Vec::new(),
                at: at + second * 2,
            },
            asked: Some("driver-20261201-0001".into()),
        })
        .await
        .unwrap();
    let row = executions::Entity::find_by_id(id.to_owned())
        .one(&db.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "Retrying");
    let due = row.next_attempt_at.expect("the second attempt has a time");

    let http = reqwest::Client::new();
    let page = http
        .get(format!("{base}/job?kind=spark&id={id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = page
        .find("<tr data-attempt=\"1\">")
        .unwrap_or_else(|| panic!("an attempts row: {page}"));
    let attempt = &page[start..start + page[start..].find("</tr>").unwrap()];
    for shown in [">1<", ">ended<", ">failed<", "driver-20261201-0001"] {
        assert!(
            attempt.contains(shown),
            "{shown} in the attempt's row: {attempt}"
        );
    }
    assert!(
        attempt.contains("Caused by: boom &lt;script&gt;"),
        "the reason, escaped: {attempt}"
    );
    assert!(!page.contains("boom <script>"), "{page}");
    assert!(
        page.contains("attempt 2 due at")
            && page.contains(&format!("datetime=\"{}\"", due.to_rfc3339())),
        "when the next attempt is due: {page}"
    );
    assert!(
        page.contains("Nightly") && page.contains("file:/j.jar"),
        "what is submitted: {page}"
    );
    assert!(page.contains("class=\"st st-waiting\">Retrying<"), "{page}");

    // The status filter finds it, drawn like the other waiting jobs.
    let listed = http
        .get(format!("{base}/?status=Retrying"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains(&format!("data-id=\"{id}\"")), "{listed}");
    assert!(
        listed.contains("class=\"st st-waiting\">Retrying<"),
        "{listed}"
    );

    // A live page hears of the next attempt's start though the job stays Retrying.
    let live = format!("{base}/live/job?kind=spark&id={id}");
    let first = http.get(&live).send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let again = http
        .get(&live)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 304, "nothing changed yet");
    store
        .write(WriteOp::BeginAttempt {
            execution_id: id.into(),
            attempt: 2,
            mark: format!("{id}:2:m2"),
            at: due,
            candidates: Vec::new(),
        })
        .await
        .unwrap();
    let changed = http
        .get(&live)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        changed.status().as_u16(),
        200,
        "the attempt changed the page"
    );
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    let body: Value = changed.json().await.unwrap();
    let region = body["regions"]["job"].as_str().unwrap();
    assert!(
        region.contains("<tr data-attempt=\"2\">") && region.contains(">requested<"),
        "{region}"
    );
    server.stop(true).await;
}

#[actix_rt::test]
async fn analytics_pages_draw_runs_and_percentiles_per_day_as_inline_svg() {
    use crate::analytics::{noon_days_ago, seed, ETL};

    let Some(browser) = Browser::start().await else {
        return;
    };
    let spark = SparkServer::start().await;
    let service = Service::start(&spark, &[]);
    seed(&service.database().await).await;

    browser.open(&service.url("/")).await;
    browser
        .client
        .find(Locator::LinkText("Analytics"))
        .await
        .expect("the navigation links the analytics page")
        .click()
        .await
        .unwrap();
    let row = format!("tr[data-job='{ETL}']");
    assert_eq!(browser.text(&format!("{row} td.runs")).await, "14");
    assert_eq!(browser.text(&format!("{row} td.rate")).await, "76.9%");
    assert_eq!(browser.text(&format!("{row} td.p50")).await, "1m 10s");
    assert_eq!(browser.text(&format!("{row} td.wait-p95")).await, "1m 00s");
    let drawn = browser
        .eval(
            "const days = Array.from(document.querySelectorAll('#runs-per-day svg g.day')); \
             return [days.length, days.reduce((n, g) => n + Number(g.dataset.runs), 0), \
                     document.querySelectorAll('#runs-per-day svg rect.failed').length]",
        )
        .await;
    let drawn: Vec<f64> = drawn
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    // Seven days; 14 + 1 named runs and one without a name; failures on one day only.
    assert_eq!(drawn, [7.0, 16.0, 1.0]);
    browser.screenshot("analytics").await;

    browser
        .client
        .find(Locator::LinkText(ETL))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.text("h1").await, format!("Analytics: {ETL}"));
    let yesterday = noon_days_ago(1).date_naive();
    let point = |series: &str| {
        format!(
            "return document.querySelector(\"#duration-per-day circle[data-series='{series}'][data-date='{yesterday}']\").dataset.seconds"
        )
    };
    assert_eq!(browser.eval(&point("p50")).await, json!("50.000"));
    assert_eq!(browser.eval(&point("p95")).await, json!("100.000"));
    let lines = browser
        .eval("return document.querySelectorAll('#queue-wait-per-day polyline').length")
        .await;
    assert_eq!(
        lines.as_f64(),
        Some(2.0),
        "one p50 and one p95 line over the two consecutive days with runs: {lines}"
    );
    let reasons = browser.text("table.reasons tbody").await;
    assert!(
        reasons.starts_with("input table missing: s3://lake/eu\t2")
            || reasons.starts_with("input table missing: s3://lake/eu 2"),
        "{reasons}"
    );
    let external = browser
        .eval(
            "return performance.getEntriesByType('resource').map(r => r.name) \
             .filter(n => !n.startsWith(location.origin))",
        )
        .await;
    assert_eq!(external, json!([]), "nothing is fetched from elsewhere");
    browser.screenshot("analytics-job").await;
    browser.close().await;
}
