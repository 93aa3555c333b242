//! Chaos with a truth checker. Three `jobwarden` processes share PostgreSQL (and, in a shorter
//! run, MariaDB) through a TCP proxy; a Spark-protocol server answers for hundreds of drivers
//! and takes the submissions of a few dozen jobs jobwarden submits itself;
//! a Kafka-protocol broker of the test's own (tansu) is fed status events by a producer; a
//! webhook receiver takes the notifications. While the scenario runs it injects faults, at
//! random but from a printed seed: kill -9 of an instance (restarted a moment later), a cut of
//! the database connection, a crash of the database server itself (PostgreSQL, on a server of
//! the test's own: immediate shutdown, then crash recovery at restart), kill -9 of the broker
//! (restarted on its own storage), the receiver answering 503, Spark answering slower than the
//! request timeout, and the Spark master restarting (answering as a master not yet alive).
//! Every ending is decided by the scenario and written down as it is told to Spark or sent to
//! Kafka: the truth.
//!
//! Afterwards the checker compares the database with that truth: each job's terminal status is
//! what Spark or the producer said; no history row starts from a terminal status or repeats a
//! move; each job jobwarden submits got exactly one driver (never a second after a crash or a
//! lost answer); each event's change was applied once (a redelivery is a no-op); every success was
//! delivered to the receiver at least once; exactly the malformed events are dead letters;
//! no row is left unfinished. One line of figures is printed; any violation fails the test.
//! `JOBWARDEN_CHAOS_SECONDS` (default 45) sets how long faults go on; `JOBWARDEN_CHAOS_SEED`
//! replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use entity::{
    dead_letters, job_status_history as history, spark_job_executions, transformation_job_queue,
};
use jobwarden_testkit::fuzz::Rng;
use jobwarden_testkit::receiver::{Mode, Receiver};
use jobwarden_testkit::spark_server::Created;
use jobwarden_testkit::tansu::{self, Broker};
use jobwarden_testkit::{free_port, Answer, SparkServer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, EntityTrait, PaginatorTrait, QueryOrder,
};
use serde_json::json;

use crate::binary::{jobwarden, Running};
use crate::helpers::{socket_of, Backend, CutProxy, TestDb};
use crate::real_spark::Cluster;

const SPARK_JOBS: usize = 240;
/// Jobs jobwarden submits itself (one attempt each), to the same protocol server.
const SUBMITTED_JOBS: usize = 24;
/// Jobs jobwarden submits to the real Spark cluster in PostgreSQL's run.
const REAL_JOBS: usize = 3;
/// What those jobs ask for: one attempt, so a second driver can only be a double submission.
const SUBMIT_SPEC: &str = r#"{"app_resource":"file:/chaos.jar","main_class":"org.example.Chaos","retry":{"max_attempts":1}}"#;
const QUEUE_JOBS: usize = 300;
const MALFORMED: usize = 6;
const TOPIC: &str = "chaos-status";

