//! The JSON log (`telemetry.format = "json"`) of the real binary: one JSON object a line, with
//! the span fields (actor, job id, cluster) that let one `jq` filter follow one job.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use jobwarden_testkit::{Answer, SparkServer};
use serde_json::Value;

use crate::binary::{jobwarden_in, Running};

/// Follows one execution through the log: every line where its id is a field of the event or
/// of any span the event happened in. The README quotes this filter.
const FOLLOW_ONE_JOB: &str = r#"select(any(.. | objects; .execution_id? == $id))"#;

/// The binary on the embedded defaults in `dir`, logging JSON, polling `spark` often.
fn start_logging_json(dir: &Path, spark: &SparkServer) -> Running {
    let mut running = jobwarden_in(dir)
        .env("JOBWARDEN__TELEMETRY__FORMAT", "json")
        // The poller's own lines are debug: on, to see the spans they carry.
        .env("RUST_LOG", "info,jobwarden=debug")
        .env("JOBWARDEN__SPARK__REST_URL", spark.url())
        .env("JOBWARDEN__SPARK__POLL_INTERVAL", "200ms")
        .env("JOBWARDEN__HTTP__BIND", "127.0.0.1:0")
        .start();
    running.wait_for_line("jobwarden running", Duration::from_secs(60));
    running
}

fn track(base: &str, id: &str, submission: &str) {
    let answer = Command::new("curl")
        .args(["-sf", "-H", "content-type: application/json", "-d"])
        .arg(format!(
            r#"{{"execution_id":"{id}","submission_id":"{submission}"}}"#
        ))
        .arg(format!("{base}/api/v1/jobs"))
        .output()
        .expect("curl runs");
    assert!(answer.status.success(), "tracking {id}: {answer:?}");
}

/// `jq -c --arg id <id> <filter>` over `log`: the lines it keeps, parsed.
fn jq(log: &str, id: &str, filter: &str) -> Vec<Value> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), log).unwrap();
    let out = Command::new("jq")
        .args(["-c", "--arg", "id", id, filter])
        .arg(file.path())
        .output()
        .expect("jq is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "jq refused the log: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The log of a job tracked, seen running, then finished, beside another job's: one run,
/// shared by the tests that read it.
fn log_of_a_whole_life() -> &'static str {
    static LOG: OnceLock<String> = OnceLock::new();
    LOG.get_or_init(run_a_whole_life)
}

fn run_a_whole_life() -> String {
    let spark = actix_rt::System::new().block_on(SparkServer::start());
    spark.answer("driver-life", Answer::State("RUNNING"));
    spark.answer("driver-other", Answer::State("RUNNING"));
    let dir = tempfile::tempdir().unwrap();
    let mut service = start_logging_json(dir.path(), &spark);
    let base = service.http_url();
    track(&base, "life", "driver-life");
    track(&base, "other", "driver-other");
    service.wait_for_line(r#""to":"Running""#, Duration::from_secs(60));
    spark.answer("driver-life", Answer::State("FINISHED"));
    service.wait_for_line(r#""to":"Succeeded""#, Duration::from_secs(60));
    let (status, log) = service.stop(Duration::from_secs(60));
    assert!(status.success(), "exit {status:?}:\n{log}");
    log
}

#[test]
fn every_line_of_the_json_log_is_one_json_object() {
    let log = log_of_a_whole_life();
    for line in log.lines() {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(event.is_object(), "{line}");
        for key in ["timestamp", "level", "fields"] {
            assert!(event.get(key).is_some(), "no {key:?} in {line}");
        }
    }
}

#[test]
fn one_jq_filter_on_its_id_follows_a_job_from_registration_to_its_end() {
    let log = log_of_a_whole_life();
    let lines = jq(log, "life", FOLLOW_ONE_JOB);
    let statuses: Vec<&str> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "job status changed")
        .map(|l| l["fields"]["to"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["Queued", "Running", "Succeeded"], "{lines:#?}");
    let polls = lines.iter().filter(|l| l["span"]["name"] == "poll").count();
    assert!(
        polls >= 2,
        "the polls of the job are in its lines: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.to_string().contains("driver-other")),
        "another job's lines are not: {lines:#?}"
    );
}

#[test]
fn json_lines_carry_the_actor_and_the_cluster() {
    let log = log_of_a_whole_life();
    let lines = jq(log, "life", FOLLOW_ONE_JOB);
    let poll = lines
        .iter()
        .find(|l| l["span"]["name"] == "poll")
        .unwrap_or_else(|| panic!("no poll line: {lines:#?}"));
    assert_eq!(poll["span"]["actor"], "spark_poller", "{poll}");
    assert_eq!(poll["span"]["cluster"], "default", "{poll}");
    assert_eq!(poll["span"]["submission_id"], "driver-life", "{poll}");
    let change = lines
        .iter()
        .find(|l| l["fields"]["to"] == "Succeeded")
        .unwrap_or_else(|| panic!("no end: {lines:#?}"));
    assert_eq!(change["fields"]["actor"], "job_store", "{change}");
    assert_eq!(change["fields"]["cluster"], "default", "{change}");
    assert_eq!(change["fields"]["source"], "spark_poll", "{change}");
}
