//! Graphs of jobs run by the real binary against the Spark protocol server: a thousand jobs in
//! layers (fan-out and fan-in) run parents first, and with three instances, one of them killed
//! mid-graph and started again, no child is started twice or before its parents.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use entity::{spark_job_attempts, spark_job_executions};
use jobwarden_testkit::process::Running;
use jobwarden_testkit::{Answer, SparkServer};
use sea_orm::{DatabaseConnection, EntityTrait};
use serde_json::json;

use crate::binary::jobwarden;
use crate::helpers::{Backend, TestDb};

/// Jobs in layers: each job of a layer waits for two of the layer before (fan-in), and each
/// job is the parent of about two of the next (fan-out).
struct Dag {
    /// Parents first.
    order: Vec<String>,
    parents: HashMap<String, Vec<String>>,
}

impl Dag {
    fn layered(prefix: &str, layers: usize, width: usize) -> Dag {
        let id = |layer: usize, i: usize| format!("{prefix}-{layer:02}-{i:03}");
        let mut order = Vec::new();
        let mut parents = HashMap::new();
        for layer in 0..layers {
            for i in 0..width {
                let mine: Vec<String> = if layer == 0 {
                    Vec::new()
                } else {
                    let mut p = vec![id(layer - 1, i), id(layer - 1, (i * 7 + 3) % width)];
                    p.dedup();
                    p
                };
                parents.insert(id(layer, i), mine);
                order.push(id(layer, i));
            }
        }
        Dag { order, parents }
    }
}

/// Registers every job of `dag` through the HTTP API, parents first.
async fn submit_all(base: &str, dag: &Dag) {
    let http = reqwest::Client::new();
    for id in &dag.order {
        let answer = http
            .post(format!("{base}/api/v1/jobs"))
            .json(&json!({
                "execution_id": id,
                "job_name": "dag",
                "submit": {"app_resource": "file:/jobs.jar", "main_class": "Step"},
                "after": dag.parents[id],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 201, "{id}");
    }
}

/// What the protocol server saw while the graph ran.
#[derive(Default)]
struct Seen {
    /// Drivers made per job.
    drivers: HashMap<String, usize>,
    /// Jobs whose driver was made while a parent's driver had not finished.
    early: Vec<String>,
}

/// Ends every driver the server makes (FINISHED, as Spark says it), after checking that each
/// parent of its job had ended first; until every job's row is Succeeded.
async fn run_drivers_until_done(
    spark: &SparkServer,
    dag: &Dag,
    db: &DatabaseConnection,
    limit: Duration,
    mut meanwhile: impl FnMut(usize),
) -> Seen {
    let mut seen = Seen::default();
    let mut finished: HashSet<String> = HashSet::new();
    let mut handled = 0;
    let deadline = Instant::now() + limit;
    loop {
        let created = spark.created();
        for driver in &created[handled..] {
            let mark = driver.mark.clone().unwrap_or_default();
            let job = mark.split(':').next().unwrap_or_default().to_owned();
            *seen.drivers.entry(job.clone()).or_default() += 1;
            if dag.parents[&job].iter().any(|p| !finished.contains(p)) {
                seen.early.push(job.clone());
            }
            spark.answer(&driver.submission_id, Answer::State("FINISHED"));
            spark.move_on_master(&driver.submission_id, "FINISHED");
            finished.insert(job);
        }
        handled = created.len();
        meanwhile(finished.len());
        if finished.len() == dag.order.len() {
            let succeeded = spark_job_executions::Entity::find()
                .all(db)
                .await
                .unwrap()
                .iter()
                .filter(|r| r.status == "Succeeded")
                .count();
            if succeeded == dag.order.len() {
                return seen;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} jobs ran within {limit:?}",
            finished.len(),
            dag.order.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What the server saw and what the rows say agree: one driver per job, none made before its
/// parents' drivers finished, and every child's attempt requested after its parents' rows ended.
async fn every_job_ran_once_after_its_parents(seen: &Seen, db: &DatabaseConnection, dag: &Dag) {
    assert!(
        seen.early.is_empty(),
        "started before a parent: {:?}",
        seen.early
    );
    let twice: Vec<_> = seen.drivers.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "not exactly one driver: {twice:?}");
    children_requested_after_their_parents_ended(db, dag).await;
}

/// For every dependency: the parent's row ended before the child's attempt was requested.
async fn children_requested_after_their_parents_ended(db: &DatabaseConnection, dag: &Dag) {
    let rows: HashMap<String, spark_job_executions::Model> = spark_job_executions::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.execution_id.clone(), r))
        .collect();
    let requested: HashMap<String, chrono::DateTime<chrono::Utc>> =
        spark_job_attempts::Entity::find()
            .all(db)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.execution_id, a.requested_at))
            .collect();
    for (child, parents) in &dag.parents {
        for parent in parents {
            let ended = rows[parent].completed_at.expect("the parent ended");
            assert!(
                ended <= requested[child],
                "{child} was requested at {} before {parent} ended at {ended}",
                requested[child]
            );
        }
    }
}

fn config(dir: &Path, database: &str, spark: &SparkServer, extra: &str) {
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[database]\nurl = \"{database}\"\n\
             [spark]\nrest_url = \"{url}\"\nmaster_ui_url = \"{url}\"\npoll_interval = \"300ms\"\n\
             max_concurrent_polls = 32\nrequest_timeout = \"5s\"\nmax_backoff = \"1s\"\n\
             [submit]\ncheck_interval = \"200ms\"\nsettle = \"2s\"\n{extra}\n",
            url = spark.url()
        ),
    )
    .unwrap();
}

