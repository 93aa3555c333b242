//! Several jobwarden instances on one database: leases spread the Spark jobs, fencing refuses
//! the writes of an instance that lost its lease, SQLite stays single-instance.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use entity::{jobwarden_leases, spark_job_executions};
use jobwarden::actors::JobStore;
use jobwarden::domain::{JobStatus, Observation};
use jobwarden::startup::{Application, StartError};
use jobwarden::store::leases::{self, bucket_of, BUCKETS};
use jobwarden::store_api::{
    Fence, FencedWrite, OpError, Source, StoreError, TrackRequest, Write, WriteOp, WriteOutcome,
};
use jobwarden_testkit::{Answer, SparkServer};
use migration::MigratorTrait;
use sea_orm::{
    ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, QueryFilter,
    QuerySelect, Statement,
};

use crate::binary::{jobwarden, Running};
use crate::helpers::{rules, wait_until, Backend, TestDb};

/// Who holds each bucket now.
async fn bucket_owners(db: &DatabaseConnection) -> BTreeMap<String, usize> {
    let mut owners = BTreeMap::new();
    for row in jobwarden_leases::Entity::find().all(db).await.unwrap() {
        if row.name.starts_with("bucket:") {
            if let Some(owner) = row.owner {
                *owners.entry(owner).or_default() += 1;
            }
        }
    }
    owners
}

async fn leader(db: &DatabaseConnection) -> Option<String> {
    jobwarden_leases::Entity::find_by_id(leases::LEADER.to_owned())
        .one(db)
        .await
        .unwrap()
        .and_then(|r| r.owner)
}

async fn two_instances_split_the_buckets_and_one_leads(db: TestDb) {
    if db.backend == Backend::Sqlite {
        return;
    }
    let lease = Duration::from_secs(30);
    let now = Utc::now();
    let first = leases::renew(&db.db, "a", now, now, lease, &[], true)
        .await
        .unwrap();
    assert_eq!(
        first.buckets.len(),
        usize::from(BUCKETS),
        "alone, it takes all"
    );
    assert!(first.leader.is_some());
    let second = leases::renew(&db.db, "b", now, now, lease, &[], true)
        .await
        .unwrap();
    assert_eq!(second.buckets.len(), 0, "nothing is free yet");
    assert!(second.leader.is_none());
    // a sees b alive: it stops polling what exceeds its fair share at once, and hands it
    // back one round later, when its polls in flight there are over; then b takes it.
    let first = leases::renew(&db.db, "a", now, now, lease, &[], true)
        .await
        .unwrap();
    assert_eq!((first.buckets.len(), first.retiring.len()), (32, 32));
    let second = leases::renew(&db.db, "b", now, now, lease, &[], true)
        .await
        .unwrap();
    assert_eq!(
        second.buckets.len(),
        0,
        "retiring buckets stay a's for one round"
    );
    let first = leases::renew(&db.db, "a", now, now, lease, &first.retiring, true)
        .await
        .unwrap();
    let second = leases::renew(&db.db, "b", now, now, lease, &[], true)
        .await
        .unwrap();
    assert_eq!((first.buckets.len(), second.buckets.len()), (32, 32));
    assert_eq!(first.live_instances, 2);
    assert!(first
        .buckets
        .keys()
        .all(|b| !second.buckets.contains_key(b)));
    assert_eq!(leader(&db.db).await.as_deref(), Some("a"), "one leader");
    assert_eq!(
        bucket_owners(&db.db).await,
        BTreeMap::from([("a".to_owned(), 32), ("b".to_owned(), 32)])
    );
}

async fn a_stopping_instance_hands_its_share_over_at_once(db: TestDb) {
    if db.backend == Backend::Sqlite {
        return;
    }
    let lease = Duration::from_secs(30);
    let now = Utc::now();
    leases::renew(&db.db, "a", now, now, lease, &[], true)
        .await
        .unwrap();
    leases::renew(&db.db, "b", now, now, lease, &[], true)
        .await
        .unwrap();
    leases::release_all(&db.db, "a").await.unwrap();
    let b = leases::renew(&db.db, "b", now, now, lease, &[], true)
        .await
        .unwrap();
    assert_eq!(b.buckets.len(), usize::from(BUCKETS));
    assert!(b.leader.is_some(), "the leader lease moves too");
}

