//! End to end through what happens to a real Spark 4.x cluster's processes: a master
//! restarted without a recovery mode (it forgets every driver), a worker killed under a
//! supervised driver (Spark relaunches it under a new id). Each test owns its cluster, since
//! these kill processes other tests must not lose.

use std::time::{Duration, Instant};

use crate::helpers::wait_until;
use crate::own_cluster::{
    listed_drivers, read_only, spark_home, state_on_worker_page, track, write_config, Layout,
    OwnCluster, OWN_CLUSTER,
};
use crate::real_spark::{build_jar, row};
pub(crate) use crate::worlds::{history, wait_for_status};
use crate::worlds::{started, stopped, wait_for_row, wait_until_ended};

/// A master with REST on (4.x's default, set explicitly) and `workers` workers of one core
/// each: one driver per worker.
fn layout(workers: usize) -> Layout {
    Layout {
        master_port: 7477,
        ui_port: 8480,
        rest_port: 6466,
        rest_enabled: true,
        properties: Vec::new(),
        worker_properties: Vec::new(),
        worker_uis: [8481, 8482][..workers].to_vec(),
        worker_cores: 1,
        worker_memory: "768m",
    }
}

/// Polls every second, also after failed polls (a master that was away is asked again at
/// once), and sweeps for stuck jobs every second, so a wrong timeout would happen within the
/// test rather than after it.
fn config(dir: &std::path::Path, cluster: &OwnCluster, stuck_timeout: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "rest_url = \"{}\"\nmaster_ui_url = \"{}\"\npoll_interval = \"1s\"\n\
             request_timeout = \"2s\"\nmax_backoff = \"1s\"\nstuck_timeout = \"{stuck_timeout}\"",
            cluster.rest_url(),
            cluster.ui_url()
        ),
        "sweep_interval = \"1s\"",
    )
}

/// A fresh directory holding the drivers' jar, built against `home`'s Spark.
fn dir_with_jar(home: &std::path::Path) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let jar = build_jar(dir.path(), &home.join("jars"));
    (dir, jar)
}

/// A master restarted without a recovery mode forgets the driver running on its worker, and
/// kills it when the worker registers again (its page then says KILLED). The row stays
/// Running through a master outage longer than `stuck_timeout` and through the polls where
/// the new master does not know the driver, then ends Cancelled as the worker says, never
/// Failed "timed out".
#[actix_rt::test]
async fn a_running_driver_through_a_master_restart_ends_as_its_worker_says_not_timed_out() {
    let Some(home) = spark_home("JOBWARDEN_TEST_SPARK_HOME", ".ci/spark.sh") else {
        return;
    };
    let _turn = OWN_CLUSTER.lock().await;
    let began = Instant::now();
    let (dir, jar) = dir_with_jar(&home);
    let mut layout = layout(1);
    // A worker whose master is gone retries every 5-15 s, but only 6 times by default, then
    // every 30-90 s: a master that knows no worker yet makes jobwarden's polls answers without
    // the job, which count toward stuck_timeout. More quick retries keep the worker's return
    // within 15 s of the master's, under stuck_timeout.
    layout.worker_properties = vec![
        ("spark.worker.initialRegistrationRetries", "50".into()),
        ("spark.worker.maxRegistrationRetries", "100".into()),
    ];
    let mut cluster = OwnCluster::start(&home, layout).await;
    let driver = cluster.submit_rest(&jar, "Forever", &[], false).await;

    let stuck_timeout = Duration::from_secs(25);
    let db_path = config(dir.path(), &cluster, "25s");
    track(dir.path(), "restart-running", &driver);
    let service = started(dir.path());
    let db = read_only(&db_path).await;
    wait_for_status(&db, "restart-running", "Running", Duration::from_secs(60)).await;

    cluster.kill_master();
    let killed_at = Instant::now();
    wait_for_row(
        &db,
        "restart-running",
        "jobwarden to find the master away",
        Duration::from_secs(30),
        |r| r.consecutive_poll_failures > 0,
    )
    .await;
    // The outage itself is the scenario: it lasts past stuck_timeout (and a sweep), which must
    // not count.
    tokio::time::sleep(
        (stuck_timeout + Duration::from_secs(2)).saturating_sub(killed_at.elapsed()),
    )
    .await;
    let during = row(&db, "restart-running").await.unwrap();
    assert_eq!(during.status, "Running", "{during:?}");

    cluster.start_master();
    cluster.wait_alive(0).await;
    let alive_at = killed_at.elapsed();
    cluster.wait_alive(1).await;
    let registered_at = killed_at.elapsed();
    let json = cluster.master_json().await.unwrap();
    assert!(
        listed_drivers(&json).all(|d| d["id"] != driver.as_str()),
        "the restarted master does not know {driver}: {json}"
    );
    wait_until(
        Duration::from_secs(30),
        "the worker page to show the driver KILLED",
        || {
            let (cluster, driver) = (&cluster, &driver);
            async move {
                state_on_worker_page(&cluster.worker_page(0).await, driver).as_deref()
                    == Some("KILLED")
            }
        },
    )
    .await;
    let killed_on_worker_at = killed_at.elapsed();
    wait_until_ended(&db, "restart-running", Duration::from_secs(60)).await;
    eprintln!(
        "master killed; ALIVE again after {alive_at:?} (down for the test's {stuck_timeout:?} + 2 s), \
         worker registered after {registered_at:?}, driver KILLED on the worker page after \
         {killed_on_worker_at:?}, row final after {:?}",
        killed_at.elapsed()
    );

    let ended = row(&db, "restart-running").await.unwrap();
    assert_eq!(ended.status, "Cancelled", "{ended:?}");
    assert_eq!(
        ended.spark_state.as_deref(),
        Some("KILLED (worker page; master forgot it)")
    );
    let reason = ended.error_message.clone().unwrap_or_default();
    assert!(
        reason.contains("the master no longer knows it")
            && reason.contains("restarted without a recovery mode"),
        "{reason}"
    );
    assert!(ended.completed_at.is_some());
    let history = history(&db, "restart-running").await;
    assert!(
        history.iter().all(|h| h.to_status != "Failed"),
        "never Failed on the way: {history:?}"
    );
    let last = history.last().unwrap();
    assert_eq!(
        (
            last.from_status.as_deref(),
            last.to_status.as_str(),
            last.source.as_str()
        ),
        (Some("Running"), "Cancelled", "spark_poll"),
        "{history:?}"
    );

    stopped(service);
    eprintln!("master-restart test took {:?}", began.elapsed());
}