#[actix_rt::test]
async fn a_thousand_job_graph_runs_every_job_once_and_never_a_child_before_its_parents() {
    let spark = SparkServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db_file = dir.path().join("dag.db");
    let url = format!("sqlite://{}?mode=rwc", db_file.display());
    config(dir.path(), &url, &spark, "");
    let mut service = Running::start(jobwarden(dir.path()));
    let base = service.http_url();
    let dag = Dag::layered("g", 10, 100);
    submit_all(&base, &dag).await;
    let db = sea_orm::Database::connect(url.as_str()).await.unwrap();
    let started = Instant::now();
    let seen = run_drivers_until_done(&spark, &dag, &db, Duration::from_secs(300), |_| {}).await;
    eprintln!(
        "1,000 jobs in 10 layers ran in {:?} (poll_interval 300ms, check_interval 200ms)",
        started.elapsed()
    );
    every_job_ran_once_after_its_parents(&seen, &db, &dag).await;
    let shown: serde_json::Value = reqwest::get(format!("{base}/api/v1/jobs/g-05-010"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        shown["after"],
        json!([
            {"execution_id": "g-04-010", "mode": "success", "status": "Succeeded"},
            {"execution_id": "g-04-073", "mode": "success", "status": "Succeeded"},
        ]),
        "{shown}"
    );
    service.signal("TERM");
    let (status, log) = service.wait(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}

mod three_instances_one_killed_mid_graph_start_no_child_twice_or_before_its_parents {
    use crate::helpers::{run_on, Backend};

    #[actix_rt::test]
    async fn postgres() {
        run_on(Backend::Postgres, super::three_instances_one_killed).await
    }

    #[actix_rt::test]
    async fn mariadb() {
        run_on(Backend::MariaDb, super::three_instances_one_killed).await
    }
}

async fn three_instances_one_killed(db: TestDb) {
    assert_ne!(db.backend, Backend::Sqlite);
    let spark = SparkServer::start().await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for (i, dir) in dirs.iter().enumerate() {
        config(
            dir.path(),
            &db.url,
            &spark,
            &format!("[instance]\nid = \"dag-{i}\"\nlease = \"3s\"\n"),
        );
    }
    let mut instances: Vec<Option<Running>> = dirs
        .iter()
        .map(|d| Some(Running::start(jobwarden(d.path()))))
        .collect();
    let base = instances[0].as_mut().unwrap().http_url();
    let dag = Dag::layered("k", 6, 40);
    submit_all(&base, &dag).await;
    let mut killed = false;
    let seen = run_drivers_until_done(&spark, &dag, &db.db, Duration::from_secs(300), |done| {
        // A third of the way in, one instance dies mid-decision and comes back.
        if !killed && done >= dag.order.len() / 3 {
            killed = true;
            let victim = instances[2].take().unwrap();
            victim.signal("KILL");
            let _ = victim.wait(Duration::from_secs(10));
            instances[2] = Some(Running::start(jobwarden(dirs[2].path())));
        }
    })
    .await;
    assert!(killed);
    every_job_ran_once_after_its_parents(&seen, &db.db, &dag).await;
    for running in instances.into_iter().flatten() {
        running.signal("TERM");
        let _ = running.wait(Duration::from_secs(30));
    }
}

#[actix_rt::test]
async fn a_submission_that_cannot_be_ordered_is_refused_with_a_400_naming_the_field() {
    let spark = SparkServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bad.db").display());
    config(dir.path(), &url, &spark, "");
    let mut service = Running::start(jobwarden(dir.path()));
    let base = service.http_url();
    let http = reqwest::Client::new();
    let spec = json!({"app_resource": "file:/jobs.jar", "main_class": "Step"});
    let refused = |body: serde_json::Value| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let answer = http
                .post(format!("{base}/api/v1/jobs"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            let body: serde_json::Value = answer.json().await.unwrap();
            (
                status,
                body["error"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let cases = [
        (
            json!({"execution_id": "c1", "submit": spec, "after": ["nobody"]}),
            "\"nobody\"",
        ),
        (
            json!({"execution_id": "c2", "submit": spec, "after": ["c2"]}),
            "\"c2\" would wait for itself",
        ),
        (
            json!({"execution_id": "c3", "submit": spec, "priority": -1}),
            "priority must be",
        ),
        (
            json!({"execution_id": "c4", "submit": spec, "priority": 1_000_000}),
            "priority must be",
        ),
        (
            json!({"execution_id": "c5", "submit": spec, "clusters": ["mars"]}),
            "\"mars\"",
        ),
        (
            json!({"execution_id": "c6", "submission_id": "driver-1", "after": ["x"]}),
            "give them with submit",
        ),
        (
            json!({"execution_id": "c7", "submit": spec, "after": ["a"], "after_any": ["a"]}),
            "twice",
        ),
    ];
    for (body, names) in cases {
        let (status, message) = refused(body.clone()).await;
        assert_eq!(status, 400, "{body}: {message}");
        assert!(message.contains(names), "{body}: {message}");
    }
    let rows = spark_job_executions::Entity::find()
        .all(&sea_orm::Database::connect(url.as_str()).await.unwrap())
        .await
        .unwrap();
    assert!(rows.is_empty(), "nothing registered: {rows:?}");
    service.signal("TERM");
    let _ = service.wait(Duration::from_secs(30));
}
