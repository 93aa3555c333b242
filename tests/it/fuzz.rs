//! Fuzzing every parser that takes outside bytes, from real samples (`tests/fixtures`, the
//! shipped config and the README's examples): Kafka events, Spark's status and kill answers,
//! the master's `/json/`, worker pages, driver UI answers and logs, submission specs, config
//! files, and the HTTP API's bodies, paths and query strings. Each target runs for
//! `JOBWARDEN_FUZZ_SECONDS` (5 s by default) from a printed seed (`JOBWARDEN_FUZZ_SEED`
//! replays one). A parser may refuse an input, never panic; what it accepts must hold up.
//! Inputs that once broke a parser are at the end, as regression tests.

use std::time::Instant;

use chrono::Utc;
use jobwarden::backend::spark::{
    compose_reason, driver_status, drivers_on_worker_page, failure_line, kill_accepted,
    master_listing, master_status, master_workers, parse_driver_ui, ui_progress,
};
use jobwarden::domain::{parse_event, QueueState, SubmitSpec};
use jobwarden_testkit::fuzz::{self, Budget, Mutator, Rng};
use jobwarden_testkit::SparkServer;

use crate::helpers::{Backend, TestDb};
use crate::operating::{instance_settings, start};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

fn fixtures(prefix: &str) -> Vec<Vec<u8>> {
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no fixture starts with {prefix}");
    names.iter().map(|n| fixture(n)).collect()
}

fn text(input: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(input)
}

fn fuzz(name: &str, seeds: Vec<Vec<u8>>, target: impl FnMut(&[u8])) {
    let report = fuzz::run(name, seeds, &Budget::from_env(), target);
    println!("{report}");
}