async fn a_late_renewal_of_a_stopped_instance_leaves_its_share_to_the_others(db: TestDb) {
    if db.backend == Backend::Sqlite {
        return;
    }
    let lease = Duration::from_secs(30);
    let now = Utc::now();
    leases::renew(&db.db, "a", now, now, lease, &[], true)
        .await
        .unwrap();
    leases::release_all(&db.db, "a").await.unwrap();
    // a shut down (claiming nothing more) and gave everything back; a renewal of its still
    // comes after that (its timer, or one in flight while it released).
    let late = leases::renew(&db.db, "a", now, now, lease, &[], false)
        .await
        .unwrap();
    assert!(late.buckets.is_empty() && late.leader.is_none());
    let b = leases::renew(&db.db, "b", now, now, lease, &[], true)
        .await
        .unwrap();
    assert_eq!(
        (b.live_instances, b.buckets.len()),
        (1, usize::from(BUCKETS)),
        "b is alone: it takes every bucket, none is left to a that will never poll it"
    );
}

/// A JobStore that crashes while a renewal waits on the database (here, on a row lock another
/// connection holds) drops that renewal with its context; the restarted store renews again, or
/// its share would expire and nobody would poll it.
async fn a_store_restarted_during_a_renewal_goes_on_renewing(db: TestDb) {
    // The moment a renewal waits on the lock is read from PostgreSQL's pg_locks; the code
    // under test is the same on MariaDB, where that moment could not be read reliably.
    if db.backend != Backend::Postgres {
        return;
    }
    let lease = Duration::from_secs(3);
    let now = Utc::now();
    let held = leases::renew(&db.db, "r", now, now, lease, &[], true)
        .await
        .unwrap();
    let settings = db.settings();
    let store = JobStore::new(
        db.db.clone(),
        settings.store.clone(),
        rules(&settings),
        jobwarden::events::Events::default(),
    )
    .shared_as("r".to_owned(), lease, held)
    .launch();
    let blocker = Database::connect(db.url.as_str()).await.unwrap();
    let holding = sea_orm::TransactionTrait::begin(&blocker).await.unwrap();
    entity::jobwarden_instances::Entity::find_by_id("r".to_owned())
        .lock_exclusive()
        .one(&holding)
        .await
        .unwrap();
    let waits = "SELECT count(*) FROM pg_locks WHERE NOT granted";
    wait_until(
        Duration::from_secs(10),
        "a renewal waiting on the held row",
        || async {
            let row = db
                .db
                .query_one_raw(Statement::from_string(db.db.get_database_backend(), waits))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<i64>(0).unwrap() > 0
        },
    )
    .await;
    store.send(jobwarden::actors::Crash).await.unwrap();
    holding.rollback().await.unwrap();
    let released = Utc::now();
    wait_until(
        Duration::from_secs(10),
        "a renewal after the restart",
        || async {
            entity::jobwarden_instances::Entity::find_by_id("r".to_owned())
                .one(&db.db)
                .await
                .unwrap()
                .is_some_and(|row| row.last_seen > released)
        },
    )
    .await;
}

async fn an_expired_lease_is_claimed_with_a_new_token(db: TestDb) {
    if db.backend == Backend::Sqlite {
        return;
    }
    let lease = Duration::from_secs(3);
    let now = Utc::now();
    let a = leases::renew(&db.db, "a", now, now, lease, &[], true)
        .await
        .unwrap();
    // a stops renewing; once its lease has run out, b takes everything over.
    let later = now + chrono::Duration::seconds(10);
    let b = leases::renew(&db.db, "b", later, later, lease, &[], true)
        .await
        .unwrap();
    assert_eq!(b.buckets.len(), usize::from(BUCKETS));
    for (bucket, lease) in &b.buckets {
        assert_eq!(lease.token, a.buckets[bucket].token + 1, "bucket {bucket}");
    }
}