fn chaos_seconds(default: u64) -> Duration {
    Duration::from_secs(
        std::env::var("JOBWARDEN_CHAOS_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
}

fn chaos_seed() -> u64 {
    std::env::var("JOBWARDEN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// A PostgreSQL server of this test's own, so that crashing and restarting it disturbs no other
/// test. As root (CI) it runs as the `postgres` user, which PostgreSQL insists on.
struct OwnPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_root: bool,
    child: Option<Child>,
}

impl OwnPostgres {
    /// A new cluster, started, or `None` when this machine has no PostgreSQL server binaries.
    fn start() -> Option<OwnPostgres> {
        let bindir = Command::new("pg_config").arg("--bindir").output().ok()?;
        let bin = PathBuf::from(String::from_utf8_lossy(&bindir.stdout).trim());
        if !bin.join("postgres").exists() {
            return None;
        }
        let uid = Command::new("id").arg("-u").output().ok()?;
        let as_root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::tempdir().unwrap();
        let mut server = OwnPostgres {
            bin,
            dir,
            port: free_port(),
            as_root,
            child: None,
        };
        if as_root {
            let chowned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(server.dir.path())
                .status()
                .unwrap();
            assert!(chowned.success(), "cannot hand the data folder to postgres");
        }
        let initdb = server
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(server.data())
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        server.spawn();
        Some(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn spawn(&mut self) {
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = format!("127.0.0.1:{}", self.port);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An immediate shutdown: every session is cut without a checkpoint, as in a crash, and
    /// the next start runs crash recovery.
    fn crash(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The postmaster itself, by its pid file: runuser does not pass signals on.
        let postmaster = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned));
        if let Some(pid) = postmaster {
            let _ = Command::new("kill").args(["-QUIT", &pid]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        while self.data().join("postmaster.pid").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.crash();
    }
}

/// The database the instances share: on PostgreSQL a server of the test's own (so it can be
/// crashed), on MariaDB a fresh database on the shared server.
struct ChaosDb {
    url: String,
    db: DatabaseConnection,
    server: Option<OwnPostgres>,
    shared: Option<TestDb>,
}

impl ChaosDb {
    async fn fresh(backend: Backend) -> Option<ChaosDb> {
        if backend == Backend::Postgres {
            match OwnPostgres::start() {
                Some(server) => {
                    let admin = Database::connect(server.admin_url()).await.unwrap();
                    admin.execute_unprepared("CREATE DATABASE chaos").await.unwrap();
                    admin.close().await.ok();
                    let url = server.url("chaos");
                    let db = Database::connect(&url).await.unwrap();
                    jobwarden::store::migrate(&db).await.unwrap();
                    return Some(ChaosDb {
                        url,
                        db,
                        server: Some(server),
                        shared: None,
                    });
                }
                None => assert!(
                    !crate::helpers::require_all_backends(),
                    "CI must crash a PostgreSQL server of the chaos test's own: pg_config --bindir has no postgres"
                ),
            }
        }
        let shared = TestDb::fresh(backend).await?;
        Some(ChaosDb {
            url: shared.url.clone(),
            db: shared.db.clone(),
            server: None,
            shared: Some(shared),
        })
    }

    /// A new connection for the checker: the old one's sessions died with the server.
    async fn reconnect(&mut self) {
        self.db = Database::connect(&self.url).await.unwrap();
    }

    async fn drop_database(self) {
        self.db.close().await.ok();
        if let Some(shared) = self.shared {
            shared.drop_database().await;
        }
    }
}

/// One of the instances: its config stays, its process comes and goes.
struct Instance {
    name: String,
    dir: tempfile::TempDir,
    running: Option<Running>,
}

impl Instance {
    fn start(name: &str, config: &str) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let mut instance = Instance {
            name: name.to_owned(),
            dir,
            running: None,
        };
        instance.spawn();
        instance
    }

    /// Starts the process without waiting for it: the proxy, the Spark server and the
    /// receiver run on this test's own thread, which must not block.
    fn spawn(&mut self) {
        self.running = Some(Running::start(jobwarden(self.dir.path())));
    }

    fn kill(&mut self) {
        if let Some(running) = self.running.take() {
            running.signal_quietly("KILL");
            let _ = running.wait(Duration::from_secs(10));
        }
    }

    async fn stop(&mut self) -> String {
        let Some(running) = self.running.take() else {
            return String::new();
        };
        running.signal("TERM");
        let (status, log) =
            tokio::task::spawn_blocking(move || running.wait(Duration::from_secs(60)))
                .await
                .unwrap();
        assert!(
            status.success(),
            "{} did not stop cleanly:\n{log}",
            self.name
        );
        log
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.signal_quietly("KILL");
        }
    }
}

fn config(
    db_url: &str,
    spark: &SparkServer,
    brokers: &str,
    group: &str,
    receiver: &str,
    name: &str,
    real: Option<&Cluster>,
) -> String {
    let real = real.map_or(String::new(), |c| {
        format!(
            "[spark.clusters.real]\nrest_url = \"{}\"\nmaster_ui_url = \"{}\"\nrequest_timeout = \"5s\"\n",
            c.rest, c.ui
        )
    });
    format!(
        "[database]\nurl = \"{db_url}\"\nconnect_timeout = \"2s\"\nstartup_wait = \"2m\"\n\
         [spark]\nrest_url = \"{spark}\"\nmaster_ui_url = \"{spark}\"\nstatus_source = \"rest\"\n\
         poll_interval = \"1s\"\nmax_concurrent_polls = 16\nrequest_timeout = \"1s\"\n\
         [store]\nretry_initial = \"50ms\"\nretry_max = \"1s\"\n\
         [instance]\nid = \"{name}\"\nlease = \"3s\"\n\
         [kafka]\nbootstrap_servers = \"{brokers}\"\ntopic = \"{TOPIC}\"\ngroup_id = \"{group}\"\n\
         [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
         [notifications]\ncheck_every = \"200ms\"\ngroup_wait = \"1s\"\n\
         [notifications.channels.hook]\nkind = \"webhook\"\nurl = \"{receiver}\"\ntimeout = \"1s\"\n\
         [[notifications.rules]]\non = [\"succeeded\"]\nchannels = [\"hook\"]\n{real}",
        spark = spark.url()
    )
}

/// What the scenario told Spark and Kafka: each job's last word.
#[derive(Default)]
struct Truth {
    spark: BTreeMap<String, &'static str>,
    queue: BTreeMap<String, &'static str>,
    /// The jobs jobwarden was to submit: exactly one driver each.
    submitted: BTreeSet<String>,
    /// Those of them it submits to the real Spark cluster.
    on_real: BTreeSet<String>,
}

/// The real Spark cluster of `.ci/spark.sh`, held for the run, and the jar of tiny drivers.
struct RealSpark {
    cluster: Cluster,
    jar: String,
    _jar_dir: tempfile::TempDir,
    _alone: tokio::sync::MutexGuard<'static, ()>,
}

impl RealSpark {
    /// On PostgreSQL's run only: the real cluster's drivers take the time of real JVMs.
    async fn for_run(backend: Backend) -> Option<RealSpark> {
        if backend != Backend::Postgres {
            return None;
        }
        let cluster = crate::real_spark::cluster()?;
        let alone = crate::real_spark::CLUSTER.lock().await;
        let jar_dir = tempfile::tempdir().unwrap();
        let jar = crate::real_spark::build_jar(jar_dir.path(), &cluster.jars);
        Some(RealSpark {
            cluster,
            jar,
            _jar_dir: jar_dir,
            _alone: alone,
        })
    }

    /// A driver that sleeps a few seconds and ends well, with one attempt.
    fn spec(&self) -> String {
        json!({
            "app_resource": self.jar,
            "main_class": "Sleep",
            "args": ["3000"],
            "spark_properties": {
                "spark.driver.memory": "512m",
                "spark.executor.memory": "512m",
                "spark.cores.max": "1",
            },
            "retry": {"max_attempts": 1},
        })
        .to_string()
    }
}

/// The execution a driver was submitted for, from the mark its request carried
/// (`<execution id>:<attempt>:<nonce>`).
fn submitted_for(created: &Created) -> Option<&str> {
    created.mark.as_deref()?.split(':').next()
}

/// Spark's final driver states and the row status each means.
const ENDINGS: [(&str, &str); 3] = [
    ("FINISHED", "Succeeded"),
    ("FAILED", "Failed"),
    ("KILLED", "Cancelled"),
];

/// One planned Kafka message: key and payload, sent in order.
type Event = (String, Vec<u8>);

fn plan_events(rng: &mut Rng, truth: &mut Truth) -> Vec<Event> {
    let mut firsts = Vec::new();
    let mut lasts = Vec::new();
    for i in 0..QUEUE_JOBS {
        let id = format!("chaos-q-{i}");
        let ending = if rng.chance(5) { "Failed" } else { "Completed" };
        truth.queue.insert(id.clone(), ending);
        firsts.push((id.clone(), format!(r#"{{"jobId":"{id}","status":"Processing","eventId":"{id}-1","timestamp":"2026-12-01T10:00:00Z"}}"#).into_bytes()));
        let end = format!(r#"{{"jobId":"{id}","status":"{ending}","eventId":"{id}-2","timestamp":"2026-12-01T10:05:00Z"}}"#).into_bytes();
        lasts.push((id.clone(), end.clone()));
        // A duplicate, and a late Processing after the end: neither may change the row.
        if rng.chance(4) {
            lasts.push((id.clone(), end));
        }
        if rng.chance(6) {
            lasts.push((id.clone(), format!(r#"{{"jobId":"{id}","status":"Processing","eventId":"{id}-late","timestamp":"2026-12-01T10:01:00Z"}}"#).into_bytes()));
        }
    }
    let mut events = firsts;
    events.extend(lasts);
    for i in 0..MALFORMED {
        let at = rng.below(events.len());
        events.insert(
            at,
            (format!("bad-{i}"), format!("not json #{i}").into_bytes()),
        );
    }
    events
}

/// Sends each event until the broker takes it: a broker killed mid-run delays, never drops.
async fn produce(brokers: String, events: Vec<Event>, pace: Duration) -> usize {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .set("message.timeout.ms", "5000")
        .create()
        .unwrap();
    for (key, payload) in &events {
        loop {
            let sent = producer
                .send(
                    FutureRecord::to(TOPIC).key(key).payload(payload),
                    Duration::from_secs(5),
                )
                .await;
            if sent.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(pace).await;
    }
    events.len()
}

#[derive(Default, Debug)]
struct Faults {
    kills: usize,
    database_cuts: usize,
    database_crashes: usize,
    broker_restarts: usize,
    receiver_outages: usize,
    spark_stalls: usize,
    master_restarts: usize,
}

impl Faults {
    fn total(&self) -> usize {
        self.kills
            + self.database_cuts
            + self.database_crashes
            + self.broker_restarts
            + self.receiver_outages
            + self.spark_stalls
            + self.master_restarts
    }
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

/// Every way the database can disagree with the truth, each as one line.
async fn violations(
    db: &DatabaseConnection,
    truth: &Truth,
    receiver: &Receiver,
    created: &[Created],
) -> Vec<String> {
    let mut found = Vec::new();
    let mut drivers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for driver in created {
        match submitted_for(driver) {
            Some(id) if truth.submitted.contains(id) => {
                drivers.entry(id).or_default().push(&driver.submission_id)
            }
            _ => found.push(format!(
                "{}: a driver submitted for no job jobwarden was to submit ({:?})",
                driver.submission_id, driver.mark
            )),
        }
    }
    for id in &truth.submitted {
        match drivers.get(id.as_str()).map(Vec::len).unwrap_or(0) {
            1 => {}
            0 => found.push(format!("{id}: never submitted")),
            n => found.push(format!(
                "{id}: submitted {n} times ({:?})",
                drivers[id.as_str()]
            )),
        }
    }
    let rows = spark_job_executions::Entity::find().all(db).await.unwrap();
    for row in &rows {
        match truth.spark.get(&row.execution_id) {
            Some(expected) if *expected != row.status => found.push(format!(
                "{}: {} in the database, Spark said {expected}",
                row.execution_id, row.status
            )),
            None => found.push(format!("{}: a row nobody wrote", row.execution_id)),
            _ => {}
        }
    }
    if rows.len() != truth.spark.len() {
        found.push(format!(
            "{} Spark rows, {} expected",
            rows.len(),
            truth.spark.len()
        ));
    }
    let queue = transformation_job_queue::Entity::find()
        .all(db)
        .await
        .unwrap();
    for row in &queue {
        match truth.queue.get(&row.job_id) {
            Some(expected) if *expected != row.status => found.push(format!(
                "{}: {} in the database, the producer said {expected}",
                row.job_id, row.status
            )),
            None => found.push(format!("{}: a queue row nobody sent", row.job_id)),
            _ => {}
        }
    }
    if queue.len() != truth.queue.len() {
        found.push(format!(
            "{} queue rows, {} expected",
            queue.len(),
            truth.queue.len()
        ));
    }
    let terminal = ["Succeeded", "Failed", "Cancelled", "Completed"];
    let mut seen = BTreeSet::new();
    for h in history::Entity::find()
        .order_by_asc(history::Column::Id)
        .all(db)
        .await
        .unwrap()
    {
        if let Some(from) = h.from_status.as_deref().filter(|f| terminal.contains(f)) {
            found.push(format!(
                "{}: history moves from {from} to {}",
                h.job_id, h.to_status
            ));
        }
        // A remark (the status kept) may repeat: an attempt withdrawn and begun again.
        if h.from_status.as_deref() != Some(h.to_status.as_str())
            && !seen.insert((
                h.job_kind.clone(),
                h.job_id.clone(),
                h.from_status.clone(),
                h.to_status.clone(),
            ))
        {
            found.push(format!(
                "{}: {:?} -> {} written twice",
                h.job_id, h.from_status, h.to_status
            ));
        }
    }
    let letters = dead_letters::Entity::find().count(db).await.unwrap();
    if letters != MALFORMED as u64 {
        found.push(format!(
            "{letters} dead letters, {MALFORMED} malformed events sent"
        ));
    }
    let told: BTreeSet<String> = receiver
        .got()
        .iter()
        .filter_map(|r| r.body["job"]["id"].as_str().map(str::to_owned))
        .collect();
    for (id, status) in &truth.spark {
        if *status == "Succeeded" && !told.contains(id) {
            found.push(format!("{id}: succeeded, never announced"));
        }
    }
    for (id, status) in &truth.queue {
        if *status == "Completed" && !told.contains(id) {
            found.push(format!("{id}: completed, never announced"));
        }
    }
    found
}

/// A job to hand over to jobwarden: its id, its spec and the cluster it names, if any.
type Handed = (String, String, Option<&'static str>);

/// Rows for jobs jobwarden is to submit, as an application writes them: an id, a spec and
/// maybe a cluster.
async fn hand_over(db: &DatabaseConnection, jobs: &[Handed]) -> Result<(), sea_orm::DbErr> {
    if jobs.is_empty() {
        return Ok(());
    }
    let values: Vec<String> = jobs
        .iter()
        .map(|(id, spec, cluster)| {
            let cluster = cluster.map_or("NULL".to_owned(), |c| format!("'{c}'"));
            format!("('{id}', '{spec}', {cluster})")
        })
        .collect();
    db.execute_unprepared(&format!(
        "INSERT INTO spark_job_executions (execution_id, submit_spec, cluster) VALUES {}",
        values.join(", ")
    ))
    .await
    .map(|_| ())
}

/// Ends up to `at_most` drivers jobwarden submitted that are still running, each as the seed
/// picks, and writes their endings down.
fn end_submitted(
    spark: &SparkServer,
    truth: &mut Truth,
    rng: &mut Rng,
    ended: &mut BTreeSet<String>,
    at_most: usize,
) {
    let running: Vec<Created> = spark
        .created()
        .into_iter()
        .filter(|c| !ended.contains(&c.submission_id))
        .take(at_most)
        .collect();
    for driver in running {
        let (state, status) = ENDINGS[rng.below(ENDINGS.len())];
        spark.answer(&driver.submission_id, Answer::State(state));
        if let Some(id) = submitted_for(&driver) {
            truth.spark.insert(id.to_owned(), status);
        }
        ended.insert(driver.submission_id);
    }
}

/// While faults go on: now and then, one running submitted driver ends.
fn end_some_submitted(
    spark: &SparkServer,
    truth: &mut Truth,
    rng: &mut Rng,
    ended: &mut BTreeSet<String>,
) {
    if rng.below(3) == 0 {
        end_submitted(spark, truth, rng, ended, 1);
    }
}

/// One chaos run at a time: each keeps both cores busy with its own processes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn chaos(backend: Backend, run_for: Duration) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(binary) = tansu::binary_from_env() else {
        assert!(
            !crate::helpers::require_all_backends(),
            "CI must run the chaos test: .ci/kafka.sh exports JOBWARDEN_TEST_TANSU"
        );
        eprintln!(
            "SKIPPED chaos: JOBWARDEN_TEST_TANSU is not set (run `eval \"$(bash .ci/kafka.sh)\"`)"
        );
        return;
    };
    let Some(mut db) = ChaosDb::fresh(backend).await else {
        return;
    };
    let seed = chaos_seed();
    let mut rng = Rng::new(seed);
    eprintln!("chaos on {backend:?}: seed {seed} (JOBWARDEN_CHAOS_SEED={seed} replays it), faults for {run_for:?}");

    let mut truth = Truth::default();
    let real = RealSpark::for_run(backend).await;
    let spark = SparkServer::start().await;
    let ids: Vec<String> = (0..SPARK_JOBS).map(|i| format!("chaos-s-{i}")).collect();
    for chunk in ids.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|id| format!("('{id}', 'driver-{id}')"))
            .collect();
        db.db
            .execute_unprepared(&format!(
                "INSERT INTO spark_job_executions (execution_id, submission_id) VALUES {}",
                values.join(", ")
            ))
            .await
            .unwrap();
    }
    for id in &ids {
        spark.answer(&format!("driver-{id}"), Answer::State("RUNNING"));
    }
    truth.submitted = (0..SUBMITTED_JOBS)
        .map(|i| format!("chaos-sub-{i}"))
        .collect();
    // Handed to jobwarden a few at a time while the faults go on, so that submissions meet
    // kills, stalls and failovers.
    let mut to_submit: Vec<Handed> = truth
        .submitted
        .iter()
        .map(|id| (id.clone(), SUBMIT_SPEC.to_owned(), None))
        .collect();
    if let Some(real) = &real {
        // Ids of their own: the real master keeps the drivers of earlier runs.
        for i in 0..REAL_JOBS {
            let id = format!("chaos-real-{i}-{seed}");
            truth.on_real.insert(id.clone());
            truth.spark.insert(id.clone(), "Succeeded");
            to_submit.insert(2 * i + 1, (id, real.spec(), Some("real")));
        }
    }
    to_submit.reverse();
    // When each driver ends, spread over the run.
    let mut endings: Vec<(Duration, String, usize)> = ids
        .iter()
        .map(|id| {
            let at = Duration::from_millis(rng.below(run_for.as_millis().max(1) as usize) as u64);
            (at, id.clone(), rng.below(ENDINGS.len()))
        })
        .collect();
    endings.sort();

    let mut broker = Broker::start(binary, "jobwarden-chaos");
    jobwarden_testkit::kafka::create_topic(&broker.address(), TOPIC)
        .await
        .unwrap();
    let events = plan_events(&mut rng, &mut truth);
    let receiver = Receiver::start(Mode::Accept).await;
    let proxy = CutProxy::start(socket_of(&db.url)).await;
    let through = proxy.url_through(&db.url);
    let group = format!("chaos-{seed}");
    let names = ["c1", "c2", "c3"];
    let mut instances: Vec<Instance> = names
        .iter()
        .map(|n| {
            Instance::start(
                n,
                &config(
                    &through,
                    &spark,
                    &broker.address(),
                    &group,
                    &receiver.url,
                    n,
                    real.as_ref().map(|r| &r.cluster),
                ),
            )
        })
        .collect();
    let pace = run_for / (events.len() as u32 + 1);
    let producer = actix_rt::spawn(produce(broker.address(), events, pace));

    let mut faults = Faults::default();
    // Drivers of submitted jobs the scenario has ended.
    let mut ended = BTreeSet::new();
    let started = Instant::now();
    let mut next_ending = 0;
    while started.elapsed() < run_for {
        while next_ending < endings.len() && endings[next_ending].0 <= started.elapsed() {
            let (_, id, ending) = &endings[next_ending];
            let (state, status) = ENDINGS[*ending];
            spark.answer(&format!("driver-{id}"), Answer::State(state));
            truth.spark.insert(id.clone(), status);
            next_ending += 1;
        }
        end_some_submitted(&spark, &mut truth, &mut rng, &mut ended);
        let batch: Vec<Handed> = (0..2).filter_map(|_| to_submit.pop()).collect();
        if hand_over(&db.db, &batch).await.is_err() {
            // The database is down for the scenario too: hand them over later.
            to_submit.extend(batch.into_iter().rev());
        }
        let outage = Duration::from_millis(1_000 + rng.below(3_000) as u64);
        // A crash of the database server only where the server is the test's own.
        let kinds = if db.server.is_some() { 7 } else { 6 };
        match rng.below(kinds) {
            0 => {
                let victim = rng.below(instances.len());
                instances[victim].kill();
                tokio::time::sleep(outage).await;
                instances[victim].spawn();
                faults.kills += 1;
            }
            1 => {
                proxy.cut();
                tokio::time::sleep(outage).await;
                proxy.restore();
                faults.database_cuts += 1;
            }
            2 => {
                broker.kill();
                tokio::time::sleep(outage).await;
                broker.restart();
                faults.broker_restarts += 1;
            }
            3 => {
                receiver.set(Mode::Status(503));
                tokio::time::sleep(outage).await;
                receiver.set(Mode::Accept);
                faults.receiver_outages += 1;
            }
            4 => {
                spark.set_delay(Duration::from_secs(2));
                tokio::time::sleep(outage).await;
                spark.set_delay(Duration::ZERO);
                faults.spark_stalls += 1;
            }
            5 => {
                // A restarted master answers as one not yet alive until it has recovered.
                spark.set_standby(true);
                tokio::time::sleep(outage).await;
                spark.set_standby(false);
                faults.master_restarts += 1;
            }
            _ => {
                let server = db.server.as_mut().expect("only with a server of our own");
                server.crash();
                tokio::time::sleep(outage).await;
                server.spawn();
                faults.database_crashes += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1_500) as u64)).await;
    }
    for (_, id, ending) in &endings[next_ending..] {
        let (state, status) = ENDINGS[*ending];
        spark.answer(&format!("driver-{id}"), Answer::State(state));
        truth.spark.insert(id.clone(), status);
    }
    let sent = producer.await.unwrap();

    // Quiet now: everything must settle to the truth.
    db.reconnect().await;
    to_submit.reverse();
    hand_over(&db.db, &to_submit).await.unwrap();
    let settled = std::cell::RefCell::new(Vec::new());
    // How many violations were left every 30 s of settling: a count still falling at the end
    // says the machine was slow, one standing still says something is stuck.
    let progress = std::cell::RefCell::new(Vec::new());
    let settling = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            // Drivers submitted late (after a fault held them back) end now.
            end_submitted(&spark, &mut truth, &mut rng, &mut ended, usize::MAX);
            let found = violations(&db.db, &truth, &receiver, &spark.created()).await;
            let done = found.is_empty();
            let every_30s = (settling.elapsed().as_secs() / 30 + 1) as usize;
            if progress.borrow().len() < every_30s {
                progress.borrow_mut().push(format!(
                    "{}s: {}",
                    settling.elapsed().as_secs(),
                    found.len()
                ));
            }
            *settled.borrow_mut() = found;
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let progress = progress.take();
    let mut found = settled.take();
    if let Some(real) = &real {
        for id in &truth.on_real {
            let drivers = crate::submit::drivers_marked(&real.cluster.ui, &format!("{id}:")).await;
            if drivers.len() != 1 {
                found.push(format!(
                    "{id}: {} drivers on the real Spark cluster ({drivers:?}), one expected",
                    drivers.len()
                ));
            }
        }
    }
    let unfinished = scalar(
        &db.db,
        "SELECT COUNT(*) FROM spark_job_executions WHERE status NOT IN ('Succeeded','Failed','Cancelled')",
    )
    .await;
    eprintln!(
        "chaos {backend:?} seed={seed}: faults={} ({faults:?}) spark_jobs={SPARK_JOBS} submitted_jobs={SUBMITTED_JOBS} drivers_submitted={} real_spark_jobs={} queue_jobs={QUEUE_JOBS} events={sent} notifications={} unfinished={unfinished} violations={}",
        faults.total(),
        spark.created().len(),
        truth.on_real.len(),
        receiver.got().len(),
        found.len()
    );
    let mut logs = Vec::new();
    for instance in &mut instances {
        logs.push(instance.stop().await);
    }
    let recovered: usize = logs
        .iter()
        .map(|log| {
            log.matches("found the driver of an attempt whose answer was lost")
                .count()
        })
        .sum();
    eprintln!("chaos {backend:?}: {recovered} submissions whose answer was lost found by their mark, not sent again (at least: a killed instance's log is gone)");
    if outcome.is_err() || !found.is_empty() {
        let shown: Vec<&String> = found.iter().take(20).collect();
        // What each instance said about its consumer: a partition nobody consumes shows here.
        let kafka: Vec<String> = instances
            .iter()
            .zip(&logs)
            .map(|(instance, log)| {
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains("kafka") || l.contains("partition"))
                    .collect();
                format!(
                    "--- {} ---\n{}",
                    instance.name,
                    lines[lines.len().saturating_sub(15)..].join("\n")
                )
            })
            .collect();
        // The violations come last: a CI log that keeps only the head and the tail of the
        // output still shows them.
        panic!(
            "last instance log tail:\n{}\nthe instances' Kafka lines:\n{}\n{} violations after the faults stopped (seed {seed}, settling {}, left while settling: {}), first {}: {shown:#?}",
            logs.last().map(|l| tail(l)).unwrap_or_default(),
            kafka.join("\n"),
            found.len(),
            if outcome.is_err() { "gave up after 180 s" } else { "done" },
            progress.join(", "),
            shown.len(),
        );
    }
    drop(broker);
    db.drop_database().await;
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[actix_rt::test]
async fn everything_breaking_at_once_on_postgres_leaves_every_row_true() {
    chaos(Backend::Postgres, chaos_seconds(45)).await;
}

#[actix_rt::test]
async fn everything_breaking_at_once_on_mariadb_leaves_every_row_true() {
    chaos(Backend::MariaDb, chaos_seconds(25)).await;
}

#[actix_rt::test]
async fn the_truth_checker_names_every_kind_of_disagreement() {
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    for statement in [
        "INSERT INTO spark_job_executions (execution_id, submission_id, status) VALUES ('s-1', 'driver-s-1', 'Running')",
        "INSERT INTO transformation_job_queue (job_id, status) VALUES ('q-1', 'Failed')",
        "INSERT INTO job_status_history (job_kind, job_id, from_status, to_status, source, at) \
         VALUES ('spark', 's-1', 'Succeeded', 'Running', 'spark_poll', '2026-12-01T10:00:00+00:00')",
    ] {
        db.db.execute_unprepared(statement).await.unwrap();
    }
    let mut truth = Truth::default();
    truth.spark.insert("s-1".into(), "Succeeded");
    truth.queue.insert("q-1".into(), "Completed");
    truth.submitted.insert("sub-1".into());
    truth.submitted.insert("sub-2".into());
    let driver = |n: u32, mark: Option<&str>| Created {
        submission_id: format!("driver-{n}"),
        main_class: "org.example.Chaos".into(),
        mark: mark.map(str::to_owned),
    };
    let created = [
        driver(1, Some("sub-1:1:aa")),
        driver(2, Some("sub-1:1:bb")),
        driver(3, None),
    ];
    let receiver = Receiver::start(Mode::Accept).await;
    let found = violations(&db.db, &truth, &receiver, &created)
        .await
        .join("\n");
    for expected in [
        "s-1: Running in the database, Spark said Succeeded",
        "q-1: Failed in the database, the producer said Completed",
        "s-1: history moves from Succeeded to Running",
        "0 dead letters",
        "s-1: succeeded, never announced",
        "q-1: completed, never announced",
        "sub-1: submitted 2 times",
        "sub-2: never submitted",
        "driver-3: a driver submitted for no job jobwarden was to submit",
    ] {
        assert!(
            found.contains(expected),
            "{expected:?} missing from:\n{found}"
        );
    }
}
