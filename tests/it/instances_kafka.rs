//! Several instances in one Kafka consumer group on the real broker: partitions move between
//! them as instances die and join, and no event is lost or applied out of order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use entity::prelude::*;
use entity::{job_status_history, transformation_job_queue};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use sea_orm::{
    ColumnTrait, Database, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
};

use jobwarden_testkit::kafka::send_keyed;
use jobwarden_testkit::SparkServer;

use crate::binary::{jobwarden, Running};
use crate::helpers::{wait_until, Backend, TestDb};

/// More partitions than instances at any time, so every rebalance moves some of them.
const PARTITIONS: i32 = 6;
const JOBS: usize = 2_500;
/// Every job reports Pending, Processing, Processing again (progress) and its end: 10,000
/// events in all.
const STEPS: usize = 4;
/// Jobs start in waves, so that rows are still being created while partitions move.
const WAVES: usize = 5;

mod three_instances_in_one_group_apply_every_event_once_in_order_through_rebalances {
    use super::*;

    #[actix_rt::test]
    async fn postgres() {
        scenario(Backend::Postgres).await
    }

    #[actix_rt::test]
    async fn mariadb() {
        scenario(Backend::MariaDb).await
    }
}

fn final_status(job: usize) -> &'static str {
    if job.is_multiple_of(7) {
        "Failed"
    } else {
        "Completed"
    }
}

fn status(job: usize, step: usize) -> &'static str {
    match step {
        0 => "Pending",
        1 | 2 => "Processing",
        _ => final_status(job),
    }
}

fn job_id(job: usize) -> String {
    format!("job-{job}")
}

fn event_id(job: usize, step: usize) -> String {
    format!("job-{job}/{step}")
}

/// Whole seconds: every backend keeps them exactly.
fn timestamp(step: usize) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T10:00:00Z")
        .unwrap()
        .to_utc()
        + chrono::Duration::seconds(step as i64)
}

/// The step number rides along in `generatedFields`: the row keeps the last one it took.
fn payload(job: usize, step: usize) -> String {
    format!(
        r#"{{"jobId":"{}","status":"{}","eventId":"{}","timestamp":"{}","generatedFields":{{"step":{step}}}}}"#,
        job_id(job),
        status(job, step),
        event_id(job, step),
        timestamp(step).to_rfc3339(),
    )
}

fn stage(status: &str) -> u8 {
    match status {
        "Pending" => 0,
        "Processing" => 1,
        _ => 2,
    }
}

async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for result in results {
        result.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
}

/// The enrichment pipeline: keyed by job, so a job's events share a partition.
struct Pipeline {
    producer: FutureProducer,
    topic: String,
}

impl Pipeline {
    fn new(brokers: &str, topic: &str) -> Pipeline {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "20")
            .set("message.timeout.ms", "60000")
            .create()
            .unwrap();
        Pipeline {
            producer,
            topic: topic.to_owned(),
        }
    }

    /// Wave `w` reports its step `tick - w`. A tick is acknowledged whole before the next is
    /// sent: a retried send can then never overtake a job's later event.
    async fn tick(&self, tick: usize) -> usize {
        let sends: Vec<_> = (0..JOBS)
            .filter_map(|job| {
                let step = tick.checked_sub(job % WAVES).filter(|s| *s < STEPS)?;
                Some((job_id(job), payload(job, step)))
            })
            .map(|(key, payload)| async move {
                send_keyed(&self.producer, &self.topic, &key, payload.as_bytes()).await
            })
            .collect();
        let sent = sends.len();
        for result in futures::future::join_all(sends).await {
            result.unwrap();
        }
        sent
    }
}

/// One `jobwarden` binary in the group, killed if the test fails first: none may outlive it.
struct Instance {
    name: &'static str,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

struct Shared<'a> {
    db_url: &'a str,
    spark: &'a str,
    brokers: &'a str,
    topic: &'a str,
    group: &'a str,
}

impl Instance {
    fn start(name: &'static str, shared: &Shared<'_>) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), name, shared);
        let mut cmd = jobwarden(dir.path());
        // Each event's outcome (applied, duplicate, stale, refused) is logged at debug.
        cmd.env(
            "RUST_LOG",
            "info,sea_orm_migration=warn,jobwarden::events::kafka=debug",
        );
        let mut running = Running::start(cmd);
        running.wait_for_line("jobwarden running", Duration::from_secs(60));
        Instance {
            name,
            running: Some(running),
            _dir: dir,
        }
    }

    fn wait_for_line(&mut self, needle: &str, limit: Duration) {
        self.running.as_mut().unwrap().wait_for_line(needle, limit);
    }

    fn signal(&self, name: &str) {
        self.running.as_ref().unwrap().signal(name);
    }

    /// The exit status and the whole log, once it has exited after a signal.
    fn exited(mut self) -> (std::process::ExitStatus, String) {
        self.running.take().unwrap().wait(Duration::from_secs(60))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.signal("KILL");
            let (_, log) = running.wait(Duration::from_secs(10));
            eprintln!("{}'s log, without per-event lines:", self.name);
            for line in log.lines().filter(|l| !l.contains("event applied")) {
                eprintln!("{line}");
            }
        }
    }
}