/// A store that shares the database as `instance`, holding what one renewal gave it.
async fn shared_store(db: &TestDb, instance: &str) -> (actix::Addr<JobStore>, leases::Held) {
    let settings = db.settings();
    let now = Utc::now();
    let held = leases::renew(
        &db.db,
        instance,
        now,
        now,
        settings.instance.lease,
        &[],
        true,
    )
    .await
    .unwrap();
    let store = JobStore::new(
        db.db.clone(),
        settings.store.clone(),
        rules(&settings),
        jobwarden::events::Events::default(),
    )
    .shared_as(instance.to_owned(), settings.instance.lease, held.clone())
    .launch();
    (store, held)
}

fn running_observation() -> Observation {
    Observation {
        status: Some(JobStatus::Running),
        raw_state: Some("RUNNING".into()),
        progress: Some(50),
        message: None,
        relaunching: false,
        successors: Vec::new(),
        at: Utc::now(),
    }
}

async fn a_write_under_a_lease_taken_over_is_refused_and_changes_nothing(db: TestDb) {
    if db.backend == Backend::Sqlite {
        return;
    }
    let (store, held) = shared_store(&db, "paused").await;
    let track = WriteOp::Track(TrackRequest {
        spec: None,
        execution_id: "e1".into(),
        submission_id: Some("driver-1".into()),
        job_name: None,
        cluster: None,
        source: Source::Api,
        after: Vec::new(),
        priority: 0,
        allowed: None,
    });
    store.send(Write(track)).await.unwrap().unwrap();
    let bucket = bucket_of("e1");
    let fence = Fence {
        bucket,
        token: held.buckets[&bucket].token,
    };
    let observe = || WriteOp::Observe {
        asked: None,
        execution_id: "e1".into(),
        observation: running_observation(),
    };
    let before_takeover = store
        .send(FencedWrite {
            op: observe(),
            fence,
        })
        .await
        .unwrap();
    assert!(
        matches!(before_takeover, Ok(WriteOutcome::Execution(_))),
        "{before_takeover:?}"
    );
    // Another instance claims the bucket while this one is paused.
    let name = leases::bucket_name(bucket);
    db.db
        .execute_raw(Statement::from_string(
            db.db.get_database_backend(),
            format!(
                "UPDATE jobwarden_leases SET owner = 'other', token = token + 1 WHERE name = '{name}'"
            ),
        ))
        .await
        .unwrap();
    let row_before = jobwarden::store::read::execution_with_history(&db.db, "e1")
        .await
        .unwrap()
        .unwrap();
    let stale = store
        .send(FencedWrite {
            op: WriteOp::PollFailed {
                asked: None,
                execution_id: "e1".into(),
                at: Utc::now(),
                error: "late answer".into(),
                outage: false,
            },
            fence,
        })
        .await
        .unwrap();
    match stale {
        Err(StoreError::Refused(OpError::Fenced {
            holder,
            token,
            ours,
            ..
        })) => {
            assert_eq!(holder, "other");
            assert_eq!(token, ours + 1);
        }
        other => panic!("expected a fenced refusal, got {other:?}"),
    }
    let row_after = jobwarden::store::read::execution_with_history(&db.db, "e1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row_after, row_before,
        "nothing written under the lost lease"
    );
}

crate::on_every_database!(
    two_instances_split_the_buckets_and_one_leads,
    a_stopping_instance_hands_its_share_over_at_once,
    a_late_renewal_of_a_stopped_instance_leaves_its_share_to_the_others,
    a_store_restarted_during_a_renewal_goes_on_renewing,
    an_expired_lease_is_claimed_with_a_new_token,
    a_write_under_a_lease_taken_over_is_refused_and_changes_nothing,
);

