//! The OpenAPI 3.1 document of the HTTP API: served by the real binary, valid by a real
//! validator (openapi-spec-validator), the same as `jobwarden openapi` prints, and true: every
//! documented operation answers with a status it documents and a body its schema allows.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use entity::transformation_job_queue as queue;
use jobwarden_testkit::{Answer, SparkServer};
use sea_orm::{ActiveModelTrait, IntoActiveModel};
use serde_json::{json, Value};

use crate::binary::{jobwarden_in, Running};
use crate::helpers::{skip_unless_ci, wait_until, Backend, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_jobwarden");
const API_TOKEN: &str = "write-token";
const READ_TOKEN: &str = "read-token";

/// A Python that imports the validators: `$JOBWARDEN_TEST_OPENAPI_PYTHON`, the venv
/// `.ci/openapi.sh` makes, or none (then the test is skipped, except in CI where it fails).
fn validator_python() -> Option<PathBuf> {
    let cache =
        std::env::var("JOBWARDEN_CI_CACHE").unwrap_or_else(|_| "/var/cache/jobwarden-ci".into());
    let found = [
        std::env::var_os("JOBWARDEN_TEST_OPENAPI_PYTHON").map(PathBuf::from),
        Some(Path::new(&cache).join("openapi/bin/python3")),
    ]
    .into_iter()
    .flatten()
    .find(|python| {
        Command::new(python)
            .args([
                "-c",
                "import openapi_spec_validator, openapi_schema_validator",
            ])
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if found.is_none() {
        skip_unless_ci(
            "the OpenAPI tests",
            "openapi-spec-validator is not installed (run `bash .ci/openapi.sh`)",
        );
    }
    found
}

/// The binary on a fresh SQLite database of its own, with both tokens set, its Spark the
/// protocol server.
struct Served {
    db: TestDb,
    spark: SparkServer,
    service: Running,
    base: String,
    _dir: tempfile::TempDir,
}

async fn start() -> Served {
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    let spark = SparkServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut service = jobwarden_in(dir.path())
        .env("JOBWARDEN__DATABASE__URL", &db.url)
        .env("JOBWARDEN__SPARK__REST_URL", spark.url())
        .env("JOBWARDEN__SPARK__POLL_INTERVAL", "300ms")
        .env("JOBWARDEN__HTTP__BIND", "127.0.0.1:0")
        .env("JOBWARDEN__HTTP__API_TOKEN", API_TOKEN)
        .env("JOBWARDEN__HTTP__READ_TOKEN", READ_TOKEN)
        .start();
    service.wait_for_line("jobwarden running", Duration::from_secs(60));
    let base = service.http_url();
    Served {
        db,
        spark,
        service,
        base,
        _dir: dir,
    }
}

fn served_document(base: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sf", &format!("{base}/api/v1/openapi.json")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("the document is JSON")
}

/// One answer as the checker reads it.
struct Recorder {
    base: String,
    http: reqwest::Client,
    answers: Vec<Value>,
}

impl Recorder {
    /// Sends `method path` (`template` is the path as the document names it), with the token
    /// when given, and records the answer; returns its status and body.
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "get" => self.http.get(url),
            _ => self.http.post(url),
        };
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response.text().await.unwrap();
        let body = if content_type.starts_with("application/json") {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
        } else {
            Value::String(text)
        };
        self.answers.push(json!({
            "method": method, "path": template, "status": status,
            "content_type": content_type, "body": body,
        }));
        (status, body)
    }

    async fn read(&mut self, template: &str, path: &str) -> (u16, Value) {
        self.call("get", template, path, None, Some(READ_TOKEN))
            .await
    }

    async fn write(&mut self, template: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.call("post", template, path, body, Some(API_TOKEN))
            .await
    }
}

/// A queue job as the application would have it, for the queue route to show.
async fn insert_queue_job(db: &TestDb, id: &str) {
    let now = Utc::now();
    queue::Model {
        job_id: id.into(),
        status: "Completed".into(),
        error_message: None,
        generated_fields: Some(json!({"rows": 12})),
        completed_at: Some(now),
        last_event_at: Some(now),
        last_event_id: Some("event-1".into()),
        last_topic: None,
        last_partition: None,
        last_offset: None,
        created_at: now,
        updated_at: now,
    }
    .into_active_model()
    .insert(&db.db)
    .await
    .unwrap();
}

/// Exercises every operation the document lists, successes and refusals, and returns the
/// recorded answers.
async fn exercise_every_operation(db: &TestDb, spark: &SparkServer, base: &str) -> Vec<Value> {
    let mut r = Recorder {
        base: base.to_owned(),
        http: reqwest::Client::new(),
        answers: Vec::new(),
    };
    let jobs = "/api/v1/jobs";
    let job = "/api/v1/jobs/{execution_id}";
    let cancel = "/api/v1/jobs/{execution_id}/cancel";
    let retry = "/api/v1/jobs/{execution_id}/retry";
    let queue_job = "/api/v1/queue/{job_id}";
    let outbox = "/api/v1/notifications";
    let resend = "/api/v1/notifications/resend";

    assert_eq!(
        r.call("get", "/healthz", "/healthz", None, None).await.0,
        200
    );
    assert_eq!(
        r.call("get", "/metrics", "/metrics", None, None).await.0,
        200
    );
    let spec = "/api/v1/openapi.json";
    assert_eq!(r.call("get", spec, spec, None, None).await.0, 200);
    let http = reqwest::Client::new();
    wait_until(Duration::from_secs(60), "/readyz to say ready", || async {
        let answer = http.get(format!("{base}/readyz")).send().await;
        answer.is_ok_and(|a| a.status() == 200)
    })
    .await;
    assert_eq!(r.call("get", "/readyz", "/readyz", None, None).await.0, 200);

    let followed =
        r#"{"execution_id":"followed","submission_id":"driver-followed","job_name":"nightly"}"#;
    assert_eq!(r.write(jobs, jobs, Some(followed)).await.0, 201);
    assert_eq!(r.write(jobs, jobs, Some(followed)).await.0, 409);
    let submitted = r#"{"execution_id":"submitted","submit":{"app_resource":"file:/x.jar","main_class":"Main","retry":{"max_attempts":1}}}"#;
    assert_eq!(r.write(jobs, jobs, Some(submitted)).await.0, 201);
    assert_eq!(
        r.write(jobs, jobs, Some(r#"{"execution_id":""}"#)).await.0,
        400
    );
    assert_eq!(r.write(jobs, jobs, Some("not json")).await.0, 400);
    assert_eq!(
        r.call("post", jobs, jobs, Some(followed), None).await.0,
        401
    );

    assert_eq!(r.read(jobs, jobs).await.0, 200);
    assert_eq!(
        r.read(jobs, "/api/v1/jobs?status=Queued&limit=1").await.0,
        200
    );
    assert_eq!(r.read(jobs, "/api/v1/jobs?limit=0").await.0, 400);
    assert_eq!(r.read(jobs, "/api/v1/jobs?status=Sleeping").await.0, 400);
    assert_eq!(r.call("get", jobs, jobs, None, None).await.0, 401);

    assert_eq!(r.read(job, "/api/v1/jobs/followed").await.0, 200);
    assert_eq!(r.read(job, "/api/v1/jobs/nope").await.0, 404);

    // jobwarden submits the spec to the protocol server; once its driver has finished, the
    // job can be retried.
    wait_until(
        Duration::from_secs(60),
        "jobwarden to submit the spec",
        || async { !spark.created().is_empty() },
    )
    .await;
    let driver = spark.created()[0].submission_id.clone();
    spark.answer(&driver, Answer::State("FINISHED"));
    wait_until(
        Duration::from_secs(60),
        "the submitted job to succeed",
        || async {
            let answer = http
                .get(format!("{base}/api/v1/jobs/submitted"))
                .bearer_auth(READ_TOKEN)
                .send()
                .await;
            match answer {
                Ok(a) => a
                    .json::<Value>()
                    .await
                    .is_ok_and(|b| b["job"]["status"] == "Succeeded"),
                Err(_) => false,
            }
        },
    )
    .await;
    assert_eq!(
        r.write(retry, "/api/v1/jobs/submitted/retry", None).await.0,
        202
    );
    assert_eq!(
        r.write(retry, "/api/v1/jobs/followed/retry", None).await.0,
        409
    );
    assert_eq!(r.write(retry, "/api/v1/jobs/nope/retry", None).await.0, 404);
    assert_eq!(
        r.call("post", retry, "/api/v1/jobs/followed/retry", None, None)
            .await
            .0,
        401
    );

    let (status, body) = r.write(cancel, "/api/v1/jobs/followed/cancel", None).await;
    assert_eq!((status, &body["ended"]), (200, &json!(false)), "{body}");
    assert_eq!(
        r.write(cancel, "/api/v1/jobs/nope/cancel", None).await.0,
        404
    );

    insert_queue_job(db, "enrich-1").await;
    assert_eq!(r.read(queue_job, "/api/v1/queue/enrich-1").await.0, 200);
    assert_eq!(r.read(queue_job, "/api/v1/queue/nope").await.0, 404);

    let analytics = "/api/v1/analytics";
    let analytics_job = "/api/v1/analytics/{job_name}";
    crate::analytics::insert(
        &db.db,
        crate::analytics::Seeded {
            id: "report-1".into(),
            name: Some("reporting"),
            status: "Failed",
            ended: crate::analytics::noon_days_ago(1),
            waited: Some(20),
            ran: 90,
            error: Some("no such table: sales"),
        },
    )
    .await;
    assert_eq!(r.read(analytics, analytics).await.0, 200);
    assert_eq!(r.read(analytics, "/api/v1/analytics?days=90").await.0, 200);
    assert_eq!(r.read(analytics, "/api/v1/analytics?days=0").await.0, 400);
    assert_eq!(r.call("get", analytics, analytics, None, None).await.0, 401);
    assert_eq!(
        r.read(analytics_job, "/api/v1/analytics/reporting").await.0,
        200
    );
    assert_eq!(
        r.read(analytics_job, "/api/v1/analytics/reporting?days=91")
            .await
            .0,
        400
    );
    assert_eq!(
        r.read(analytics_job, "/api/v1/analytics/nobody").await.0,
        404
    );

    assert_eq!(r.read(outbox, outbox).await.0, 200);
    assert_eq!(
        r.read(outbox, "/api/v1/notifications?state=failed&limit=5")
            .await
            .0,
        200
    );
    assert_eq!(
        r.read(outbox, "/api/v1/notifications?state=lost").await.0,
        400
    );
    assert_eq!(r.write(resend, resend, None).await.0, 200);
    assert_eq!(
        r.write(resend, resend, Some(r#"{"since":"2h"}"#)).await.0,
        200
    );
    assert_eq!(
        r.write(resend, resend, Some(r#"{"since":"yesterday"}"#))
            .await
            .0,
        400
    );
    assert_eq!(r.call("post", resend, resend, None, None).await.0, 401);
    r.answers
}

/// `python -m openapi_spec_validator` over `document`.
fn validate(python: &Path, document: &Value) -> std::process::Output {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), document.to_string()).unwrap();
    Command::new(python)
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .output()
        .unwrap()
}

/// `tests/fixtures/openapi_answers.py` over `answers` (as `Recorder` records them) against
/// `document`: whether every answer is as described, and the checker's report.
fn check_answers(python: &Path, document: &Value, answers: &Value) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let spec_file = dir.path().join("openapi.json");
    let answers_file = dir.path().join("answers.json");
    std::fs::write(&spec_file, document.to_string()).unwrap();
    std::fs::write(&answers_file, answers.to_string()).unwrap();
    let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openapi_answers.py");
    let out = Command::new(python)
        .arg(checker)
        .args([&spec_file, &answers_file])
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[actix_rt::test]
async fn the_served_document_is_valid_openapi_3_1() {
    let Some(python) = validator_python() else {
        return;
    };
    let served = start().await;
    let document = served_document(&served.base);
    assert_eq!(document["openapi"], "3.1.0", "{document:#}");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    let out = validate(&python, &document);
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, log) = served.service.stop(Duration::from_secs(60));
    assert!(status.success(), "{log}");
}

#[test]
fn the_validator_refuses_a_broken_document() {
    let Some(python) = validator_python() else {
        return;
    };
    let broken = json!({"openapi": "3.1.0", "info": {"title": "x"}, "paths": {"/a": {"get": {"responses": {"200": {"description": 5}}}}}});
    assert!(!validate(&python, &broken).status.success());
}

#[actix_rt::test]
async fn the_openapi_command_prints_the_served_document() {
    let running = start().await;
    let served = served_document(&running.base);
    let printed = Command::new(BIN).arg("openapi").output().unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(printed, served);
    running.service.stop(Duration::from_secs(60));
}

#[actix_rt::test]
async fn every_documented_operation_answers_as_the_document_says() {
    let Some(python) = validator_python() else {
        return;
    };
    let served = start().await;
    served
        .spark
        .answer("driver-followed", Answer::State("RUNNING"));
    let base = served.base.clone();
    let document = served_document(&base);
    let answers = exercise_every_operation(&served.db, &served.spark, &base).await;

    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let exercised: BTreeSet<(String, String)> = answers
        .iter()
        .map(|a| {
            (
                a["method"].as_str().unwrap().into(),
                a["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        documented, exercised,
        "every documented operation is exercised"
    );

    let (passed, report) = check_answers(&python, &document, &Value::from(answers));
    assert!(passed, "{report}");
    eprintln!("{report}");
    let (status, log) = served.service.stop(Duration::from_secs(60));
    assert!(status.success(), "{log}");
}

#[test]
fn the_checker_refuses_an_answer_the_document_does_not_describe() {
    let Some(python) = validator_python() else {
        return;
    };
    let printed = Command::new(BIN).arg("openapi").output().unwrap().stdout;
    let document: Value = serde_json::from_slice(&printed).unwrap();
    let wrong = json!([
        {"method": "get", "path": "/healthz", "status": 418, "content_type": "application/json", "body": {}},
        {"method": "get", "path": "/api/v1/jobs", "status": 200, "content_type": "application/json",
         "body": {"jobs": [{"execution_id": 7}], "next_cursor": null}},
    ]);
    let (passed, report) = check_answers(&python, &document, &wrong);
    assert!(!passed, "{report}");
    assert!(report.contains("418"), "{report}");
    assert!(report.contains("jobs/0"), "{report}");
}
