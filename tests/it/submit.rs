//! jobwarden submitting, retrying and cancelling jobs on a real Spark cluster, through the real
//! binary: attempts recorded and retried by policy, cancels confirmed by Spark, and never a
//! second driver for one attempt, whatever moment jobwarden dies at.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{json, Value};

use crate::binary::{jobwarden_in, Running};
use crate::helpers::wait_until;
use crate::own_cluster::{read_only, spark_home, Layout, OwnCluster, OWN_CLUSTER};
use crate::real_spark::{build_jar, cluster, row, Cluster, CLUSTER};
use crate::real_spark_restarts::{history, wait_for_status};

/// A config for the binary on `rest` (and its UI): fast polls and submission checks, a short
/// settle, and `retry` as the `[submit]` section's extra lines.
fn write_config(dir: &Path, rest: &str, ui: &str, master: &str, submit: &str) -> PathBuf {
    let db = dir.join("jw.db");
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[database]\nurl = \"sqlite://{}?mode=rwc\"\n\
             [spark]\nrest_url = \"{rest}\"\nmaster_ui_url = \"{ui}\"\nmaster_url = \"{master}\"\n\
             poll_interval = \"1s\"\nrequest_timeout = \"3s\"\nmax_backoff = \"1s\"\n\
             [store]\nsweep_interval = \"1s\"\n\
             [submit]\ncheck_interval = \"300ms\"\nsettle = \"3s\"\n{submit}\n",
            db.display()
        ),
    )
    .unwrap();
    db
}

struct Service {
    running: Running,
    base: String,
    http: reqwest::Client,
}