#[actix_rt::test]
async fn a_second_instance_on_one_sqlite_file_is_refused() {
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    let spark = SparkServer::start().await;
    let settings = crate::operating::instance_settings(&db.url, &spark);
    let first = Application::build(settings.clone()).await.unwrap();
    let second = Application::build(settings.clone()).await;
    match second {
        Err(e @ StartError::SqliteInUse { .. }) => {
            let text = e.to_string();
            assert_eq!(e.exit_code(), 3);
            assert!(text.contains("SQLite is for one instance"), "{text}");
            assert!(text.contains("PostgreSQL"), "{text}");
            assert!(
                text.contains(&format!("process {}", std::process::id())),
                "{text}"
            );
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(app) => {
            app.shutdown().await;
            panic!("a second instance started on the same SQLite file");
        }
    }
    first.shutdown().await;
    let again = Application::build(settings).await.unwrap();
    again.shutdown().await;
}

/// A fresh, empty database on `backend`'s server (no migrations), dropped by the caller.
async fn empty_database(backend: Backend) -> Option<(String, String, String)> {
    let admin = match backend {
        Backend::Postgres => std::env::var("JOBWARDEN_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        Backend::MariaDb => std::env::var("JOBWARDEN_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into()),
        Backend::Sqlite => return None,
    };
    let admin_db = match Database::connect(&admin).await {
        Ok(db) => db,
        Err(e) if !crate::helpers::require_all_backends() => {
            eprintln!("SKIPPED on {backend:?}: {e}");
            return None;
        }
        Err(e) => panic!("{backend:?} unreachable: {e}"),
    };
    let name = format!(
        "jw_start_{}_{}",
        std::process::id(),
        Utc::now().timestamp_micros()
    );
    admin_db
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    Some((admin, url.to_string(), name))
}

async fn drop_database(admin: &str, name: &str, backend: Backend) {
    let force = if backend == Backend::Postgres {
        " WITH (FORCE)"
    } else {
        ""
    };
    if let Ok(db) = Database::connect(admin).await {
        db.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}{force}"))
            .await
            .ok();
    }
}

fn write_config(dir: &Path, body: &str) {
    std::fs::write(dir.join("config.toml"), body).unwrap();
}

async fn instances_starting_together_migrate_once(backend: Backend) {
    let Some((admin, url, name)) = empty_database(backend).await else {
        return;
    };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let children: Vec<std::process::Child> = dirs
        .iter()
        .map(|dir| {
            write_config(dir.path(), &format!("[database]\nurl = \"{url}\"\n"));
            jobwarden(dir.path())
                .arg("migrate")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        let n: usize = text
            .split(" migration(s) applied")
            .next()
            .and_then(|head| head.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {text}"));
        applied += n;
    }
    assert_eq!(
        applied,
        migration::Migrator::migrations().len(),
        "every migration ran exactly once among the three"
    );
    drop_database(&admin, &name, backend).await;
}

#[actix_rt::test]
async fn instances_starting_together_migrate_once_on_postgres() {
    instances_starting_together_migrate_once(Backend::Postgres).await;
}

#[actix_rt::test]
async fn instances_starting_together_migrate_once_on_mariadb() {
    instances_starting_together_migrate_once(Backend::MariaDb).await;
}

/// One `jobwarden run` of several sharing `url`.
struct Instance {
    name: String,
    /// Taken when the test stops it; a dropped instance still holding it is killed.
    running: Option<Running>,
    metrics_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Instance {
    /// A failed test must not leave its services polling.
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.signal_quietly("KILL");
        }
    }
}

fn start_instance(name: &str, url: &str, spark: &SparkServer, extra: &str) -> Instance {
    start_instance_leasing(name, url, spark, extra, "3s")
}

fn start_instance_leasing(
    name: &str,
    url: &str,
    spark: &SparkServer,
    extra: &str,
    lease: &str,
) -> Instance {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!(
            "[database]\nurl = \"{url}\"\n[spark]\nrest_url = \"{spark}\"\nmaster_ui_url = \"{spark}\"\npoll_interval = \"1s\"\nmax_concurrent_polls = 16\nrequest_timeout = \"30s\"\n[instance]\nid = \"{name}\"\nlease = \"{lease}\"\n{extra}",
            spark = spark.url()
        ),
    );
    let mut running = Running::start(jobwarden(dir.path()));
    let address = running.http_address();
    Instance {
        name: name.to_owned(),
        running: Some(running),
        metrics_url: format!("http://{address}/metrics"),
        _dir: dir,
    }
}