/// A driver that finished while nobody polled it, then a master restart that forgot it: the
/// next poll finds the row Running and a master that never heard of the driver, and ends it
/// Succeeded from the worker's page.
#[actix_rt::test]
async fn a_driver_that_finished_before_a_master_restart_ends_succeeded_from_its_worker() {
    let Some(home) = spark_home("JOBWARDEN_TEST_SPARK_HOME", ".ci/spark.sh") else {
        return;
    };
    let _turn = OWN_CLUSTER.lock().await;
    let began = Instant::now();
    let (dir, jar) = dir_with_jar(&home);
    let mut cluster = OwnCluster::start(&home, layout(1)).await;
    let gate = dir.path().join("gate-open");
    let driver = cluster
        .submit_rest(
            &jar,
            "Gate",
            &[&gate.display().to_string(), "180000"],
            false,
        )
        .await;

    let db_path = config(dir.path(), &cluster, "5m");
    track(dir.path(), "finished-then-restart", &driver);
    let service = started(dir.path());
    let db = read_only(&db_path).await;
    wait_for_status(
        &db,
        "finished-then-restart",
        "Running",
        Duration::from_secs(60),
    )
    .await;
    // Stopped, so that no poll sees the end before the master forgets it: the next poll is
    // the one after the restart, as with a long poll interval or a jobwarden restart.
    stopped(service);

    std::fs::write(&gate, "").unwrap();
    cluster
        .wait_for(
            Duration::from_secs(60),
            "the master to list the driver FINISHED",
            |json| {
                listed_drivers(json).any(|d| d["id"] == driver.as_str() && d["state"] == "FINISHED")
            },
        )
        .await;
    cluster.kill_master();
    cluster.start_master();
    cluster.wait_alive(1).await;
    let json = cluster.master_json().await.unwrap();
    assert!(
        listed_drivers(&json).all(|d| d["id"] != driver.as_str()),
        "the restarted master forgot {driver}: {json}"
    );
    assert_eq!(
        state_on_worker_page(&cluster.worker_page(0).await, &driver).as_deref(),
        Some("FINISHED")
    );
    assert_eq!(
        row(&db, "finished-then-restart").await.unwrap().status,
        "Running"
    );

    let service = started(dir.path());
    wait_until_ended(&db, "finished-then-restart", Duration::from_secs(60)).await;
    let ended = row(&db, "finished-then-restart").await.unwrap();
    assert_eq!(ended.status, "Succeeded", "{ended:?}");
    assert_eq!(
        ended.spark_state.as_deref(),
        Some("FINISHED (worker page; master forgot it)")
    );
    assert_eq!(ended.progress, 100);
    assert!(ended.completed_at.is_some());
    let last = history(&db, "finished-then-restart").await.pop().unwrap();
    assert_eq!(
        (
            last.from_status.as_deref(),
            last.to_status.as_str(),
            last.source.as_str()
        ),
        (Some("Running"), "Succeeded", "spark_poll")
    );

    stopped(service);
    eprintln!("finished-then-restart test took {:?}", began.elapsed());
}

