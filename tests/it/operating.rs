//! Operating jobwarden over real HTTP on a running instance: health, readiness (including a
//! database that is away), Prometheus metrics, the job API, and actors that come back after
//! a crash.

use std::time::Duration;

use jobwarden::actors::scheduler::{GetSchedulerStats, Tick};
use jobwarden::actors::Crash;
use jobwarden::config::{Secret, Settings};
use jobwarden::startup::Application;
use jobwarden_testkit::{Answer, SparkServer};
use serde_json::{json, Value};

use crate::helpers::{settings_for, socket_of, wait_until, Backend, CutProxy, TestDb};

pub(crate) struct Running {
    pub(crate) app: Application,
    base: String,
    http: reqwest::Client,
    _db: TestDb,
}

pub(crate) fn instance_settings(db_url: &str, spark: &SparkServer) -> Settings {
    let mut settings = settings_for(db_url);
    settings.http.bind = "127.0.0.1:0".into();
    settings.spark.rest_url = spark.url();
    settings.spark.master_ui_url = Some(spark.url());
    settings.spark.poll_interval = Duration::from_secs(3600);
    settings.spark.max_concurrent_polls = 2;
    settings
}

pub(crate) async fn start(settings: Settings, db: TestDb) -> Running {
    let app = Application::build(settings).await.unwrap();
    let base = format!("http://{}", app.http_addr.unwrap());
    Running {
        app,
        base,
        http: reqwest::Client::new(),
        _db: db,
    }
}

async fn spawn_app(spark: &SparkServer) -> Running {
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    start(instance_settings(&db.url, spark), db).await
}

impl Running {
    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn post(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn track(&self, id: &str, submission: &str) -> (u16, Value) {
        let body = json!({"execution_id": id, "submission_id": submission, "job_name": "nightly"});
        self.post("/api/v1/jobs", &body.to_string(), None).await
    }

    pub(crate) async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub(crate) async fn poll_cycle(&self) {
        let scheduler = self.app.scheduler.clone();
        wait_until(Duration::from_secs(20), "the start-up cycle", || {
            let scheduler = scheduler.clone();
            async move {
                let s = scheduler.send(GetSchedulerStats).await.unwrap();
                s.cycles > 0 && !s.cycle_running
            }
        })
        .await;
        let before = scheduler.send(GetSchedulerStats).await.unwrap().cycles;
        scheduler.send(Tick).await.unwrap();
        wait_until(Duration::from_secs(20), "a poll cycle", || {
            let scheduler = scheduler.clone();
            async move {
                let s = scheduler.send(GetSchedulerStats).await.unwrap();
                s.cycles > before && !s.cycle_running
            }
        })
        .await;
    }
}

#[actix_rt::test]
async fn healthz_answers_while_the_process_lives() {
    let spark = SparkServer::start().await;
    let app = spawn_app(&spark).await;
    assert_eq!(app.get("/healthz").await, (200, json!({"status": "ok"})));
}

#[actix_rt::test]
async fn readyz_is_200_when_every_part_is_up() {
    let spark = SparkServer::start().await;
    let app = spawn_app(&spark).await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["job_store"], "ok");
    assert_eq!(body["checks"]["scheduler"], "ok");
    assert_eq!(body["checks"]["kafka_listener"], "not configured");
}

#[actix_rt::test]
async fn readyz_is_503_naming_the_database_when_it_is_unreachable() {
    let Some(db) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    let spark = SparkServer::start().await;
    let proxy = CutProxy::start(socket_of(&db.url)).await;
    let mut settings = instance_settings(&proxy.url_through(&db.url), &spark);
    settings.database.connect_timeout = Duration::from_millis(500);
    let app = start(settings, db).await;
    assert_eq!(app.get("/readyz").await.0, 200);
    proxy.cut();
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert!(
        body["not_ready"]
            .as_array()
            .unwrap()
            .contains(&json!("database")),
        "{body}"
    );
    proxy.restore();
    wait_until(
        Duration::from_secs(20),
        "readiness to come back",
        || async { app.get("/readyz").await.0 == 200 },
    )
    .await;
}

/// Every sample line is `name{labels} value`; every family has HELP and TYPE.
fn assert_prometheus_text(text: &str) {
    let mut typed = std::collections::HashSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            typed.insert(parts.next().unwrap().to_owned());
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line:?}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels in {line:?}"
                );
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| typed.contains(*f))
            .unwrap_or(name);
        assert!(typed.contains(family), "{name} has no TYPE line");
    }
}

#[actix_rt::test]
async fn metrics_scrape_is_prometheus_text_with_the_documented_families() {
    let spark = SparkServer::start().await;
    let app = spawn_app(&spark).await;
    app.track("m1", "driver-m1").await;
    app.poll_cycle().await;
    let text = app.metrics().await;
    assert_prometheus_text(&text);
    for family in [
        "jobwarden_polls_total",
        "jobwarden_poll_duration_seconds",
        "jobwarden_polls_in_flight",
        "jobwarden_jobs",
        "jobwarden_status_transitions_total",
        "jobwarden_store_batch_size",
        "jobwarden_store_commit_seconds",
        "jobwarden_database_up",
        "jobwarden_spark_up",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    assert!(
        text.contains("jobwarden_jobs{status=\"Running\"}"),
        "{text}"
    );
    assert!(
        text.contains("jobwarden_polls_total{outcome=\"observed\"}"),
        "{text}"
    );
}

#[actix_rt::test]
async fn posting_a_job_tracks_it_and_a_duplicate_is_409() {
    let spark = SparkServer::start().await;
    let app = spawn_app(&spark).await;
    let (status, body) = app.track("api-1", "driver-1").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["job"]["status"], "Queued");
    assert_eq!(body["history"][0]["source"], "api");
    let (status, body) = app.track("api-1", "driver-2").await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("already tracked"));
}