impl Service {
    fn start(dir: &Path, crash_at: Option<&str>) -> Service {
        let mut running = jobwarden_in(dir)
            .envs(crash_at.map(|point| ("JOBWARDEN_CRASH_AT", point)))
            .start();
        Service {
            base: running.http_url(),
            running,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let answer = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn submit(&self, id: &str, spec: Value) -> Value {
        let (status, body) = self
            .post(
                "/api/v1/jobs",
                json!({"execution_id": id, "job_name": id, "submit": spec}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }
}

fn spec(jar: &str, main: &str, args: &[&str], retry: Value) -> Value {
    json!({
        "app_resource": jar,
        "main_class": main,
        "args": args,
        "spark_properties": {
            "spark.driver.memory": "512m",
            "spark.executor.memory": "512m",
            "spark.cores.max": "1",
        },
        "retry": retry,
    })
}

async fn attempts(db: &DatabaseConnection, id: &str) -> Vec<entity::spark_job_attempts::Model> {
    entity::spark_job_attempts::Entity::find()
        .filter(entity::spark_job_attempts::Column::ExecutionId.eq(id))
        .order_by_asc(entity::spark_job_attempts::Column::Attempt)
        .all(db)
        .await
        .unwrap_or_default()
}

/// Every driver the master at `ui` lists whose launch command carries a mark starting with
/// `prefix`, read from each driver's stderr on its worker.
pub(crate) async fn drivers_marked(ui: &str, prefix: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let json: Value = http
        .get(format!("{ui}/json/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut found = Vec::new();
    for driver in crate::own_cluster::listed_drivers(&json) {
        let (Some(id), Some(worker)) = (driver["id"].as_str(), driver["worker"].as_str()) else {
            continue;
        };
        let Some(address) = json["workers"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| w["id"] == worker))
            .and_then(|w| w["webuiaddress"].as_str())
        else {
            continue;
        };
        let log = http
            .get(format!(
                "{address}/log/?driverId={id}&logType=stderr&offset=0&byteLength=32768"
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap_or_default();
        if log.contains(&format!("-Dspark.jobwarden.attempt={prefix}"))
            && !found.contains(&id.to_owned())
        {
            found.push(id.to_owned());
        }
    }
    found
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

struct Shared {
    cluster: Cluster,
    jar: String,
    _jar_dir: tempfile::TempDir,
    dir: tempfile::TempDir,
    db: PathBuf,
}

/// The shared cluster of `.ci/spark.sh` (REST on), a jar of tiny drivers, and a config.
fn shared(submit: &str) -> Option<Shared> {
    let cluster = cluster()?;
    let jar_dir = tempfile::tempdir().unwrap();
    let jar = build_jar(jar_dir.path(), &cluster.jars);
    let dir = tempfile::tempdir().unwrap();
    let db = write_config(
        dir.path(),
        &cluster.rest,
        &cluster.ui,
        "spark://127.0.0.1:7077",
        submit,
    );
    Some(Shared {
        cluster,
        jar,
        _jar_dir: jar_dir,
        dir,
        db,
    })
}

/// The `Gate` driver fails at once while its file is missing and succeeds once it exists: the
/// test opens it after the second failure, so the third attempt succeeds.
#[actix_rt::test]
async fn a_job_that_fails_twice_then_succeeds_has_three_attempts_and_ends_succeeded() {
    let Some(s) = shared("") else { return };
    let _cluster = CLUSTER.lock().await;
    let service = Service::start(s.dir.path(), None);
    let id = unique("fails-twice");
    let gate = s.dir.path().join("gate-open");
    service
        .submit(
            &id,
            spec(
                &s.jar,
                "Gate",
                &[gate.to_str().unwrap(), "0"],
                json!({"max_attempts": 3, "initial_backoff": "2s"}),
            ),
        )
        .await;
    let db = read_only(&s.db).await;
    wait_until(Duration::from_secs(120), "two failed attempts", || {
        let db = db.clone();
        let id = id.clone();
        async move {
            attempts(&db, &id)
                .await
                .iter()
                .filter(|a| a.outcome.as_deref() == Some("failed"))
                .count()
                == 2
        }
    })
    .await;
    std::fs::write(&gate, b"open").unwrap();
    wait_for_status(&db, &id, "Succeeded", Duration::from_secs(120)).await;
    let all = attempts(&db, &id).await;
    let outcomes: Vec<_> = all
        .iter()
        .map(|a| a.outcome.clone().unwrap_or_default())
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "succeeded"], "{all:?}");
    for failed in &all[..2] {
        let reason = failed.reason.clone().unwrap_or_default();
        assert!(reason.contains("the gate was never opened"), "{reason}");
        assert!(failed.submission_id.is_some() && failed.ended_at.is_some());
    }
    let ids: std::collections::HashSet<_> = all.iter().map(|a| a.submission_id.clone()).collect();
    assert_eq!(ids.len(), 3, "each attempt has its own driver: {all:?}");
    let job = row(&db, &id).await.unwrap();
    assert_eq!(job.attempt, 3);
    assert_eq!(job.submission_id, all[2].submission_id);
    let lines = history(&db, &id).await;
    let retrying = lines
        .iter()
        .filter(|h| h.to_status == "Retrying" && h.from_status.as_deref() != Some("Retrying"))
        .count();
    assert_eq!(retrying, 2, "{lines:#?}");
    assert_eq!(lines.last().unwrap().to_status, "Succeeded");
}

#[actix_rt::test]
async fn exhausted_attempts_end_failed_with_every_attempts_reason() {
    let Some(s) = shared("") else { return };
    let _cluster = CLUSTER.lock().await;
    let service = Service::start(s.dir.path(), None);
    let id = unique("exhausted");
    service
        .submit(
            &id,
            spec(
                &s.jar,
                "Fail",
                &[],
                json!({"max_attempts": 2, "initial_backoff": "1s"}),
            ),
        )
        .await;
    let db = read_only(&s.db).await;
    wait_for_status(&db, &id, "Failed", Duration::from_secs(120)).await;
    let all = attempts(&db, &id).await;
    assert_eq!(all.len(), 2, "{all:?}");
    for attempt in &all {
        assert_eq!(attempt.outcome.as_deref(), Some("failed"));
        let reason = attempt.reason.clone().unwrap_or_default();
        assert!(reason.contains("input table missing"), "{reason}");
    }
    let job = row(&db, &id).await.unwrap();
    assert!(job
        .error_message
        .unwrap_or_default()
        .contains("input table missing"),);
    let (status, shown) = {
        let answer = service
            .http
            .get(format!("{}/api/v1/jobs/{id}", service.base))
            .send()
            .await
            .unwrap();
        (
            answer.status().as_u16(),
            answer.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 200);
    assert_eq!(
        shown["attempts"].as_array().map(Vec::len),
        Some(2),
        "{shown}"
    );
}

/// jobwarden dies (as by kill -9) at each step of the submission path; after a restart,
/// exactly one driver on the cluster carries attempt 1's mark, and the row follows it to its end.
#[actix_rt::test]
async fn a_crash_at_any_step_of_a_submission_leaves_exactly_one_driver_for_the_attempt() {
    let Some(s) = shared("") else { return };
    let _cluster = CLUSTER.lock().await;
    let db_path = s.db.clone();
    for point in ["after-record", "after-create", "after-store"] {
        let id = unique(&format!("crash-{point}"));
        let crashing = Service::start(s.dir.path(), Some(point));
        crashing
            .submit(
                &id,
                spec(&s.jar, "Sleep", &["2000"], json!({"max_attempts": 1})),
            )
            .await;
        let (status, log) = crashing.running.wait(Duration::from_secs(60));
        assert!(
            !status.success(),
            "{point}: the service should have died:\n{log}"
        );
        assert!(log.contains("JOBWARDEN_CRASH_AT"), "{log}");
        let began = Instant::now();
        let mut service = Service::start(s.dir.path(), None);
        let db = read_only(&db_path).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        while row(&db, &id).await.is_none_or(|r| r.status != "Succeeded") {
            assert!(
                Instant::now() < deadline,
                "{point}: {id} not Succeeded after 120 s: {:?}\nattempts {:?}\nservice log:\n{}",
                row(&db, &id).await,
                attempts(&db, &id).await,
                service.running.log_so_far()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let all = attempts(&db, &id).await;
        assert_eq!(all.len(), 1, "{point}: {all:?}");
        assert_eq!(all[0].outcome.as_deref(), Some("succeeded"), "{point}");
        let marked = drivers_marked(&s.cluster.ui, &format!("{id}:1:")).await;
        assert_eq!(
            marked.len(),
            1,
            "{point}: drivers carrying attempt 1's mark: {marked:?}"
        );
        assert_eq!(all[0].submission_id.as_deref(), Some(marked[0].as_str()));
        eprintln!(
            "{point}: one driver ({}), row Succeeded {:?} after the restart",
            marked[0],
            began.elapsed()
        );
        drop(service);
    }
}

#[actix_rt::test]
async fn a_cancelled_running_job_ends_cancelled_once_spark_reports_it_killed() {
    let Some(s) = shared("") else { return };
    let _cluster = CLUSTER.lock().await;
    let service = Service::start(s.dir.path(), None);
    let id = unique("cancel-running");
    service
        .submit(&id, spec(&s.jar, "Forever", &[], json!({})))
        .await;
    let db = read_only(&s.db).await;
    wait_for_status(&db, &id, "Running", Duration::from_secs(90)).await;
    let (status, answer) = service
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ended"], false, "a kill is only requested: {answer}");
    wait_for_status(&db, &id, "Cancelled", Duration::from_secs(60)).await;
    let job = row(&db, &id).await.unwrap();
    assert_eq!(job.spark_state.as_deref(), Some("KILLED"));
    let all = attempts(&db, &id).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].outcome.as_deref(), Some("cancelled"));
    let lines = history(&db, &id).await;
    assert!(
        lines.iter().any(|h| h
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("cancel requested")),
        "{lines:#?}"
    );
}

#[actix_rt::test]
async fn a_job_waiting_for_its_retry_is_cancelled_at_once_without_another_submission() {
    let Some(s) = shared("") else { return };
    let _cluster = CLUSTER.lock().await;
    let service = Service::start(s.dir.path(), None);
    let id = unique("cancel-waiting");
    service
        .submit(
            &id,
            spec(
                &s.jar,
                "Fail",
                &[],
                json!({"max_attempts": 3, "initial_backoff": "1m"}),
            ),
        )
        .await;
    let db = read_only(&s.db).await;
    wait_for_status(&db, &id, "Retrying", Duration::from_secs(90)).await;
    let (status, answer) = service
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ended"], true, "{answer}");
    let job = row(&db, &id).await.unwrap();
    assert_eq!(job.status, "Cancelled");
    // Several submission checks later, still one attempt and one driver.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(attempts(&db, &id).await.len(), 1);
    assert_eq!(
        drivers_marked(&s.cluster.ui, &format!("{id}:")).await.len(),
        1
    );
    let (again, refused) = service
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(again, 409, "{refused}");
}

/// A retry falls due while the master is down: nothing is spent; once it is back, attempt 2 is
/// submitted.
#[actix_rt::test]
async fn a_retry_due_while_the_master_is_down_spends_no_attempt_and_runs_when_it_is_back() {
    let Some(home) = spark_home("JOBWARDEN_TEST_SPARK_HOME", ".ci/spark.sh") else {
        return;
    };
    let _turn = OWN_CLUSTER.lock().await;
    let layout = Layout {
        master_port: 7577,
        ui_port: 8580,
        rest_port: 6566,
        rest_enabled: true,
        properties: Vec::new(),
        worker_properties: Vec::new(),
        worker_uis: vec![8581],
        worker_cores: 2,
        worker_memory: "1g",
    };
    let mut spark = OwnCluster::start(&home, layout).await;
    let jar_dir = tempfile::tempdir().unwrap();
    let jar = build_jar(jar_dir.path(), &home.join("jars"));
    let dir = tempfile::tempdir().unwrap();
    let db_path = write_config(
        dir.path(),
        &spark.rest_url(),
        &spark.ui_url(),
        &spark.spark_url(),
        "",
    );
    let service = Service::start(dir.path(), None);
    let id = unique("master-down");
    service
        .submit(
            &id,
            spec(
                &jar,
                "Fail",
                &[],
                json!({"max_attempts": 3, "initial_backoff": "6s"}),
            ),
        )
        .await;
    let db = read_only(&db_path).await;
    wait_for_status(&db, &id, "Retrying", Duration::from_secs(90)).await;
    spark.kill_master();
    let due = row(&db, &id).await.unwrap().next_attempt_at.unwrap();
    // Past the retry's time, with many submission checks in between.
    let wait = (due - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(4);
    tokio::time::sleep(wait).await;
    let job = row(&db, &id).await.unwrap();
    assert_eq!(job.status, "Retrying");
    assert_eq!(job.attempt, 1, "no attempt spent while the master is down");
    assert_eq!(attempts(&db, &id).await.len(), 1);
    assert!(
        job.last_poll_error
            .unwrap_or_default()
            .contains("out of reach"),
        "the row says why it waits"
    );
    spark.start_master();
    spark.wait_alive(1).await;
    wait_until(Duration::from_secs(60), "attempt 2 submitted", || {
        let db = db.clone();
        let id = id.clone();
        async move {
            attempts(&db, &id)
                .await
                .get(1)
                .is_some_and(|a| a.submission_id.is_some())
        }
    })
    .await;
    let all = attempts(&db, &id).await;
    assert_eq!(all[0].attempt, 1);
    assert_eq!(all[1].attempt, 2);
}

/// A cluster configured as REST-off (`status_source = "master_ui"`) cannot take submissions:
/// the request is refused with a message that says so and what to do.
#[actix_rt::test]
async fn a_submission_to_a_rest_off_cluster_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jw.db");
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[database]\nurl = \"sqlite://{}?mode=rwc\"\n[spark]\nrest_url = \"http://127.0.0.1:9\"\nstatus_source = \"master_ui\"\n",
            db.display()
        ),
    )
    .unwrap();
    let service = Service::start(dir.path(), None);
    let (status, body) = service
        .post(
            "/api/v1/jobs",
            json!({"execution_id": "rest-off", "submit": {"app_resource": "file:/x.jar", "main_class": "Main"}}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let message = body.to_string();
    assert!(message.contains("spark.master.rest.enabled"), "{message}");
}

#[actix_rt::test]
async fn a_job_request_with_both_or_neither_submission_id_and_spec_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jw.db");
    std::fs::write(
        dir.path().join("config.toml"),
        format!("[database]\nurl = \"sqlite://{}?mode=rwc\"\n", db.display()),
    )
    .unwrap();
    let service = Service::start(dir.path(), None);
    let both = json!({"execution_id": "x", "submission_id": "driver-1",
        "submit": {"app_resource": "file:/x.jar", "main_class": "Main"}});
    assert_eq!(service.post("/api/v1/jobs", both).await.0, 400);
    let neither = json!({"execution_id": "x"});
    assert_eq!(service.post("/api/v1/jobs", neither).await.0, 400);
    let reserved = json!({"execution_id": "x",
        "submit": {"app_resource": "file:/x.jar", "main_class": "Main", "spark_properties": {"spark.master": "local"}}});
    let (status, body) = service.post("/api/v1/jobs", reserved).await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("spark.master"), "{body}");
}

/// A small graph on the real cluster: `extract` then `transform` (after it succeeds); `audit`
/// fails; `report` runs after `transform` succeeded and `audit` ended whatever its outcome;
/// `publish` needed `audit` to succeed, so it ends Cancelled naming it and is never submitted.
#[actix_rt::test]
async fn a_small_graph_runs_each_job_after_its_parents_on_the_real_cluster() {
    let Some(s) = shared("") else { return };
    let _cluster = CLUSTER.lock().await;
    let service = Service::start(s.dir.path(), None);
    let once = json!({"max_attempts": 1});
    let tag = unique("dag");
    let id = |name: &str| format!("{tag}-{name}");
    let graph: [(&str, &str, &[&str], &[&str]); 5] = [
        ("extract", "Sleep", &[], &[]),
        ("transform", "Sleep", &["extract"], &[]),
        ("audit", "Fail", &[], &[]),
        ("report", "Sleep", &["transform"], &["audit"]),
        ("publish", "Sleep", &["audit"], &[]),
    ];
    for (name, main, after, after_any) in graph {
        let args: &[&str] = if main == "Sleep" { &["300"] } else { &[] };
        let after: Vec<String> = after.iter().map(|p| id(p)).collect();
        let after_any: Vec<String> = after_any.iter().map(|p| id(p)).collect();
        let (status, body) = service
            .post(
                "/api/v1/jobs",
                json!({
                    "execution_id": id(name),
                    "job_name": name,
                    "submit": spec(&s.jar, main, args, once.clone()),
                    "after": after,
                    "after_any": after_any,
                }),
            )
            .await;
        assert_eq!(status, 201, "{name}: {body}");
    }
    let db = read_only(&s.db).await;
    for (name, status) in [
        ("extract", "Succeeded"),
        ("transform", "Succeeded"),
        ("audit", "Failed"),
        ("report", "Succeeded"),
        ("publish", "Cancelled"),
    ] {
        wait_for_status(&db, &id(name), status, Duration::from_secs(180)).await;
    }
    // Each child's driver was asked for only once its parents had ended.
    for (name, _, after, after_any) in graph {
        let Some(requested) = attempts(&db, &id(name))
            .await
            .first()
            .map(|a| a.requested_at)
        else {
            continue;
        };
        for parent in after.iter().chain(after_any.iter()) {
            let ended = row(&db, &id(parent)).await.unwrap().completed_at.unwrap();
            assert!(
                ended <= requested,
                "{name} asked for at {requested}, {parent} ended {ended}"
            );
        }
    }
    assert!(
        attempts(&db, &id("publish")).await.is_empty(),
        "publish was never submitted"
    );
    let publish = row(&db, &id("publish")).await.unwrap();
    let reason = publish.error_message.unwrap_or_default();
    assert!(
        reason.contains(&format!("parent {} ended Failed", id("audit"))),
        "{reason}"
    );
    let marked = drivers_marked(&s.cluster.ui, &tag).await;
    assert_eq!(marked.len(), 4, "one driver per job that ran: {marked:?}");
}