/// One number of this instance's Prometheus text.
async fn metric(instance: &Instance, series: &str) -> f64 {
    let text = reqwest::get(&instance.metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn insert_jobs(db: &DatabaseConnection, prefix: &str, jobs: usize) -> Vec<String> {
    let ids: Vec<String> = (0..jobs).map(|i| format!("{prefix}-{i}")).collect();
    for chunk in ids.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|id| format!("('{id}', 'driver-{id}')"))
            .collect();
        db.execute_unprepared(&format!(
            "INSERT INTO spark_job_executions (execution_id, submission_id) VALUES {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    }
    ids
}

async fn wait_for_even_share(db: &DatabaseConnection, names: &[&str]) {
    let fair = usize::from(BUCKETS).div_ceil(names.len());
    wait_until(Duration::from_secs(60), "the buckets to spread", || async {
        let owners = bucket_owners(db).await;
        owners.values().sum::<usize>() == usize::from(BUCKETS)
            && names
                .iter()
                .all(|n| owners.get(*n).is_some_and(|c| *c + 2 >= fair && *c <= fair))
    })
    .await;
}

/// Who holds each bucket, by bucket name.
async fn bucket_holders(db: &DatabaseConnection) -> BTreeMap<String, Option<String>> {
    jobwarden_leases::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .filter(|row| row.name.starts_with("bucket:"))
        .map(|row| (row.name, row.owner))
        .collect()
}

/// Waits until no bucket changes hands for `quiet`: the share has settled, and what follows is
/// steady state rather than the last moves of a rebalancing.
async fn wait_for_settled_share(db: &DatabaseConnection, quiet: Duration) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = bucket_holders(db).await;
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        assert!(
            Instant::now() < deadline,
            "the buckets never settled: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = bucket_holders(db).await;
        if now != seen {
            seen = now;
            since = Instant::now();
        }
    }
}

async fn stop_all(instances: Vec<Instance>) {
    for instance in instances {
        let mut instance = instance;
        let running = instance.running.take().expect("still running");
        running.signal("TERM");
        let (status, log) = running.wait(Duration::from_secs(60));
        assert!(status.success(), "{}: {log}", instance.name);
    }
}

async fn history_has_no_duplicate_transition(db: &DatabaseConnection) {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT job_id, from_status, to_status, COUNT(*) FROM job_status_history \
             GROUP BY job_id, from_status, to_status HAVING COUNT(*) > 1"
                .to_owned(),
        ))
        .await
        .unwrap();
    assert!(rows.is_empty(), "{} duplicated transitions", rows.len());
}

