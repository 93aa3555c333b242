//! End to end against a real Spark standalone cluster (started by `.ci/run` via
//! `.ci/spark.sh`): real drivers are submitted, the real `jobwarden` binary supervises them,
//! and their rows must end as Spark says, with the reasons and history an operator needs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use entity::prelude::*;
use entity::spark_job_executions;
use sea_orm::{DatabaseConnection, EntityTrait};
use serde_json::json;

use crate::helpers::wait_until;
use crate::own_cluster::{read_only, track, track_unnamed, write_config};
use crate::worlds::{
    assert_polled_to, history, started, started_logging_debug, stopped, wait_all_final,
    wait_for_row,
};

pub(crate) struct Cluster {
    pub(crate) rest: String,
    pub(crate) ui: String,
    /// The distribution's `jars/`, to compile a driver that runs real stages.
    pub(crate) jars: std::path::PathBuf,
}

/// The cluster from the environment; `None` (with the reason printed) where there is none,
/// except under CI, where its absence is a failure.
pub(crate) fn cluster() -> Option<Cluster> {
    let rest = std::env::var("JOBWARDEN_TEST_SPARK_REST_URL").ok();
    let ui = std::env::var("JOBWARDEN_TEST_SPARK_MASTER_UI").ok();
    let home = std::env::var("JOBWARDEN_TEST_SPARK_HOME").ok();
    match (rest, ui, home) {
        (Some(rest), Some(ui), Some(home)) => Some(Cluster {
            rest,
            ui,
            jars: Path::new(&home).join("jars"),
        }),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(
                !ci,
                "CI must run the real-Spark test: start the cluster with .ci/spark.sh and export its variables"
            );
            eprintln!("SKIPPED real-Spark test: JOBWARDEN_TEST_SPARK_REST_URL is not set (run `eval \"$(bash .ci/spark.sh)\"` to start a local cluster)");
            None
        }
    }
}

/// Held by every test that uses the real cluster: one of them makes the master forget its
/// finished drivers (Spark's `clear`), which must not happen under another's feet.
pub(crate) static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Spark calls `main` by reflection, so each driver is a public class in its own file.
/// `Stages` runs three real jobs of 20 slow tasks, so its UI reports progress, then waits for
/// the file named by its first argument (at most its second, in ms) before it ends, so a test
/// sees it running with progress however slowly the machine runs it. `Gate` runs
/// until the file named by its first argument exists (and fails after its second, in ms), so
/// a test ends it at the moment it chooses instead of guessing a duration.
const DRIVERS: [(&str, &str); 5] = [
    (
        "Stages",
        "import org.apache.spark.SparkConf; import org.apache.spark.api.java.JavaSparkContext; import java.util.*; import java.nio.file.*; \
         public class Stages { public static void main(String[] a) throws Exception { \
           JavaSparkContext sc = new JavaSparkContext(new SparkConf()); \
           List<Integer> xs = new ArrayList<>(); for (int i = 0; i < 60; i++) xs.add(i); \
           for (int round = 0; round < 3; round++) { \
             sc.parallelize(xs, 20).map(x -> { Thread.sleep(100); return x; }).count(); } \
           Path open = Paths.get(a[0]); long deadline = System.currentTimeMillis() + Long.parseLong(a[1]); \
           while (!Files.exists(open) && System.currentTimeMillis() < deadline) Thread.sleep(100); \
           sc.stop(); } }",
    ),
    (
        "Sleep",
        "public class Sleep { public static void main(String[] a) throws Exception { Thread.sleep(Long.parseLong(a[0])); } }",
    ),
    (
        "Fail",
        "public class Fail { public static void main(String[] a) { throw new IllegalStateException(\"input table missing: jobwarden-e2e\"); } }",
    ),
    (
        "Forever",
        "public class Forever { public static void main(String[] a) throws Exception { while (true) Thread.sleep(1000); } }",
    ),
    (
        "Gate",
        "import java.nio.file.*; \
         public class Gate { public static void main(String[] a) throws Exception { \
           Path open = Paths.get(a[0]); long deadline = System.currentTimeMillis() + Long.parseLong(a[1]); \
           while (!Files.exists(open)) { \
             if (System.currentTimeMillis() > deadline) throw new IllegalStateException(\"the gate was never opened\"); \
             Thread.sleep(100); } } }",
    ),
];

