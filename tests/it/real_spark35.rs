//! End to end against a real Spark 3.5 cluster as many run in production: REST off (its
//! default), jobs submitted and killed through the legacy RPC client, so the master UI's
//! `/json/` listing is the only place driver states can come from.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::binary::text;
use crate::helpers::wait_until;
use crate::own_cluster::{
    read_only, spark_home, track, write_config, Layout, OwnCluster, OWN_CLUSTER,
};
use crate::real_spark::{build_jar, row};
use crate::worlds::{assert_polled_to, started, stopped, wait_all_final};

/// A 3.5 master and one worker on ports of their own. REST is off as by default; its port is
/// still set, away from the shared 4.x cluster's 6066, so that nothing answers where
/// jobwarden's `rest_url` points.
fn layout() -> Layout {
    Layout {
        master_port: 7177,
        ui_port: 8180,
        rest_port: 6166,
        rest_enabled: false,
        properties: Vec::new(),
        worker_properties: Vec::new(),
        worker_uis: vec![8181],
        worker_cores: 3,
        worker_memory: "1536m",
    }
}

/// A command of the 3.5 distribution, on loopback, with a conf dir of its own (empty).
fn spark_command(home: &Path, conf: &Path, program: &str) -> Command {
    let mut cmd = Command::new(home.join("bin").join(program));
    cmd.env("SPARK_HOME", home)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env("SPARK_CONF_DIR", conf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `spark-submit --deploy-mode cluster` as a 3.5 user runs it: without
/// `spark.master.rest.enabled` it submits through the legacy RPC client, which logs the new
/// driver's id.
fn legacy_submit(
    home: &Path,
    conf: &Path,
    master: &str,
    jar: &str,
    main: &str,
    args: &[&str],
) -> std::process::Child {
    spark_command(home, conf, "spark-submit")
        .args(["--deploy-mode", "cluster", "--master", master])
        .args(["--class", main])
        .args(["--conf", &format!("spark.app.name=jobwarden-e2e35-{main}")])
        .args([
            "--conf",
            "spark.driver.memory=512m",
            "--conf",
            "spark.cores.max=1",
        ])
        .arg(jar)
        .args(args)
        .spawn()
        .expect("spark-submit of the 3.5 distribution")
}

/// The driver id in the legacy client's "Driver successfully submitted as driver-…" line.
fn submitted_id(out: &Output) -> String {
    let log = text(out);
    assert!(out.status.success(), "spark-submit failed:\n{log}");
    log.split("Driver successfully submitted as ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no driver id in spark-submit's output:\n{log}"))
        .to_owned()
}

#[actix_rt::test]
async fn spark_3_5_with_rest_off_is_read_from_its_master_ui_and_drivers_end_as_listed() {
    let Some(home) = spark_home("JOBWARDEN_TEST_SPARK35_HOME", ".ci/spark35.sh") else {
        return;
    };
    let _turn = OWN_CLUSTER.lock().await;
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let jar = build_jar(dir.path(), &home.join("jars"));
    let cluster = OwnCluster::start(&home, layout()).await;
    let conf = dir.path().join("spark-conf");
    std::fs::create_dir_all(&conf).unwrap();

    // Side by side: each legacy submission waits seconds for the driver's first state.
    let gate = dir.path().join("gate-open");
    let gate_arg = gate.display().to_string();
    let master = cluster.spark_url();
    let children = [
        legacy_submit(&home, &conf, &master, &jar, "Gate", &[&gate_arg, "180000"]),
        legacy_submit(&home, &conf, &master, &jar, "Fail", &[]),
        legacy_submit(&home, &conf, &master, &jar, "Forever", &[]),
    ];
    let [succeeds, fails, killed] =
        children.map(|child| submitted_id(&child.wait_with_output().unwrap()));
    for id in [&succeeds, &fails, &killed] {
        // On a busy machine the master's UI can take seconds to answer.
        cluster
            .wait_for(
                Duration::from_secs(60),
                &format!("the master's /json/ to list {id}"),
                |json| crate::own_cluster::listed_drivers(json).any(|d| d["id"] == id.as_str()),
            )
            .await;
    }
    let rest_off = reqwest::get(format!(
        "{}/v1/submissions/status/{succeeds}",
        cluster.rest_url()
    ))
    .await;
    assert!(
        rest_off.is_err(),
        "REST must be off on this master: {rest_off:?}"
    );

    let db_path = write_config(
        dir.path(),
        &format!(
            "rest_url = \"{}\"\nmaster_ui_url = \"{}\"\nstatus_source = \"auto\"\n\
             poll_interval = \"1s\"\nrequest_timeout = \"5s\"\nstuck_timeout = \"3m\"",
            cluster.rest_url(),
            cluster.ui_url()
        ),
        "",
    );
    for (execution, submission) in [
        ("e35-succeeds", &succeeds),
        ("e35-fails", &fails),
        ("e35-killed", &killed),
    ] {
        track(dir.path(), execution, submission);
    }
    let service = started(dir.path());
    let db = read_only(&db_path).await;

    wait_until(
        Duration::from_secs(60),
        "the gated and the endless driver to show Running",
        || {
            let db = db.clone();
            async move {
                row(&db, "e35-succeeds")
                    .await
                    .is_some_and(|r| r.status == "Running")
                    && row(&db, "e35-killed")
                        .await
                        .is_some_and(|r| r.status == "Running")
            }
        },
    )
    .await;

    // `spark-submit --kill` always goes through REST for spark:// masters (it fails here with
    // "Unable to connect to server"); the legacy client's own kill goes through RPC.
    let kill = spark_command(&home, &conf, "spark-class")
        .args([
            "org.apache.spark.deploy.Client",
            "kill",
            &cluster.spark_url(),
            &killed,
        ])
        .output()
        .unwrap();
    assert!(kill.status.success(), "{}", text(&kill));
    std::fs::write(&gate, "").unwrap();

    wait_all_final(
        &db,
        &["e35-succeeds", "e35-fails", "e35-killed"],
        Duration::from_secs(90),
    )
    .await;

    let ok = row(&db, "e35-succeeds").await.unwrap();
    assert_eq!(ok.status, "Succeeded");
    assert_eq!(ok.spark_state.as_deref(), Some("FINISHED"));
    assert_eq!(ok.progress, 100);
    assert!(ok.started_at.is_some() && ok.completed_at >= ok.started_at);

    let failed = row(&db, "e35-fails").await.unwrap();
    assert_eq!(failed.status, "Failed");
    assert_eq!(failed.spark_state.as_deref(), Some("FAILED"));
    let reason = failed.error_message.clone().unwrap_or_default();
    assert!(
        reason.starts_with(
            "Caused by: java.lang.IllegalStateException: input table missing: jobwarden-e2e"
        ),
        "the reason is the exception line of the driver's stderr on its 3.5 worker: {reason}"
    );
    assert!(failed.completed_at.is_some());

    let cancelled = row(&db, "e35-killed").await.unwrap();
    assert_eq!(cancelled.status, "Cancelled");
    assert_eq!(cancelled.spark_state.as_deref(), Some("KILLED"));
    assert!(cancelled.started_at.is_some() && cancelled.completed_at >= cancelled.started_at);

    for (id, last_status) in [
        ("e35-succeeds", "Succeeded"),
        ("e35-fails", "Failed"),
        ("e35-killed", "Cancelled"),
    ] {
        assert_polled_to(&db, id, last_status).await;
    }

    let log = stopped(service);
    eprintln!("3.5 REST-off test took {:?}", began.elapsed());
    // `auto` on a master without REST: said once, with the reason, so an operator reading the
    // log knows REST is not in use and why.
    let sources: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("driver states"))
        .collect();
    assert!(
        sources.len() == 1
            && sources[0].contains("/json/ listing")
            && sources[0].contains("REST")
            && sources[0].contains("not reachable"),
        "one line saying the states come from the master UI's listing because REST is not reachable; got {sources:#?}"
    );
}