async fn three_instances_poll_every_job_once_per_cycle_and_share_the_work(db: TestDb) {
    if db.backend == Backend::Sqlite {
        return;
    }
    const JOBS: usize = 10_000;
    let spark = SparkServer::start().await;
    spark.set_delay(Duration::from_millis(2));
    let ids = insert_jobs(&db.db, "fleet", JOBS).await;
    let names = ["i1", "i2", "i3"];
    let instances: Vec<Instance> = names
        .iter()
        // A lease long enough that a renewal delayed by a busy machine does not let a bucket
        // lapse and change hands mid-measure: this test is about the steady state.
        .map(|n| start_instance_leasing(n, &db.url, &spark, "", "10s"))
        .collect();
    wait_for_even_share(&db.db, &names).await;
    // Three renewal rounds (a third of the 10 s lease each) without a move.
    wait_for_settled_share(&db.db, Duration::from_secs(10)).await;
    let before: HashMap<&str, usize> = ids
        .iter()
        .map(|id| (id.as_str(), spark.status_requests(&format!("driver-{id}"))))
        .collect();
    let polls_before: Vec<f64> = futures::future::join_all(
        instances
            .iter()
            .map(|i| metric(i, "jobwarden_polls_total{outcome=\"observed\"}")),
    )
    .await;
    let total_before = spark.total_status_requests();
    // Overlaps while the buckets were still moving are the handover the README describes;
    // this test counts those of the steady state.
    let overlaps_before = spark.overlapping_requests();
    wait_until(Duration::from_secs(120), "three more cycles", || async {
        spark.total_status_requests() >= total_before + 3 * JOBS
    })
    .await;
    let missed: Vec<&String> = ids
        .iter()
        .filter(|id| spark.status_requests(&format!("driver-{id}")) < before[id.as_str()] + 2)
        .collect();
    assert!(
        missed.is_empty(),
        "{} jobs were not polled in every cycle, e.g. {:?}",
        missed.len(),
        missed.first()
    );
    assert_eq!(
        spark.overlapping_requests() - overlaps_before,
        0,
        "a job was polled by two instances at once"
    );
    let polls_after: Vec<f64> = futures::future::join_all(
        instances
            .iter()
            .map(|i| metric(i, "jobwarden_polls_total{outcome=\"observed\"}")),
    )
    .await;
    let done: Vec<f64> = polls_after
        .iter()
        .zip(&polls_before)
        .map(|(a, b)| a - b)
        .collect();
    let sum: f64 = done.iter().sum();
    for (instance, polls) in instances.iter().zip(&done) {
        assert!(
            *polls <= sum / 2.0,
            "{} did {polls} of {sum} polls",
            instance.name
        );
        assert!(*polls > 0.0, "{} did no work", instance.name);
    }
    history_has_no_duplicate_transition(&db.db).await;
    stop_all(instances).await;
}