/// Compiles the tiny drivers into one jar.
pub(crate) fn build_jar(dir: &Path, spark_jars: &Path) -> String {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut sources = Vec::new();
    for (name, code) in DRIVERS {
        let file = src.join(format!("{name}.java"));
        std::fs::write(&file, code).unwrap();
        sources.push(file.display().to_string());
    }
    let classes = dir.join("classes");
    let javac = Command::new("javac")
        .arg("-cp")
        .arg(format!("{}/*", spark_jars.display()))
        .arg("-d")
        .arg(&classes)
        .args(&sources)
        .output()
        .expect("javac must be installed for the real-Spark test");
    assert!(
        javac.status.success(),
        "{}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let jar = dir.join("drivers.jar");
    let packed = Command::new("jar")
        .args([
            "cf",
            jar.to_str().unwrap(),
            "-C",
            classes.to_str().unwrap(),
            ".",
        ])
        .output()
        .unwrap();
    assert!(
        packed.status.success(),
        "{}",
        String::from_utf8_lossy(&packed.stderr)
    );
    format!("file:{}", jar.display())
}

pub(crate) async fn submit(
    http: &reqwest::Client,
    cluster: &Cluster,
    jar: &str,
    main: &str,
    args: &[&str],
) -> String {
    let body = json!({
        "action": "CreateSubmissionRequest",
        "appResource": jar,
        "mainClass": main,
        "appArgs": args,
        "clientSparkVersion": "4.3.0",
        "environmentVariables": {"SPARK_ENV_LOADED": "1"},
        "sparkProperties": {
            "spark.master": "spark://127.0.0.1:7077",
            "spark.submit.deployMode": "cluster",
            "spark.app.name": format!("jobwarden-e2e-{main}"),
            "spark.driver.memory": "512m",
            "spark.executor.memory": "512m",
            "spark.cores.max": "1",
            "spark.jars": jar,
            "spark.driver.supervise": "false",
        },
    });
    let answer = post_ok(
        http.post(format!("{}/v1/submissions/create", cluster.rest))
            .json(&body),
    )
    .await;
    answer["submissionId"].as_str().unwrap().to_owned()
}

/// Sends a request to the master's REST server; its answer, which must say it succeeded.
async fn post_ok(request: reqwest::RequestBuilder) -> serde_json::Value {
    let answer: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["success"], true, "{answer}");
    answer
}

/// A config for the binary supervising the shared cluster, polling every second; `more` ends
/// its `[spark]` lines. Returns the database file.
fn config(dir: &Path, cluster: &Cluster, more: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "rest_url = \"{}\"\nmaster_ui_url = \"{}\"\npoll_interval = \"1s\"\nrequest_timeout = \"5s\"{more}",
            cluster.rest, cluster.ui
        ),
        "",
    )
}

pub(crate) async fn row(db: &DatabaseConnection, id: &str) -> Option<spark_job_executions::Model> {
    SparkJobExecutions::find_by_id(id.to_owned())
        .one(db)
        .await
        .ok()
        .flatten()
}

#[actix_rt::test]
async fn real_spark_drivers_end_as_spark_says_with_reasons_and_history() {
    let Some(cluster) = cluster() else { return };
    let _cluster = CLUSTER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let jar = build_jar(dir.path(), &cluster.jars);
    let http = reqwest::Client::new();

    let sleeper = submit(&http, &cluster, &jar, "Sleep", &["3000"]).await;
    let failer = submit(&http, &cluster, &jar, "Fail", &[]).await;
    let forever = submit(&http, &cluster, &jar, "Forever", &[]).await;
    let missing = submit(
        &http,
        &cluster,
        "file:/nonexistent/jobwarden/missing.jar",
        "Sleep",
        &["1"],
    )
    .await;
    let stages_gate = dir.path().join("stages-may-end");
    let stages = submit(
        &http,
        &cluster,
        &jar,
        "Stages",
        &[&stages_gate.display().to_string(), "600000"],
    )
    .await;

    let db_path = config(dir.path(), &cluster, "\nstuck_timeout = \"3m\"");
    for (execution, submission) in [
        ("e2e-sleep", &sleeper),
        ("e2e-fail", &failer),
        ("e2e-forever", &forever),
        ("e2e-missing", &missing),
        ("e2e-stages", &stages),
    ] {
        track(dir.path(), execution, submission);
    }

    let service = started_logging_debug(dir.path());
    let db = read_only(&db_path).await;

    // Kill the endless driver once jobwarden has seen it running.
    wait_for_row(
        &db,
        "e2e-forever",
        "the endless driver to show Running",
        Duration::from_secs(120),
        |r| r.status == "Running",
    )
    .await;
    post_ok(http.post(format!("{}/v1/submissions/kill/{forever}", cluster.rest))).await;

    // Real progress from the running application's UI: past the state-based estimate (10%),
    // below done.
    wait_for_row(
        &db,
        "e2e-stages",
        "real progress from the Stages driver's UI",
        Duration::from_secs(120),
        |r| r.status == "Running" && r.progress > 10 && r.progress < 100,
    )
    .await;
    std::fs::write(&stages_gate, b"").unwrap();

    let started = Instant::now();
    wait_all_final(
        &db,
        &[
            "e2e-sleep",
            "e2e-fail",
            "e2e-forever",
            "e2e-missing",
            "e2e-stages",
        ],
        Duration::from_secs(180),
    )
    .await;
    eprintln!(
        "all five drivers final {:?} after the progress check",
        started.elapsed()
    );
    let stages_row = row(&db, "e2e-stages").await.unwrap();
    assert_eq!(stages_row.status, "Succeeded");
    assert_eq!(stages_row.progress, 100);

    let sleep = row(&db, "e2e-sleep").await.unwrap();
    assert_eq!(sleep.status, "Succeeded");
    assert_eq!(sleep.spark_state.as_deref(), Some("FINISHED"));
    assert_eq!(sleep.progress, 100);
    assert!(sleep.started_at.is_some() && sleep.completed_at.is_some());
    assert!(sleep.completed_at >= sleep.started_at);

    let fail = row(&db, "e2e-fail").await.unwrap();
    assert_eq!(fail.status, "Failed");
    assert_eq!(fail.spark_state.as_deref(), Some("FAILED"));
    let reason = fail.error_message.clone().unwrap();
    assert!(
        reason.starts_with(
            "Caused by: java.lang.IllegalStateException: input table missing: jobwarden-e2e"
        ),
        "{reason}"
    );
    assert!(fail.completed_at.is_some());

    let forever_row = row(&db, "e2e-forever").await.unwrap();
    assert_eq!(forever_row.status, "Cancelled");
    assert_eq!(forever_row.spark_state.as_deref(), Some("KILLED"));
    assert!(forever_row.started_at.is_some() && forever_row.completed_at.is_some());

    let missing_row = row(&db, "e2e-missing").await.unwrap();
    assert_eq!(missing_row.status, "Failed");
    assert_eq!(missing_row.spark_state.as_deref(), Some("ERROR"));
    let message = missing_row.error_message.clone().unwrap();
    assert!(message.contains("missing.jar"), "{message}");

    for (id, last_state) in [
        ("e2e-sleep", "Succeeded"),
        ("e2e-fail", "Failed"),
        ("e2e-forever", "Cancelled"),
        ("e2e-missing", "Failed"),
    ] {
        let history = assert_polled_to(&db, id, last_state).await;
        assert_eq!(history.first().unwrap().source, "api", "{id}");
    }
    let history = history(&db, "e2e-forever").await;
    assert!(history.iter().any(|h| h.to_status == "Running"));

    let log = stopped(service);
    assert!(
        log.contains("execution_id"),
        "per-job spans must name the execution"
    );
}

