//! A real high-availability Spark pair owned by the test (two 4.x masters elected through
//! ZooKeeper, one worker): the alive master is killed under a running driver, and the real
//! `jobwarden` binary must follow the standby that takes over without failing the job.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use entity::prelude::*;
use sea_orm::EntityTrait;
use serde_json::{json, Value};

use crate::binary::{jobwarden, Running};
use crate::helpers::require_all_backends;
use crate::own_cluster::{read_only, spark_home, track, write_config, Daemon, OWN_CLUSTER};
use crate::real_spark::{build_jar, row};
use crate::worlds::history;

/// One master of the pair: RPC, REST and web UI ports, none of them a default, so the shared
/// cluster of `.ci/spark.sh` (7077/6066/8080) runs beside it.
struct MasterPorts {
    rpc: u16,
    rest: u16,
    ui: u16,
}

const MASTERS: [MasterPorts; 2] = [
    MasterPorts {
        rpc: 7277,
        rest: 6266,
        ui: 8280,
    },
    MasterPorts {
        rpc: 7377,
        rest: 6366,
        ui: 8380,
    },
];
const WORKER_UI: u16 = 8281;
/// Spark's own form for an HA group, as the worker and the submission name it.
const SPARK_MASTER: &str = "spark://127.0.0.1:7277,127.0.0.1:7377";

/// The ZooKeeper server the masters elect their leader through; `None` (with the reason
/// printed) where there is none, except under CI, where its absence is a failure.
fn zookeeper() -> Option<String> {
    match std::env::var("JOBWARDEN_TEST_ZOOKEEPER")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(zookeeper) => Some(zookeeper),
        None => {
            assert!(
                !require_all_backends(),
                "CI must run the Spark HA test: JOBWARDEN_TEST_ZOOKEEPER is not set (run `eval \"$(bash .ci/zookeeper.sh)\"`)"
            );
            eprintln!("SKIPPED Spark HA test: JOBWARDEN_TEST_ZOOKEEPER is not set (run `eval \"$(bash .ci/zookeeper.sh)\"`)");
            None
        }
    }
}

/// Two masters sharing one ZooKeeper election and one worker registered with both.
struct HaPair {
    masters: [Daemon; 2],
    worker: Daemon,
    http: reqwest::Client,
}