fn write_config(dir: &Path, name: &str, shared: &Shared<'_>) {
    let Shared {
        db_url,
        spark,
        brokers,
        topic,
        group,
    } = shared;
    std::fs::write(
        dir.join("config.toml"),
        format!(
            r#"[database]
url = "{db_url}"

[spark]
rest_url = "{spark}"

[http]
bind = "127.0.0.1:0"

[instance]
id = "{name}"
lease = "3s"

[kafka]
bootstrap_servers = "{brokers}"
topic = "{topic}"
group_id = "{group}"

[kafka.properties]
"session.timeout.ms" = "6000"
"#
        ),
    )
    .unwrap();
}

/// What an instance's log says about the group and the events it handled.
fn log_summary(name: &str, log: &str) -> String {
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let applied = |outcome: &str| {
        log.lines()
            .filter(|l| l.contains("event applied") && l.contains(outcome))
            .count()
    };
    let mut summary = format!(
        "{name}: {} events handled ({} transitions, {} refreshes, {} duplicates, {} stale, {} refused); \
         {} assignments, {} revocations, {} listener restarts, {} warnings, {} errors",
        count("event applied"),
        applied("Transitioned"),
        applied("Refreshed"),
        applied("Duplicate"),
        applied("Stale"),
        applied("Refused"),
        count("partitions assigned"),
        count("partitions revoked"),
        count("Kafka listener stopped"),
        count(" WARN "),
        count(" ERROR "),
    );
    for line in log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .take(5)
    {
        summary.push_str("\n    ");
        summary.push_str(line);
    }
    summary
}

async fn final_rows(db: &DatabaseConnection) -> u64 {
    TransformationJobQueue::find()
        .filter(transformation_job_queue::Column::Status.is_in(["Completed", "Failed"]))
        .count(db)
        .await
        .unwrap_or(0)
}

async fn scenario(backend: Backend) {
    let Some(brokers) = crate::kafka_e2e::broker() else {
        return;
    };
    let Some(test_db) = TestDb::fresh(backend).await else {
        return;
    };
    let began = Instant::now();
    let run = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let topic = format!("jw-instances-{run}");
    let group = format!("jw-instances-{run}");
    create_topic(&brokers, &topic).await;
    let spark = SparkServer::start().await;
    let spark_url = spark.url();
    let shared = Shared {
        db_url: &test_db.url,
        spark: &spark_url,
        brokers: &brokers,
        topic: &topic,
        group: &group,
    };
    let db = Database::connect(&test_db.url).await.unwrap();
    let pipeline = Pipeline::new(&brokers, &topic);

    let mut k1 = Instance::start("k1", &shared);
    let mut k2 = Instance::start("k2", &shared);
    let mut k3 = Instance::start("k3", &shared);
    for k in [&mut k1, &mut k2, &mut k3] {
        k.wait_for_line("partitions assigned", Duration::from_secs(60));
    }

    let ticks = WAVES + STEPS - 1;
    let mut sent = 0;
    for tick in 0..3 {
        sent += pipeline.tick(tick).await;
    }
    // k2 dies in the middle of its partitions, with events written whose offsets are not
    // committed yet (that happens every second): whoever takes the partitions gets them again.
    k2.wait_for_line("to: Processing", Duration::from_secs(60));
    k2.signal("KILL");
    let (status, k2_log) = k2.exited();
    assert!(!status.success(), "SIGKILL ends k2 abruptly");
    eprintln!(
        "k2 killed after {:?}: {sent} events sent, {} jobs final",
        began.elapsed(),
        final_rows(&db).await
    );

    for tick in 3..5 {
        sent += pipeline.tick(tick).await;
    }
    // k4 joins while the others still work through a backlog, taking partitions from them.
    let mut k4 = Instance::start("k4", &shared);
    k4.wait_for_line("partitions assigned", Duration::from_secs(60));
    eprintln!(
        "k4 took partitions after {:?}: {} jobs final",
        began.elapsed(),
        final_rows(&db).await
    );
    for tick in 5..ticks {
        sent += pipeline.tick(tick).await;
    }
    assert_eq!(sent, JOBS * STEPS);

    wait_until(Duration::from_secs(120), "every job to be final", || {
        let db = db.clone();
        async move { final_rows(&db).await == JOBS as u64 }
    })
    .await;
    eprintln!("every job final after {:?}", began.elapsed());

    // Together, not one by one: no instance inherits partitions from another only to leave
    // itself. Each still drains what it has in flight and commits before it exits.
    for k in [&k1, &k3, &k4] {
        k.signal("TERM");
    }
    let mut logs = vec![("k2", k2_log)];
    for k in [k1, k3, k4] {
        let name = k.name;
        let (status, log) = k.exited();
        assert!(
            status.success(),
            "{name} exits 0 on SIGTERM, got {status:?}:\n{log}"
        );
        logs.push((name, log));
    }
    for (name, log) in &logs {
        eprintln!("{}", log_summary(name, log));
    }

    the_rows_end_on_each_jobs_last_event(&db).await;
    each_history_records_every_change_once_in_order(&db).await;
    let letters = DeadLetters::find().all(&db).await.unwrap();
    assert!(
        letters.is_empty(),
        "no well-formed event is a dead letter: {:?}",
        letters.iter().map(|l| &l.error).collect::<Vec<_>>()
    );

    db.close().await.ok();
    test_db.drop_database().await;
    eprintln!("{backend:?} scenario took {:?}", began.elapsed());
}