/// Events as the enrichment pipeline sends them, in the shapes the Kafka tests use.
fn kafka_events() -> Vec<Vec<u8>> {
    [
        &br#"{"jobId":"q1","status":"Processing","timestamp":"2026-11-28T10:00:00Z"}"#[..],
        br#"{"jobId":"q1","status":"COMPLETED","generatedFields":{"title":"x","tags":[1,2]},"timestamp":"2026-11-28T10:05:00Z","eventId":"e-2"}"#,
        br#"{"jobId":"q2","status":"failed","errorMessage":"schema mismatch"}"#,
        br#"{"jobId":"q3","status":"Cancelled","eventId":"e-9","timestamp":"2026-11-28T10:05:00.123456+01:00"}"#,
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

#[test]
fn kafka_events_are_parsed_or_refused_and_what_parses_applies_to_a_row() {
    fuzz("kafka_event", kafka_events(), |input| {
        if let Ok(event) = parse_event(input, 64 * 1024) {
            assert!(!event.job_id.is_empty(), "an event needs a job: {event:?}");
            let mut row = QueueState::pending();
            row.apply(&event, None, Utc::now());
            // The same event again is never news.
            assert!(!row.apply(&event, None, Utc::now()).took_effect() || event.event_id.is_none());
        }
    });
}

#[test]
fn status_answers_are_a_driver_status_for_the_asked_id_or_an_error() {
    let mut seeds = fixtures("status-");
    seeds.push(fixture("create-bad-request.json"));
    fuzz("spark_status", seeds, |input| {
        if let Ok(status) = driver_status(input, "driver-asked") {
            assert_eq!(status.submission_id, "driver-asked");
        }
    });
}

#[test]
fn kill_answers_are_accepted_refused_or_garbage() {
    fuzz("spark_kill", vec![fixture("kill-response.json")], |input| {
        let _ = kill_accepted(&text(input));
    });
}

#[test]
fn master_json_gives_drivers_under_their_own_ids_or_an_error() {
    let seeds = vec![
        fixture("master-json.json"),
        fixture("master-json-3.5.8-drivers.json"),
    ];
    fuzz("master_json", seeds, |input| {
        let _ = master_status(input);
        let _ = master_workers(input);
        if let Ok(listing) = master_listing(input) {
            for (id, status) in &listing.drivers {
                assert_eq!(id, &status.submission_id);
            }
            for id in listing.origins.keys() {
                let _ = listing.successors_of(id);
            }
        }
    });
}

#[test]
fn worker_pages_give_drivers_with_ids_or_nothing() {
    fuzz("worker_page", fixtures("worker-page-"), |input| {
        for driver in drivers_on_worker_page(&text(input)) {
            assert!(!driver.id.is_empty(), "{driver:?}");
        }
    });
}

#[test]
fn driver_ui_answers_give_progress_of_at_most_100() {
    fuzz(
        "driver_ui_jobs",
        vec![fixture("driver-ui-api-v1-jobs.json")],
        |input| {
            if let Ok(Some(progress)) = ui_progress(&text(input)) {
                assert!(progress <= 100, "{progress}");
            }
        },
    );
}

#[test]
fn driver_logs_give_a_bounded_reason_and_a_ui_address_or_none() {
    fuzz(
        "driver_log",
        vec![fixture("worker-driver-stderr-FAILED.txt")],
        |input| {
            let log = text(input);
            let _ = failure_line(&log);
            assert!(compose_reason(&log).len() <= 8_000);
            if let Some(ui) = parse_driver_ui(&log, "127.0.0.1") {
                assert!(!ui.app_id.is_empty(), "{ui:?}");
            }
        },
    );
}

#[test]
fn submission_specs_are_read_or_refused_with_a_reason() {
    let seeds = vec![
        br#"{"app_resource":"file:/jobs/etl.jar","main_class":"com.example.Etl","retry":{"max_attempts":5,"initial_backoff":"1m"}}"#.to_vec(),
        br#"{"app_resource":"local:/x.py","main_class":"org.apache.spark.deploy.PythonRunner","app_args":["a","--b"],"spark_properties":{"spark.executor.memory":"2g"},"environment":{"A":"1"}}"#.to_vec(),
    ];
    fuzz("submit_spec", seeds, |input| {
        if let Err(e) = SubmitSpec::from_json(&text(input)) {
            assert!(!e.to_string().is_empty());
        }
    });
}

/// The shipped config and every TOML example the README shows.
fn config_examples() -> Vec<Vec<u8>> {
    let readme = include_str!("../../README.md");
    let mut seeds = vec![include_bytes!("../../config.toml").to_vec()];
    let mut block: Option<String> = None;
    for line in readme.lines() {
        match (&mut block, line.trim_start()) {
            (None, "```toml") => block = Some(String::new()),
            (Some(b), "```") => {
                seeds.push(b.clone().into_bytes());
                block = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    assert!(seeds.len() > 5, "the README's TOML examples");
    seeds
}

#[test]
fn config_files_load_or_are_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    fuzz("config_file", config_examples(), |input| {
        std::fs::write(&path, input).unwrap();
        if let Err(e) = jobwarden::config::load_with_env(Some(&path), Vec::new()) {
            assert!(!e.to_string().trim().is_empty());
        }
    });
}

/// Percent-encodes what a URL cannot carry as is, keeping `&` and `=` as separators.
fn in_url(input: &[u8], keep: &[u8]) -> String {
    input
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What the API must do with any request: answer it below 500, with a JSON error naming
/// the problem when it refuses.
async fn check_answer(response: reqwest::Response, request: &str) {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    assert!(status < 500, "{request} answered {status}: {}", text(&body));
    if status >= 400 {
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            panic!("{request} answered {status} without JSON: {}", text(&body))
        });
        assert!(json["error"].is_string(), "{request}: {json}");
    }
}

#[actix_rt::test]
async fn api_bodies_paths_and_queries_are_answered_below_500_with_a_json_reason() {
    let spark = SparkServer::start().await;
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    let app = start(instance_settings(&db.url, &spark), db).await;
    let base = format!("http://{}", app.app.http_addr.unwrap());
    let http = reqwest::Client::new();
    let bodies = Mutator::new(vec![
        br#"{"execution_id":"fz-1","submission_id":"driver-fz-1","job_name":"nightly"}"#.to_vec(),
        br#"{"execution_id":"fz-2","submission_id":"driver-fz-2","job_name":"nightly","cluster":"nope"}"#.to_vec(),
        br#"{"execution_id":"fz-3","job_name":"n","submit":{"app_resource":"file:/x.jar","main_class":"X","retry":{"max_attempts":2,"initial_backoff":"1s"}}}"#.to_vec(),
    ]);
    let queries = Mutator::new(vec![
        b"status=Running&limit=10".to_vec(),
        b"limit=1000&cursor=fz-1".to_vec(),
        b"status=Nope&limit=0".to_vec(),
    ]);
    let ids = Mutator::new(vec![
        b"fz-1".to_vec(),
        b"driver-20261129044149-0000".to_vec(),
    ]);
    let budget = Budget::from_env();
    let mut rng = Rng::new(budget.seed);
    let started = Instant::now();
    let mut requests = 0u64;
    while started.elapsed() < budget.time || requests == 0 {
        requests += 1;
        match rng.below(4) {
            0 => {
                let body = bodies.next(&mut rng);
                let response = http
                    .post(format!("{base}/api/v1/jobs"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                check_answer(
                    response,
                    &format!("POST /api/v1/jobs {}", fuzz::literal(&body)),
                )
                .await;
            }
            1 => {
                let query = in_url(&queries.next(&mut rng), b"&=");
                let request = format!("GET /api/v1/jobs?{query}");
                let response = http
                    .get(format!("{base}/api/v1/jobs?{query}"))
                    .send()
                    .await
                    .unwrap();
                check_answer(response, &request).await;
            }
            2 => {
                let id = in_url(&ids.next(&mut rng), b"");
                let request = format!("GET /api/v1/jobs/{id}");
                let response = http
                    .get(format!("{base}/api/v1/jobs/{id}"))
                    .send()
                    .await
                    .unwrap();
                check_answer(response, &request).await;
            }
            _ => {
                let id = in_url(&ids.next(&mut rng), b"");
                let action = if rng.chance(2) { "cancel" } else { "retry" };
                let request = format!("POST /api/v1/jobs/{id}/{action}");
                let response = http
                    .post(format!("{base}/api/v1/jobs/{id}/{action}"))
                    .send()
                    .await
                    .unwrap();
                check_answer(response, &request).await;
            }
        }
    }
    println!(
        "fuzz http_api: {requests} requests in {:.1}s, seed {}, every answer below 500",
        started.elapsed().as_secs_f64(),
        budget.seed
    );
    // Still serving, and still writing.
    let (status, _) = app
        .post(
            "/api/v1/jobs",
            r#"{"execution_id":"after-fuzz","submission_id":"driver-after-fuzz"}"#,
            None,
        )
        .await;
    assert_eq!(status, 201);
}

/// Found by `driver_ui_jobs`: a skipped-task count of u64::MAX overflowed the sum.
#[test]
fn a_driver_ui_with_absurd_task_counts_gives_bounded_progress() {
    let body = r#"[{"jobId":0,"status":"RUNNING","numTasks":20,"numCompletedTasks":11,"numSkippedTasks":18446744073709551615},
                  {"jobId":1,"status":"RUNNING","numTasks":18446744073709551615,"numCompletedTasks":18446744073709551615}]"#;
    let progress = ui_progress(body).unwrap().unwrap();
    assert!(progress <= 99, "{progress}");
}
