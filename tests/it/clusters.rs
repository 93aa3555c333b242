//! Several Spark clusters under one jobwarden, run as the real binary: each job is asked of its
//! own cluster, and a cluster whose master hangs neither fails its jobs nor holds the pollers
//! the healthy cluster's jobs need.

use std::net::TcpListener;
use std::time::Duration;

use jobwarden_testkit::{Answer, SparkServer};
use serde_json::{json, Value};

use crate::binary::{jobwarden, run_to_end, text, Running};
use crate::helpers::wait_until;

const HEALTHY: usize = 8;
const ON_HUNG: usize = 24;

/// A master that accepts connections and never answers: requests end only at the client's
/// timeout, the way a wedged JVM behaves.
fn hung_master() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

fn config(dir: &std::path::Path, default: &str, east: &str) {
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[database]\nurl = \"sqlite://{db}?mode=rwc\"\n\
             [spark]\nrest_url = \"{default}\"\nmaster_ui_url = \"{default}\"\nstatus_source = \"rest\"\n\
             poll_interval = \"1s\"\nrequest_timeout = \"2s\"\nmax_concurrent_polls = 4\nstuck_timeout = \"10m\"\n\
             [spark.clusters.east]\nrest_url = \"{east}\"\nmaster_ui_url = \"{east}\"\n",
            db = dir.join("jw.db").display(),
        ),
    )
    .unwrap();
}

async fn post(http: &reqwest::Client, base: &str, body: Value) -> (u16, Value) {
    let response = http
        .post(format!("{base}/api/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn job(http: &reqwest::Client, base: &str, id: &str) -> Value {
    http.get(format!("{base}/api/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["job"]
        .clone()
}

#[actix_rt::test]
async fn a_hung_cluster_leaves_the_healthy_clusters_jobs_fresh_and_its_own_unfailed() {
    let spark = SparkServer::start().await;
    let (_hung, east) = hung_master();
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &spark.url(), &east);
    let mut service = Running::start(jobwarden(dir.path()));
    let base = format!("http://{}", service.http_address());
    let http = reqwest::Client::new();

    for i in 0..ON_HUNG {
        let body = json!({"execution_id": format!("east-{i:02}"), "submission_id": format!("driver-east-{i}"), "cluster": "east"});
        assert_eq!(post(&http, &base, body).await.0, 201);
    }
    for i in 0..HEALTHY {
        spark.answer(&format!("driver-ok-{i}"), Answer::State("RUNNING"));
        let body =
            json!({"execution_id": format!("ok-{i}"), "submission_id": format!("driver-ok-{i}")});
        assert_eq!(post(&http, &base, body).await.0, 201);
    }

    // Once the hung cluster has been found away, the healthy jobs are asked every cycle. Were
    // its jobs to hold the four pollers for their two-second timeouts, a cycle would take
    // twelve seconds and each healthy job would be asked about once in that time.
    wait_until(
        Duration::from_secs(60),
        "the hung cluster to be found away",
        || {
            let (http, base) = (http.clone(), base.clone());
            async move { job(&http, &base, "east-00").await["last_poll_error"].is_string() }
        },
    )
    .await;
    let before: Vec<usize> = (0..HEALTHY)
        .map(|i| spark.status_requests(&format!("driver-ok-{i}")))
        .collect();
    wait_until(
        Duration::from_secs(12),
        "every healthy job to be asked 4 more times",
        || {
            let fresh = (0..HEALTHY)
                .all(|i| spark.status_requests(&format!("driver-ok-{i}")) >= before[i] + 4);
            async move { fresh }
        },
    )
    .await;

    for i in 0..HEALTHY {
        assert_eq!(
            job(&http, &base, &format!("ok-{i}")).await["status"],
            "Running"
        );
    }
    for i in 0..ON_HUNG {
        let row = job(&http, &base, &format!("east-{i:02}")).await;
        assert_eq!(
            row["status"], "Queued",
            "a hung cluster says nothing about its jobs: {row}"
        );
        assert_eq!(row["cluster"], "east");
        assert!(
            row["failing_since"].is_null(),
            "an outage never starts the stuck clock: {row}"
        );
    }
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("jobwarden_spark_up{cluster=\"east\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("jobwarden_spark_up{cluster=\"default\"} 1"),
        "{metrics}"
    );
    service.wait_for_line("Spark cluster unreachable", Duration::from_secs(5));
    let line = service.line_with("Spark cluster unreachable", Duration::from_secs(1));
    assert!(line.contains("cluster=\"east\""), "{line}");
}

#[actix_rt::test]
async fn a_job_tracked_on_a_named_cluster_is_asked_of_that_cluster() {
    let default = SparkServer::start().await;
    let east = SparkServer::start().await;
    east.answer("driver-e1", Answer::State("FINISHED"));
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &default.url(), &east.url());
    let tracked = run_to_end(jobwarden(dir.path()).args([
        "jobs",
        "track",
        "--execution-id",
        "e1",
        "--submission-id",
        "driver-e1",
        "--cluster",
        "east",
    ]));
    assert!(tracked.status.success(), "{}", text(&tracked));
    let mut service = Running::start(jobwarden(dir.path()));
    let base = format!("http://{}", service.http_address());
    let http = reqwest::Client::new();
    wait_until(Duration::from_secs(30), "e1 to end as east says", || {
        let (http, base) = (http.clone(), base.clone());
        async move { job(&http, &base, "e1").await["status"] == "Succeeded" }
    })
    .await;
    assert!(east.status_requests("driver-e1") >= 1);
    assert_eq!(
        default.status_requests("driver-e1"),
        0,
        "the default cluster was never asked"
    );
}

#[actix_rt::test]
async fn tracking_on_a_cluster_nobody_configured_is_refused_naming_the_configured_ones() {
    let spark = SparkServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &spark.url(), &spark.url());
    let refused = run_to_end(jobwarden(dir.path()).args([
        "jobs",
        "track",
        "--execution-id",
        "w1",
        "--submission-id",
        "driver-w1",
        "--cluster",
        "west",
    ]));
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("[spark.clusters.west]"),
        "{}",
        text(&refused)
    );

    let mut service = Running::start(jobwarden(dir.path()));
    let base = format!("http://{}", service.http_address());
    let (status, body) = post(
        &reqwest::Client::new(),
        &base,
        json!({"execution_id": "w1", "submission_id": "driver-w1", "cluster": "west"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("east"), "{message}");
}