/// kill -9 of the worker running a supervised driver: the master relaunches it on the other
/// worker under a new id, and the row follows that id (its history names both) until the
/// relaunched driver ends.
#[actix_rt::test]
async fn a_supervised_driver_relaunched_after_its_worker_died_is_followed_under_its_new_id() {
    let Some(home) = spark_home("JOBWARDEN_TEST_SPARK_HOME", ".ci/spark.sh") else {
        return;
    };
    let _turn = OWN_CLUSTER.lock().await;
    let began = Instant::now();
    let (dir, jar) = dir_with_jar(&home);
    let mut cluster = OwnCluster::start(&home, layout(2)).await;
    let first = cluster.submit_rest(&jar, "Forever", &[], true).await;

    let db_path = config(dir.path(), &cluster, "5m");
    track(dir.path(), "relaunched", &first);
    let service = started(dir.path());
    let db = read_only(&db_path).await;
    wait_for_status(&db, "relaunched", "Running", Duration::from_secs(60)).await;

    let lost = cluster
        .worker_running(&first)
        .await
        .expect("the master names the driver's worker");
    cluster.kill_worker(lost);
    let killed_at = Instant::now();
    cluster
        .wait_for(
            Duration::from_secs(90),
            "the master to relaunch the driver under a new id",
            |json| {
                listed_drivers(json)
                    .any(|d| d["id"] == first.as_str() && d["state"] == "RELAUNCHING")
                    && listed_drivers(json).any(|d| {
                        d["id"] != first.as_str()
                            && d["mainclass"] == "Forever"
                            && d["state"] == "RUNNING"
                    })
            },
        )
        .await;
    let relaunch_took = killed_at.elapsed();
    let json = cluster.master_json().await.unwrap();
    let relaunched = listed_drivers(&json)
        .find(|d| d["id"] != first.as_str() && d["mainclass"] == "Forever")
        .and_then(|d| d["id"].as_str())
        .unwrap()
        .to_owned();
    assert_eq!(cluster.worker_running(&relaunched).await, Some(1 - lost));

    wait_for_row(
        &db,
        "relaunched",
        "the row to follow the new id",
        Duration::from_secs(30),
        |r| r.submission_id.as_deref() == Some(relaunched.as_str()),
    )
    .await;
    let followed_at = killed_at.elapsed();
    let during = row(&db, "relaunched").await.unwrap();
    assert_eq!(during.status, "Running", "{during:?}");
    let notes: Vec<String> = history(&db, "relaunched")
        .await
        .into_iter()
        .filter_map(|h| h.detail)
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&first) && n.contains(&relaunched) && n.contains("relaunched")),
        "a history row names both ids: {notes:#?}"
    );

    // Only a row that polls the new id can see it end.
    cluster.kill_rest(&relaunched).await;
    wait_for_status(&db, "relaunched", "Cancelled", Duration::from_secs(30)).await;
    let ended = row(&db, "relaunched").await.unwrap();
    assert_eq!(ended.spark_state.as_deref(), Some("KILLED"));
    assert_eq!(ended.submission_id.as_deref(), Some(relaunched.as_str()));
    eprintln!(
        "worker killed; master relaunched {first} as {relaunched} within {relaunch_took:?}; \
         row followed after {followed_at:?}"
    );

    stopped(service);
    eprintln!("relaunch test took {:?}", began.elapsed());
}