#[actix_rt::test]
async fn bad_input_is_400_with_a_message() {
    let spark = SparkServer::start().await;
    let app = spawn_app(&spark).await;
    for body in [
        "not json",
        r#"{"execution_id":"x"}"#,
        r#"{"execution_id":"","submission_id":"driver-1"}"#,
        r#"{"execution_id":"x","submission_id":"driver-1","surprise":1}"#,
    ] {
        let (status, reply) = app.post("/api/v1/jobs", body, None).await;
        assert_eq!(status, 400, "{body} gave {reply}");
        assert!(reply["error"].is_string(), "{reply}");
    }
    let (status, reply) = app.get("/api/v1/jobs?status=Exploded").await;
    assert_eq!(status, 400);
    assert!(reply["error"].as_str().unwrap().contains("Exploded"));
    assert_eq!(app.get("/api/v1/jobs?limit=0").await.0, 400);
    assert_eq!(app.get("/api/v1/jobs?limit=abc").await.0, 400);
}

#[actix_rt::test]
async fn unknown_ids_are_404() {
    let spark = SparkServer::start().await;
    let app = spawn_app(&spark).await;
    assert_eq!(app.get("/api/v1/jobs/nope").await.0, 404);
    assert_eq!(app.get("/api/v1/queue/nope").await.0, 404);
    assert_eq!(app.get("/no/such/endpoint").await.0, 404);
}

#[actix_rt::test]
async fn job_list_pages_with_a_cursor_and_filters_by_status() {
    let spark = SparkServer::start().await;
    spark.answer("driver-2", Answer::State("FINISHED"));
    let app = spawn_app(&spark).await;
    for i in 0..5 {
        assert_eq!(
            app.track(&format!("p{i}"), &format!("driver-{i}")).await.0,
            201
        );
    }
    app.poll_cycle().await;
    let (status, first) = app.get("/api/v1/jobs?limit=2").await;
    assert_eq!(status, 200);
    let ids = |page: &Value| -> Vec<String> {
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["execution_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&first), vec!["p0", "p1"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app
        .get(&format!("/api/v1/jobs?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(ids(&second), vec!["p2", "p3"]);
    let (_, succeeded) = app.get("/api/v1/jobs?status=succeeded").await;
    assert_eq!(ids(&succeeded), vec!["p2"]);
    assert!(succeeded["next_cursor"].is_null());

    let (status, shown) = app.get("/api/v1/jobs/p2").await;
    assert_eq!(status, 200);
    assert_eq!(shown["job"]["status"], "Succeeded");
    let steps: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to_status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, vec!["Queued", "Succeeded"]);
}

#[actix_rt::test]
async fn posting_needs_the_token_when_one_is_configured() {
    let spark = SparkServer::start().await;
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    let mut settings = instance_settings(&db.url, &spark);
    settings.http.api_token = Some(Secret::new("s3cret-token"));
    let app = start(settings, db).await;
    let body = r#"{"execution_id":"t1","submission_id":"driver-1"}"#;
    let (status, reply) = app.post("/api/v1/jobs", body, None).await;
    assert_eq!(status, 401, "{reply}");
    assert_eq!(app.post("/api/v1/jobs", body, Some("wrong")).await.0, 401);
    assert_eq!(
        app.post("/api/v1/jobs", body, Some("s3cret-token")).await.0,
        201
    );
    // Reading stays open.
    assert_eq!(app.get("/api/v1/jobs/t1").await.0, 200);
}

/// `jobwarden_actor_restarts_total` for one actor in a scrape.
fn restarts(scrape: &str, actor: &str) -> f64 {
    let series = format!("jobwarden_actor_restarts_total{{actor=\"{actor}\"}}");
    scrape
        .lines()
        .find(|l| l.starts_with(&series))
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .unwrap_or(0.0)
}

#[actix_rt::test]
async fn crashed_poller_is_restarted_and_polling_goes_on() {
    let spark = SparkServer::start().await;
    let app = spawn_app(&spark).await;
    app.track("c1", "driver-c1").await;
    app.poll_cycle().await;
    let before = restarts(&app.metrics().await, "spark_poller");
    for poller in &app.app.pollers {
        poller.send(Crash).await.unwrap();
    }
    // This application's own registry: exactly its two pollers crashed.
    assert_eq!(restarts(&app.metrics().await, "spark_poller"), before + 2.0);

    spark.answer("driver-c1", Answer::State("FINISHED"));
    app.poll_cycle().await;
    assert_eq!(
        app.get("/api/v1/jobs/c1").await.1["job"]["status"],
        "Succeeded"
    );
    assert_eq!(app.get("/readyz").await.0, 200);
}

#[actix_rt::test]
async fn crashed_scheduler_and_store_come_back_and_keep_working() {
    let spark = SparkServer::start().await;
    let app = spawn_app(&spark).await;
    app.track("s1", "driver-s1").await;
    app.app.scheduler.send(Crash).await.unwrap();
    app.app.store.send(Crash).await.unwrap();
    wait_until(
        Duration::from_secs(10),
        "both crashes to be counted",
        || async {
            let text = app.metrics().await;
            restarts(&text, "scheduler") == 1.0 && restarts(&text, "job_store") == 1.0
        },
    )
    .await;
    // Writes and polls still happen.
    assert_eq!(app.track("s2", "driver-s2").await.0, 201);
    spark.answer("driver-s1", Answer::State("FINISHED"));
    app.poll_cycle().await;
    assert_eq!(
        app.get("/api/v1/jobs/s1").await.1["job"]["status"],
        "Succeeded"
    );
    assert_eq!(
        app.get("/api/v1/jobs/s2").await.1["job"]["status"],
        "Running"
    );
}