impl HaPair {
    /// Master 1 first, so that it is the one elected; master 2 once master 1 is ALIVE, so
    /// that it waits as the standby; then the worker, naming both.
    async fn start(home: &Path, zookeeper: &str, dir: &Path) -> HaPair {
        let began = Instant::now();
        for port in MASTERS
            .iter()
            .flat_map(|m| [m.rpc, m.rest, m.ui])
            .chain([WORKER_UI])
        {
            // A daemon an interrupted run left behind would answer in this one's place.
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
                "port {port} is taken: is a Spark process of an earlier run still alive? (`ss -ltnp | grep {port}`)"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        // Election and recovery state of this run only: whatever an earlier run left in
        // ZooKeeper (its workers, its drivers) is never recovered here.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let znode = format!("/jobwarden-ha-{}-{nanos}", std::process::id());
        let master = |i: usize| {
            let ports = &MASTERS[i];
            let properties = dir.join(format!("master{}.properties", i + 1));
            std::fs::write(
                &properties,
                format!(
                    "spark.master.rest.enabled true\n\
                     spark.master.rest.host 127.0.0.1\n\
                     spark.master.rest.port {}\n\
                     spark.deploy.recoveryMode ZOOKEEPER\n\
                     spark.deploy.zookeeper.url {zookeeper}\n\
                     spark.deploy.zookeeper.dir {znode}\n",
                    ports.rest
                ),
            )
            .unwrap();
            Daemon::start(
                home,
                dir,
                &format!("master{}", i + 1),
                "org.apache.spark.deploy.master.Master",
                &[
                    "--host".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    ports.rpc.to_string(),
                    "--webui-port".into(),
                    ports.ui.to_string(),
                    "--properties-file".into(),
                    properties.display().to_string(),
                ],
            )
        };
        let first = master(0);
        wait_for_master(&http, 0, "ALIVE", |j| j["status"] == "ALIVE", &[&first]).await;
        let second = master(1);
        wait_for_master(
            &http,
            1,
            "STANDBY",
            |j| j["status"] == "STANDBY",
            &[&second],
        )
        .await;
        let worker = Daemon::start(
            home,
            dir,
            "worker",
            "org.apache.spark.deploy.worker.Worker",
            &[
                "--host".into(),
                "127.0.0.1".into(),
                "--cores".into(),
                "2".into(),
                "--memory".into(),
                "1g".into(),
                "--webui-port".into(),
                WORKER_UI.to_string(),
                "--work-dir".into(),
                dir.join("work").display().to_string(),
                SPARK_MASTER.into(),
            ],
        );
        wait_for_master(
            &http,
            0,
            "the worker registered",
            |j| j["aliveworkers"].as_u64() >= Some(1),
            &[&worker],
        )
        .await;
        eprintln!("HA pair and worker up in {:?}", began.elapsed());
        HaPair {
            masters: [first, second],
            worker,
            http,
        }
    }

    /// Master `i`'s recovery state (`ALIVE`, `STANDBY`, `RECOVERING`…), or `None` while it
    /// does not answer.
    async fn state(&self, i: usize) -> Option<String> {
        master_json(&self.http, i).await?["status"]
            .as_str()
            .map(str::to_owned)
    }

    /// Submits through master 1's REST server, naming both masters as Spark's own client
    /// would.
    async fn submit(&self, jar: &str, main: &str, args: &[&str]) -> String {
        let body = json!({
            "action": "CreateSubmissionRequest",
            "appResource": jar,
            "mainClass": main,
            "appArgs": args,
            "clientSparkVersion": "4.3.0",
            "environmentVariables": {"SPARK_ENV_LOADED": "1"},
            "sparkProperties": {
                "spark.master": SPARK_MASTER,
                "spark.submit.deployMode": "cluster",
                "spark.app.name": format!("jobwarden-ha-{main}"),
                "spark.driver.memory": "256m",
                "spark.jars": jar,
                "spark.driver.supervise": "false",
            },
        });
        let answer: Value = self
            .http
            .post(format!(
                "http://127.0.0.1:{}/v1/submissions/create",
                MASTERS[0].rest
            ))
            .json(&body)
            // Accepting a driver includes writing it to ZooKeeper: slower than a status read.
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["success"], true, "{answer}");
        answer["submissionId"].as_str().unwrap().to_owned()
    }