/// The master's status answer for a driver, as JSON.
async fn master_status(http: &reqwest::Client, cluster: &Cluster, id: &str) -> serde_json::Value {
    http.get(format!("{}/v1/submissions/status/{id}", cluster.rest))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A driver that finished and then dropped out of the master's list (what a master restart,
/// a failover or 200 newer completions do; here Spark's own `clear` endpoint) ends with its
/// true outcome, read from its worker's page, not "timed out".
#[actix_rt::test]
async fn a_finished_driver_the_master_forgot_ends_as_its_worker_says() {
    let Some(cluster) = cluster() else { return };
    let _cluster = CLUSTER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let jar = build_jar(dir.path(), &cluster.jars);
    let http = reqwest::Client::new();
    let sleeper = submit(&http, &cluster, &jar, "Sleep", &["500"]).await;
    let failer = submit(&http, &cluster, &jar, "Fail", &[]).await;
    wait_until(
        Duration::from_secs(120),
        "both drivers to end on the cluster",
        || {
            let http = http.clone();
            let (cluster, sleeper, failer) = (&cluster, &sleeper, &failer);
            async move {
                master_status(&http, cluster, sleeper).await["driverState"] == "FINISHED"
                    && master_status(&http, cluster, failer).await["driverState"] == "FAILED"
            }
        },
    )
    .await;
    post_ok(http.post(format!("{}/v1/submissions/clear", cluster.rest))).await;
    let forgotten = master_status(&http, &cluster, &sleeper).await;
    assert_eq!(
        forgotten["success"], false,
        "the master forgot it: {forgotten}"
    );

    let db_path = config(dir.path(), &cluster, "");
    for (execution, submission) in [("forgot-sleep", &sleeper), ("forgot-fail", &failer)] {
        track_unnamed(dir.path(), execution, submission);
    }
    let service = started(dir.path());
    let db = read_only(&db_path).await;
    wait_until(Duration::from_secs(60), "both rows to end", || {
        let db = db.clone();
        async move {
            row(&db, "forgot-sleep")
                .await
                .is_some_and(|r| r.status == "Succeeded")
                && row(&db, "forgot-fail")
                    .await
                    .is_some_and(|r| r.status == "Failed")
        }
    })
    .await;
    let failed = row(&db, "forgot-fail").await.unwrap();
    let reason = failed.error_message.unwrap();
    assert!(
        reason.contains("input table missing: jobwarden-e2e"),
        "the reason comes from the worker's log: {reason}"
    );
    assert!(failed.spark_state.unwrap().contains("worker page"));
    stopped(service);
}