async fn a_killed_instance_share_is_polled_by_the_others_within_a_lease(db: TestDb) {
    if db.backend == Backend::Sqlite {
        return;
    }
    const JOBS: usize = 2_000;
    let spark = SparkServer::start().await;
    let ids = insert_jobs(&db.db, "kill", JOBS).await;
    let names = ["k1", "k2", "k3"];
    let mut instances: Vec<Instance> = names
        .iter()
        .map(|n| start_instance(n, &db.url, &spark, ""))
        .collect();
    wait_for_even_share(&db.db, &names).await;
    let victim = instances.pop().unwrap();
    let orphans: Vec<&String> = {
        let mut owned = Vec::new();
        for row in jobwarden_leases::Entity::find().all(&db.db).await.unwrap() {
            if row.owner.as_deref() == Some("k3") {
                owned.push(row.name);
            }
        }
        ids.iter()
            .filter(|id| owned.contains(&leases::bucket_name(bucket_of(id))))
            .collect()
    };
    assert!(!orphans.is_empty());
    victim.running.as_ref().unwrap().signal("KILL");
    let killed_at = Instant::now();
    let counts_at_kill: HashMap<&str, usize> = orphans
        .iter()
        .map(|id| (id.as_str(), spark.status_requests(&format!("driver-{id}"))))
        .collect();
    // Anything the victim had in flight may still land; count from a moment after.
    wait_until(
        Duration::from_secs(30),
        "the others to hold every bucket",
        || async {
            let owners = bucket_owners(&db.db).await;
            !owners.contains_key("k3") && owners.values().sum::<usize>() == usize::from(BUCKETS)
        },
    )
    .await;
    let taken_over = killed_at.elapsed();
    wait_until(
        Duration::from_secs(30),
        "every orphaned job to be polled again",
        || async {
            orphans.iter().all(|id| {
                spark.status_requests(&format!("driver-{id}")) > counts_at_kill[id.as_str()]
            })
        },
    )
    .await;
    let polled = killed_at.elapsed();
    eprintln!(
        "takeover after kill -9: buckets held by the others after {taken_over:?}, every orphaned job polled after {polled:?} (lease 3s, renewal every 1s, poll interval 1s)"
    );
    // The lease runs out at most 3s after the last renewal, the others' next renewal comes
    // within 1s, their next cycle within 1s.
    assert!(
        polled < Duration::from_secs(3 + 1 + 1 + 2),
        "took {polled:?}"
    );
    assert_eq!(
        leader(&db.db).await.as_deref().map(|l| l != "k3"),
        Some(true)
    );
    history_has_no_duplicate_transition(&db.db).await;
    // The takeover's writes land a moment after its polls: every row reaches Running, and
    // none went anywhere else on the way.
    wait_until(Duration::from_secs(30), "every row Running", || async {
        spark_job_executions::Entity::find()
            .filter(spark_job_executions::Column::Status.ne("Running"))
            .all(&db.db)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let mut victim = victim;
    let _ = victim
        .running
        .take()
        .expect("killed, not yet reaped")
        .wait(Duration::from_secs(10));
    stop_all(instances).await;
}

async fn a_paused_instance_cannot_overwrite_newer_truth(db: TestDb) {
    if db.backend == Backend::Sqlite {
        return;
    }
    const JOBS: usize = 200;
    let spark = SparkServer::start().await;
    // Answers take a while, so the paused instance has polls in flight when it stops.
    spark.set_delay(Duration::from_millis(800));
    let ids = insert_jobs(&db.db, "pause", JOBS).await;
    let names = ["p1", "p2"];
    let mut instances: Vec<Instance> = names
        .iter()
        .map(|n| start_instance(n, &db.url, &spark, ""))
        .collect();
    wait_for_even_share(&db.db, &names).await;
    let mut paused = instances.remove(0);
    wait_until(
        Duration::from_secs(20),
        "p1 to have polls in flight",
        || async { metric(&paused, "jobwarden_polls_in_flight").await > 0.0 },
    )
    .await;
    paused.running.as_ref().unwrap().signal("STOP");
    for id in &ids {
        spark.answer(&format!("driver-{id}"), Answer::State("FINISHED"));
    }
    wait_until(
        Duration::from_secs(60),
        "p2 to finish every job",
        || async {
            bucket_owners(&db.db).await.get("p2") == Some(&usize::from(BUCKETS))
                && db
                    .db
                    .query_one_raw(Statement::from_string(
                        db.db.get_database_backend(),
                        "SELECT COUNT(*) FROM spark_job_executions WHERE status <> 'Succeeded'"
                            .to_owned(),
                    ))
                    .await
                    .unwrap()
                    .unwrap()
                    .try_get_by_index::<i64>(0)
                    .unwrap()
                    == 0
        },
    )
    .await;
    paused.running.as_ref().unwrap().signal("CONT");
    paused
        .running
        .as_mut()
        .unwrap()
        .wait_for_line("stale write refused (fencing)", Duration::from_secs(30));
    let still = db
        .db
        .query_one_raw(Statement::from_string(
            db.db.get_database_backend(),
            "SELECT COUNT(*) FROM spark_job_executions WHERE status = 'Succeeded'".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(still, JOBS as i64, "no row moved back");
    history_has_no_duplicate_transition(&db.db).await;
    instances.insert(0, paused);
    stop_all(instances).await;
}

async fn three_instances_started_at_once_each_poll_a_fair_share_within_two_leases(db: TestDb) {
    if db.backend == Backend::Sqlite {
        return;
    }
    const JOBS: usize = 2_000;
    let lease = Duration::from_secs(6);
    let spark = SparkServer::start().await;
    insert_jobs(&db.db, "together", JOBS).await;
    let names = ["t1", "t2", "t3"];
    let started = Instant::now();
    // All three processes first, then their addresses: a start at once, as a deploy does.
    let mut starting: Vec<(String, Running, tempfile::TempDir)> = names
        .iter()
        .map(|name| {
            let dir = tempfile::tempdir().unwrap();
            write_config(
                dir.path(),
                &format!(
                    "[database]\nurl = \"{}\"\n[spark]\nrest_url = \"{spark}\"\nmaster_ui_url = \"{spark}\"\npoll_interval = \"2s\"\nmax_concurrent_polls = 16\n[instance]\nid = \"{name}\"\nlease = \"6s\"\n",
                    db.url,
                    spark = spark.url()
                ),
            );
            (name.to_string(), Running::start(jobwarden(dir.path())), dir)
        })
        .collect();
    let instances: Vec<Instance> = starting
        .drain(..)
        .map(|(name, mut running, dir)| {
            let address = running.http_address();
            Instance {
                name,
                running: Some(running),
                metrics_url: format!("http://{address}/metrics"),
                _dir: dir,
            }
        })
        .collect();
    wait_until(lease * 2, "each instance to hold a fair share", || async {
        let owners = bucket_owners(&db.db).await;
        names
            .iter()
            .all(|n| owners.get(*n).is_some_and(|c| *c >= 20))
    })
    .await;
    let settled = started.elapsed();
    let series = "jobwarden_polls_total{outcome=\"observed\"}";
    let mut before = Vec::new();
    for instance in &instances {
        before.push(metric(instance, series).await);
    }
    // Two more cycles of 2 s: each polls its own third.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut polled = Vec::new();
    for (instance, before) in instances.iter().zip(&before) {
        polled.push(metric(instance, series).await - before);
    }
    let total: f64 = polled.iter().sum();
    eprintln!("three instances started at once: a fair share each {settled:?} after the start; polls since then {polled:?}");
    for (name, count) in names.iter().zip(&polled) {
        assert!(
            *count >= total * 0.2,
            "{name} polled {count} of {total}: {polled:?}"
        );
    }
    stop_all(instances).await;
}

/// As the README's systemd unit runs it: no `instance.id`, so every start makes one up.
async fn a_restarted_instance_of_this_host_takes_its_share_back_at_once(db: TestDb) {
    if db.backend == Backend::Sqlite {
        return;
    }
    const JOBS: usize = 200;
    let spark = SparkServer::start().await;
    insert_jobs(&db.db, "restart", JOBS).await;
    let dir = tempfile::tempdir().unwrap();
    // A lease far longer than the wait below: only recognising the dead predecessor is fast.
    write_config(
        dir.path(),
        &format!(
            "[database]\nurl = \"{}\"\n[spark]\nrest_url = \"{spark}\"\nmaster_ui_url = \"{spark}\"\npoll_interval = \"1s\"\n[instance]\nlease = \"60s\"\n",
            db.url,
            spark = spark.url()
        ),
    );
    let mut first = Running::start(jobwarden(dir.path()));
    first.http_address();
    wait_until(
        Duration::from_secs(30),
        "the first start to hold every bucket",
        || async { bucket_owners(&db.db).await.values().sum::<usize>() == usize::from(BUCKETS) },
    )
    .await;
    let crashed = bucket_owners(&db.db).await.into_keys().next().unwrap();
    first.signal("KILL");
    let _ = first.wait(Duration::from_secs(10));

    let restarted_at = Instant::now();
    let mut second = Running::start(jobwarden(dir.path()));
    let address = second.http_address();
    wait_until(
        Duration::from_secs(20),
        "the restart to hold every bucket",
        || async {
            let owners = bucket_owners(&db.db).await;
            !owners.contains_key(&crashed) && owners.values().sum::<usize>() == usize::from(BUCKETS)
        },
    )
    .await;
    let took = restarted_at.elapsed();
    eprintln!("a restart took its share back {took:?} after it started (lease 60s)");
    assert!(took < Duration::from_secs(20), "{took:?}");
    let ready: serde_json::Value = reqwest::get(format!("http://{address}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["share"], "64 of 64 buckets", "{ready}");
    second.signal("TERM");
    let (status, log) = second.wait(Duration::from_secs(60));
    assert!(status.success(), "{log}");
    assert!(log.contains("whose process is gone"), "{log}");
}

crate::on_every_database!(
    three_instances_started_at_once_each_poll_a_fair_share_within_two_leases,
    a_restarted_instance_of_this_host_takes_its_share_back_at_once,
    three_instances_poll_every_job_once_per_cycle_and_share_the_work,
    a_killed_instance_share_is_polled_by_the_others_within_a_lease,
    a_paused_instance_cannot_overwrite_newer_truth,
);