    fn logs(&self) -> String {
        self.masters
            .iter()
            .chain([&self.worker])
            .map(Daemon::tail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Master `i`'s `/json/`, or `None` while it does not answer.
async fn master_json(http: &reqwest::Client, i: usize) -> Option<Value> {
    http.get(format!("http://127.0.0.1:{}/json/", MASTERS[i].ui))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Waits until master `i` answers and `check` holds for its `/json/`; panics after two
/// minutes with what it last said and the logs of `daemons`.
async fn wait_for_master(
    http: &reqwest::Client,
    i: usize,
    what: &str,
    check: impl Fn(&Value) -> bool,
    daemons: &[&Daemon],
) {
    let limit = Duration::from_secs(120);
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        if let Some(json) = master_json(http, i).await {
            if check(&json) {
                return;
            }
            last = Some(json);
        }
        assert!(
            Instant::now() < deadline,
            "master {} not {what} after {limit:?}; its /json/ last said {}\n{}",
            i + 1,
            last.map_or("nothing".to_owned(), |j| j.to_string()),
            daemons
                .iter()
                .map(|d| d.tail())
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `jobwarden_polls_total` of the running binary for one outcome, summed over other labels.
async fn polls(http: &reqwest::Client, metrics: &str, outcome: &str) -> Result<u64, String> {
    let text = http
        .get(metrics)
        // A scrape reads the database (jobs by status): slower than a master's /json/.
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("scraping {metrics}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("scraping {metrics}: {e}"))?;
    let label = format!("outcome=\"{outcome}\"");
    Ok(text
        .lines()
        .filter(|l| l.starts_with("jobwarden_polls_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// What the test saw from the kill of the alive master to the end of the driver; times are
/// since the kill.
#[derive(Default)]
struct Failover {
    /// Every status the row showed, in order, without repeats.
    statuses: Vec<String>,
    /// Master 2's recovery state each time it changed.
    standby_states: Vec<(Duration, String)>,
    new_master_alive: Option<Duration>,
    /// The first poll jobwarden counted as answered once the new master was seen ALIVE.
    first_answer: Option<Duration>,
    /// Rows current again: the new master has answered for the job and the row carries no
    /// failure. The driver is ended then: nothing is left to see while it runs.
    row_current: Option<Duration>,
    /// The row's `last_confirmed_at` moved past the kill (it moves only with news, such as
    /// failures to clear).
    row_confirmed: Option<Duration>,
    most_failures: i32,
    failing_since: Option<DateTime<Utc>>,
    poll_errors: Vec<String>,
    failed_polls: u64,
    /// What the test itself could not read (the row, the binary's metrics).
    read_errors: Vec<String>,
}

impl Failover {
    fn read_error(&mut self, error: String) {
        if !self.read_errors.contains(&error) {
            self.read_errors.push(error);
        }
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("never".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()))
}

/// kill -9 of the alive master under a running driver: the standby stays STANDBY until
/// ZooKeeper expires the dead master's session, then recovers the driver and becomes ALIVE.
/// Throughout, the row stays Running (never on the stuck clock, although the failover lasts
/// longer than `stuck_timeout`), no poll counts as failed, and the row follows the new master
/// to Succeeded.
#[actix_rt::test]
async fn a_failover_to_the_standby_keeps_the_row_running_and_costs_no_failed_poll() {
    let Some(zookeeper) = zookeeper() else { return };
    let Some(home) = spark_home("JOBWARDEN_TEST_SPARK_HOME", ".ci/spark.sh") else {
        return;
    };
    let _turn = OWN_CLUSTER.lock().await;
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let jar = build_jar(dir.path(), &home.join("jars"));
    let mut pair = HaPair::start(&home, &zookeeper, dir.path()).await;
    // The driver runs until the test has seen what it measures, then ends at once.
    let gate = dir.path().join("gate-open");
    let submission = pair
        .submit(&jar, "Gate", &[&gate.display().to_string(), "600000"])
        .await;

    // stuck_timeout is well under the ~35 s a standby takes to take over: the failover must
    // never count toward it. max_backoff stays at its default: how long a failover leaves
    // rows stale, backoff included, is part of what is measured.
    let db_path = write_config(
        dir.path(),
        &format!(
            "rest_url = \"spark://127.0.0.1:{},127.0.0.1:{}\"\n\
             master_ui_url = \"http://127.0.0.1:{},http://127.0.0.1:{}\"\n\
             poll_interval = \"1s\"\nrequest_timeout = \"2s\"\nstuck_timeout = \"20s\"",
            MASTERS[0].rest, MASTERS[1].rest, MASTERS[0].ui, MASTERS[1].ui
        ),
        "sweep_interval = \"1s\"",
    );
    track(dir.path(), "ha-gate", &submission);
    let mut service = Running::start({
        let mut cmd = jobwarden(dir.path());
        cmd.env("RUST_LOG", "jobwarden=debug");
        cmd
    });
    let address = service.http_address();
    let metrics = format!("http://{address}/metrics");
    let db = read_only(&db_path).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while row(&db, "ha-gate")
        .await
        .is_none_or(|r| r.status != "Running")
    {
        assert!(
            Instant::now() < deadline,
            "the row did not show Running: {:?}\n{}",
            row(&db, "ha-gate").await,
            pair.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pair.state(1).await.as_deref(), Some("STANDBY"));

    let http = &pair.http.clone();
    let mut seen = Failover::default();
    let mut answered_before = polls(http, &metrics, "observed").await.unwrap();
    let failed_before = polls(http, &metrics, "failed").await.unwrap();
    let killed_at = Utc::now();
    let kill = Instant::now();
    pair.masters[0].kill();

    let deadline = kill + Duration::from_secs(240);
    let mut last = None;
    while Instant::now() < deadline {
        let now = kill.elapsed();
        if seen.new_master_alive.is_none() {
            let state = pair.state(1).await.unwrap_or_else(|| "(no answer)".into());
            if seen.standby_states.last().map(|(_, s)| s) != Some(&state) {
                seen.standby_states.push((now, state.clone()));
            }
            if state == "ALIVE" {
                seen.new_master_alive = Some(now);
            }
        }
        match polls(http, &metrics, "observed").await {
            // A poll in flight at the kill may still have been answered by the old master.
            Ok(answered) if seen.new_master_alive.is_none() => answered_before = answered,
            Ok(answered) if answered > answered_before && seen.first_answer.is_none() => {
                seen.first_answer = Some(now)
            }
            Ok(_) => {}
            Err(e) => seen.read_error(e),
        }
        let current = match SparkJobExecutions::find_by_id("ha-gate").one(&db).await {
            Ok(Some(current)) => current,
            found => {
                seen.read_error(format!("reading the row: {found:?}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if seen.statuses.last() != Some(&current.status) {
            seen.statuses.push(current.status.clone());
        }
        seen.most_failures = seen.most_failures.max(current.consecutive_poll_failures);
        seen.failing_since = seen.failing_since.or(current.failing_since);
        if let Some(error) = &current.last_poll_error {
            if !seen.poll_errors.contains(error) {
                seen.poll_errors.push(error.clone());
            }
        }
        if seen.row_confirmed.is_none()
            && current.last_confirmed_at.is_some_and(|at| at > killed_at)
        {
            seen.row_confirmed = Some(now);
        }
        // Only the new master can have answered since the kill, whichever sign shows it.
        if seen.row_current.is_none()
            && (seen.first_answer.is_some() || seen.row_confirmed.is_some())
            && current.consecutive_poll_failures == 0
            && current.status == "Running"
        {
            seen.row_current = Some(now);
            std::fs::write(&gate, b"").unwrap();
        }
        if !["Queued", "Submitting", "Running"].contains(&current.status.as_str()) {
            last = Some(current);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    seen.failed_polls = polls(http, &metrics, "failed").await.unwrap() - failed_before;

    eprintln!(
        "failover: kill -9 of the alive master -> new master ALIVE: {}; its states: {:?}",
        secs(seen.new_master_alive),
        seen.standby_states
    );
    eprintln!(
        "failover: kill -> first poll answered (by the new master): {}",
        secs(seen.first_answer)
    );
    eprintln!(
        "failover: kill -> rows current again after failover (answered by the new master, no failure on the row): {}; last_confirmed_at past the kill: {}",
        secs(seen.row_current),
        secs(seen.row_confirmed)
    );
    eprintln!(
        "failover: row statuses {:?}; most consecutive_poll_failures {}; failing_since {:?}; failed polls {}; poll errors {:?}; test read errors {:?}",
        seen.statuses,
        seen.most_failures,
        seen.failing_since,
        seen.failed_polls,
        seen.poll_errors,
        seen.read_errors
    );
    service.signal("TERM");
    let (status, log) = service.wait(Duration::from_secs(30));
    for line in log
        .lines()
        .filter(|l| l.contains("unreachable") || l.contains("reachable again"))
    {
        eprintln!("jobwarden: {line}");
    }
    eprintln!("test took {:?}", began.elapsed());
    assert!(status.success(), "{log}");
    let Some(last) = last else {
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        panic!(
            "the row did not end within {:?} of the kill; row statuses {:?}, now {:?}; standby {:?}; first answer {}; test read errors {:?}\n{}\n--- last lines of jobwarden ---\n{}",
            deadline - kill,
            seen.statuses,
            row(&db, "ha-gate").await,
            seen.standby_states,
            secs(seen.first_answer),
            seen.read_errors,
            pair.logs(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    };

    assert!(
        seen.new_master_alive.is_some(),
        "the standby never took over: {:?}\n{}",
        seen.standby_states,
        pair.logs()
    );
    assert_eq!(
        seen.statuses,
        ["Running", "Succeeded"],
        "the row must stay Running through the failover and end as Spark says"
    );
    assert_eq!(last.spark_state.as_deref(), Some("FINISHED"));
    assert_eq!(last.progress, 100);
    assert!(last.completed_at.is_some());
    let history = history(&db, "ha-gate").await;
    let path: Vec<&str> = history.iter().map(|h| h.to_status.as_str()).collect();
    assert_eq!(path.first(), Some(&"Queued"), "{path:?}");
    assert!(path.ends_with(&["Running", "Succeeded"]), "{path:?}");
    assert_eq!(history.last().unwrap().source, "spark_poll");
    assert_eq!(
        seen.failing_since, None,
        "a failover is Spark being away, never an answer without the job"
    );
    assert_eq!(
        (seen.most_failures, seen.failed_polls),
        (0, 0),
        "a failover must cost no failed poll (README, \"Several masters\"); the row recorded {:?}",
        seen.poll_errors
    );
}