/// Every job ends where its last event put it: that event's status, its id remembered, its
/// generated fields kept. An earlier event applied after it would have left its own id.
async fn the_rows_end_on_each_jobs_last_event(db: &DatabaseConnection) {
    let rows = TransformationJobQueue::find().all(db).await.unwrap();
    assert_eq!(rows.len(), JOBS, "exactly the jobs that were sent");
    let last = STEPS - 1;
    let wrong: Vec<String> = rows
        .iter()
        .filter_map(|row| {
            let job: usize = row.job_id.trim_start_matches("job-").parse().unwrap();
            let expected = (
                final_status(job),
                Some(event_id(job, last)),
                Some(serde_json::json!({ "step": last })),
            );
            let actual = (
                row.status.as_str(),
                row.last_event_id.clone(),
                row.generated_fields.clone(),
            );
            (actual != expected).then(|| format!("{}: {actual:?}, want {expected:?}", row.job_id))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {JOBS} jobs did not end on their last event:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(10)].join("\n")
    );
}

/// A job's history holds no line twice (a redelivered event applied again) and none going
/// backwards, and its status changes are the job's own, each once, at the times of the events
/// that made them: an event applied out of order would show another time or another change.
async fn each_history_records_every_change_once_in_order(db: &DatabaseConnection) {
    let mut histories: BTreeMap<String, Vec<job_status_history::Model>> = BTreeMap::new();
    for line in JobStatusHistory::find()
        .filter(job_status_history::Column::JobKind.eq("queue"))
        .order_by_asc(job_status_history::Column::Id)
        .all(db)
        .await
        .unwrap()
    {
        histories.entry(line.job_id.clone()).or_default().push(line);
    }
    assert_eq!(histories.len(), JOBS, "every job has a history");

    let transition = |l: &job_status_history::Model| {
        format!(
            "{}->{}@{}",
            l.from_status.as_deref().unwrap_or("(new)"),
            l.to_status,
            l.at.format("%S")
        )
    };
    let mut repeated = Vec::new();
    let mut backwards = Vec::new();
    let mut out_of_order = Vec::new();
    for (job_id, lines) in &histories {
        let job: usize = job_id.trim_start_matches("job-").parse().unwrap();
        let shown = || lines.iter().map(transition).collect::<Vec<_>>().join(", ");
        let mut seen = BTreeSet::new();
        if !lines
            .iter()
            .all(|l| seen.insert((l.from_status.clone(), l.to_status.clone())))
        {
            repeated.push(format!("{job_id}: {}", shown()));
        }
        if lines.iter().any(|l| {
            l.from_status
                .as_deref()
                .is_some_and(|from| stage(&l.to_status) < stage(from) || stage(from) == 2)
        }) {
            backwards.push(format!("{job_id}: {}", shown()));
        }
        // Lines for an event that repeated the status (a refresh) may or may not be kept;
        // the changes between statuses must be exactly these.
        let reported: Vec<(&str, &str, DateTime<Utc>)> = (1..STEPS)
            .filter(|&step| status(job, step) != status(job, step - 1))
            .map(|step| (status(job, step - 1), status(job, step), timestamp(step)))
            .collect();
        let recorded: Vec<(&str, &str, DateTime<Utc>)> = lines
            .iter()
            .filter_map(|l| {
                let from = l.from_status.as_deref()?;
                (from != l.to_status).then_some((from, l.to_status.as_str(), l.at))
            })
            .collect();
        if recorded != reported {
            out_of_order.push(format!("{job_id}: {}", shown()));
        }
    }
    let sample = |jobs: &[String]| jobs[..jobs.len().min(10)].join("\n");
    assert!(
        repeated.is_empty(),
        "{} jobs have a transition twice:\n{}",
        repeated.len(),
        sample(&repeated)
    );
    assert!(
        backwards.is_empty(),
        "{} jobs moved backwards:\n{}",
        backwards.len(),
        sample(&backwards)
    );
    assert!(
        out_of_order.is_empty(),
        "{} jobs' status changes are not their events', once each, in order:\n{}",
        out_of_order.len(),
        sample(&out_of_order)
    );
}
