//! Spark supervision against a server speaking Spark's REST protocol: the client's typed
//! answers, the bounded poller pool, the scheduler's cycles, backoff and timeouts.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use entity::prelude::*;
use entity::{job_status_history, spark_job_executions};
use jobwarden::actors::polling;
use jobwarden::actors::scheduler::{GetSchedulerStats, Scheduler, SchedulerStats, Tick, Ticking};
use jobwarden::actors::JobStore;
use jobwarden::backend::spark::{DriverState, SparkClient, SparkError};
use jobwarden::config::{Settings, SparkSettings};
use jobwarden::events::Events;
use jobwarden::metrics::Metrics;
use jobwarden::store::read;
use jobwarden::store_api::{
    DueJobs, GetStats, Source, StoreError, StoreHandle, SweepTimeouts, TrackRequest, Write, WriteOp,
};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use crate::helpers::{launch_store_counting, wait_until, Backend, TestDb};
use jobwarden_testkit::{Answer, SparkServer as FakeSpark};

fn spark_settings(url: &str, pool: usize) -> SparkSettings {
    let mut settings = crate::helpers::settings_for("sqlite::memory:").spark;
    settings.rest_url = url.to_owned();
    settings.master_ui_url = Some(url.to_owned());
    settings.max_concurrent_polls = pool;
    settings.request_timeout = Duration::from_millis(500);
    settings.poll_interval = Duration::from_secs(15);
    settings
}

async fn client_for(spark: &FakeSpark) -> SparkClient {
    SparkClient::new(&spark_settings(&spark.url(), 5)).unwrap()
}

/// The client's error when a server answers `id`'s status with `answer`.
async fn status_error(id: &str, answer: Answer) -> SparkError {
    let spark = FakeSpark::start().await;
    spark.answer(id, answer);
    client_for(&spark).await.status(id).await.unwrap_err()
}

/// An address nothing listens on: connections to it are refused.
fn closed_url() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    url
}

/// Gives driver-0… driver-(n-1) the same answer.
fn answer_each(spark: &FakeSpark, n: usize, answer: Answer) {
    for i in 0..n {
        spark.answer(&format!("driver-{i}"), answer.clone());
    }
}

fn assert_each_asked_once(spark: &FakeSpark, n: usize) {
    for i in 0..n {
        assert_eq!(
            spark.status_requests(&format!("driver-{i}")),
            1,
            "driver-{i}"
        );
    }
}

/// A store, a poller pool and a scheduler over a fresh SQLite database, driven by hand.
struct World {
    db: TestDb,
    store: Addr<JobStore>,
    scheduler: Addr<Scheduler>,
    metrics: Arc<Metrics>,
}

/// Registers e0… (driver-0…), a few thousand at a time so big fleets share transactions.
async fn track(store: &Addr<JobStore>, n: usize) {
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(5_000) {
        let answers = futures::future::join_all(chunk.iter().map(|i| {
            store.send(Write(WriteOp::Track(TrackRequest {
                spec: None,
                execution_id: format!("e{i}"),
                submission_id: Some(format!("driver-{i}")),
                job_name: None,
                cluster: None,
                source: Source::Api,
                after: Vec::new(),
                priority: 0,
                allowed: None,
            })))
        }))
        .await;
        for answer in answers {
            answer.unwrap().unwrap();
        }
    }
}

impl World {
    /// Tracks `jobs` executions (e0…, driver-0…), starts a scheduler that ticks only when
    /// told, and tells it to start the first poll cycle.
    async fn new(spark_url: &str, pool: usize, jobs: usize) -> World {
        let world = World::idle(spark_url, pool, jobs).await;
        assert!(world.scheduler.send(Tick).await.unwrap().started);
        world
    }

    /// Like [`World::new`], once that first cycle has ended.
    async fn polled(spark_url: &str, pool: usize, jobs: usize) -> World {
        let world = World::new(spark_url, pool, jobs).await;
        world.wait_idle().await;
        world
    }

    /// [`World::configured`] with the default page, once its first cycle has ended.
    async fn polled_with(spark: SparkSettings, jobs: usize) -> World {
        let world = World::configured(spark, jobs, 2_000).await;
        assert!(world.scheduler.send(Tick).await.unwrap().started);
        world.wait_idle().await;
        world
    }

    /// Like [`World::new`], without the first cycle.
    async fn idle(spark_url: &str, pool: usize, jobs: usize) -> World {
        World::with_pages(spark_url, pool, jobs, 2_000).await
    }

    async fn with_pages(spark_url: &str, pool: usize, jobs: usize, page: u64) -> World {
        World::configured(spark_settings(spark_url, pool), jobs, page).await
    }

    async fn configured(spark: SparkSettings, jobs: usize, page: u64) -> World {
        let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
        let settings = Settings {
            spark,
            ..db.settings()
        };
        let metrics = Arc::new(Metrics::new());
        let events = Events::new(metrics.clone());
        let store = launch_store_counting(db.db.clone(), &settings, events.clone());
        track(&store, jobs).await;
        let handle = StoreHandle::from(&store);
        let (scheduler, _pollers) = polling::assemble(&settings.spark, &handle, &events).unwrap();
        let scheduler = scheduler.ticking(Ticking::Manual).page_size(page);
        // Supervised as in the service: a crash restarts it at the same address.
        let scheduler = Supervisor::start(move |_| scheduler);
        World {
            db,
            store,
            scheduler,
            metrics,
        }
    }

    async fn row(&self, id: &str) -> spark_job_executions::Model {
        SparkJobExecutions::find_by_id(id.to_owned())
            .one(&self.db.db)
            .await
            .unwrap()
            .unwrap()
    }

    async fn status(&self, id: &str) -> String {
        self.row(id).await.status
    }

    async fn submission(&self, id: &str) -> Option<String> {
        self.row(id).await.submission_id
    }

    async fn history(&self, id: &str) -> Vec<job_status_history::Model> {
        read::execution_with_history(&self.db.db, id)
            .await
            .unwrap()
            .unwrap()
            .1
    }

    async fn stats(&self) -> SchedulerStats {
        self.scheduler.send(GetSchedulerStats).await.unwrap()
    }

    /// The timeout rules applied as of `now`: how many jobs they failed.
    async fn sweep_at(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.store.send(SweepTimeouts { now }).await.unwrap()
    }

    /// The timeout rules two hours on, far past every timeout.
    async fn sweep_much_later(&self) -> Result<usize, StoreError> {
        self.sweep_at(Utc::now() + ChronoDuration::hours(2)).await
    }

    async fn count_status(&self, status: &str) -> u64 {
        SparkJobExecutions::find()
            .filter(spark_job_executions::Column::Status.eq(status))
            .count(&self.db.db)
            .await
            .unwrap()
    }

    /// Runs one more poll cycle to its end.
    async fn cycle(&self) {
        self.wait_idle().await;
        self.scheduler.send(Tick).await.unwrap();
        self.wait_idle().await;
    }

    async fn cycles(&self, n: usize) {
        for _ in 0..n {
            self.cycle().await;
        }
    }

    /// Runs cycles until `check` holds: a listing is reused for up to a second, so a change
    /// on the master shows after a few.
    async fn cycle_until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        wait_until(Duration::from_secs(30), what, || {
            let checked = check();
            async move {
                self.cycle().await;
                checked.await
            }
        })
        .await;
    }

    async fn wait_idle(&self) {
        self.wait_idle_within(Duration::from_secs(30)).await;
    }

    async fn wait_idle_within(&self, limit: Duration) {
        let scheduler = self.scheduler.clone();
        wait_until(limit, "the poll cycle to finish", || {
            let scheduler = scheduler.clone();
            async move {
                let stats = scheduler.send(GetSchedulerStats).await.unwrap();
                stats.cycles > 0 && !stats.cycle_running
            }
        })
        .await;
    }
}

#[actix_rt::test]
async fn client_reads_every_driver_state_spark_reports() {
    let spark = FakeSpark::start().await;
    let client = client_for(&spark).await;
    for state in DriverState::ALL {
        spark.answer("driver-1", Answer::State(state.as_str()));
        assert_eq!(client.status("driver-1").await.unwrap().state, state);
    }
}

#[actix_rt::test]
async fn unknown_submission_id_is_its_own_answer_not_a_failure() {
    let err = status_error("driver-nope", Answer::UnknownId).await;
    assert_eq!(err, SparkError::UnknownSubmission("driver-nope".into()));
    assert!(!err.is_outage());
}

#[actix_rt::test]
async fn error_state_carries_sparks_message() {
    let spark = FakeSpark::start().await;
    spark.answer("driver-1", Answer::State("ERROR"));
    let status = client_for(&spark).await.status("driver-1").await.unwrap();
    assert!(status
        .message
        .unwrap()
        .contains("java.nio.file.NoSuchFileException: /opt/spark-apps/missing.jar"));
}

#[actix_rt::test]
async fn http_500_is_an_outage() {
    let err = status_error("driver-1", Answer::Http500).await;
    assert!(
        matches!(err, SparkError::Http { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.is_outage());
}

#[actix_rt::test]
async fn answer_slower_than_the_timeout_is_a_timeout() {
    let err = status_error("driver-1", Answer::Hang).await;
    assert!(matches!(err, SparkError::Timeout(_)), "{err:?}");
}

#[actix_rt::test]
async fn garbage_body_is_refused_with_what_it_was() {
    let err = status_error("driver-1", Answer::Garbage).await;
    assert!(
        matches!(&err, SparkError::Garbage(text) if text.contains("<html>")),
        "{err:?}"
    );
}

#[actix_rt::test]
async fn connection_refused_is_an_outage() {
    let client = SparkClient::new(&spark_settings(&closed_url(), 1)).unwrap();
    let err = client.status("driver-1").await.unwrap_err();
    assert!(matches!(err, SparkError::Unreachable { .. }), "{err:?}");
}

#[actix_rt::test]
async fn failed_driver_reason_comes_from_the_workers_stderr() {
    let spark = FakeSpark::start().await;
    spark.answer("driver-1", Answer::State("FAILED"));
    let client = client_for(&spark).await;
    let status = client.status("driver-1").await.unwrap();
    let reason = client.failure_reason(&status).await.unwrap();
    assert!(reason.starts_with(
        "Caused by: java.lang.IllegalStateException: input table missing: s3://bucket/x"
    ));
    assert!(reason.contains("--- driver stderr (tail) ---"));
}

#[actix_rt::test]
async fn pool_of_5_never_has_more_than_5_requests_in_flight() {
    let spark = FakeSpark::start().await;
    spark.set_delay(Duration::from_millis(15));
    let world = World::polled(&spark.url(), 5, 200).await;
    assert_eq!(world.count_status("Running").await, 200);
    assert_eq!(spark.total_status_requests(), 200);
    assert!(
        spark.max_concurrent() <= 5,
        "saw {}",
        spark.max_concurrent()
    );
    assert_eq!(spark.max_concurrent(), 5, "the pool should be used fully");
}

#[actix_rt::test]
async fn pool_of_64_polls_more_than_5_at_once() {
    let spark = FakeSpark::start().await;
    spark.set_delay(Duration::from_millis(15));
    let world = World::polled(&spark.url(), 64, 200).await;
    assert_eq!(world.count_status("Running").await, 200);
    assert!(spark.max_concurrent() > 5, "saw {}", spark.max_concurrent());
    assert!(
        spark.max_concurrent() <= 64,
        "saw {}",
        spark.max_concurrent()
    );
}

#[actix_rt::test]
async fn slow_poll_is_never_duplicated_by_later_ticks() {
    let spark = FakeSpark::start().await;
    spark.set_delay(Duration::from_millis(300));
    // The first cycle takes about 600 ms.
    let world = World::new(&spark.url(), 2, 4).await;
    wait_until(
        Duration::from_secs(10),
        "the first cycle to start",
        || async { world.stats().await.in_flight > 0 },
    )
    .await;
    for _ in 0..5 {
        let summary = world.scheduler.send(Tick).await.unwrap();
        assert!(
            !summary.started,
            "a tick during a running cycle must not start another"
        );
    }
    world.wait_idle().await;
    assert_each_asked_once(&spark, 4);
    let stats = world.stats().await;
    assert_eq!(stats.skipped_ticks, 5);
}

#[actix_rt::test]
async fn restarted_scheduler_never_polls_a_job_that_is_still_in_flight() {
    let spark = FakeSpark::start().await;
    spark.set_delay(Duration::from_millis(400));
    // The slow answer must still count: room for a loaded machine beyond the 400 ms.
    let mut settings = spark_settings(&spark.url(), 2);
    settings.request_timeout = Duration::from_secs(5);
    let world = World::configured(settings, 1, 2_000).await;
    assert!(world.scheduler.send(Tick).await.unwrap().started);
    wait_until(
        Duration::from_secs(10),
        "the poll to reach Spark",
        || async { spark.total_status_requests() == 1 },
    )
    .await;
    world
        .scheduler
        .send(jobwarden::actors::Crash)
        .await
        .unwrap();
    // The restarted scheduler's first cycle finds e0 still due (its answer is not written
    // yet) and must leave it to the poll already under way.
    assert!(world.scheduler.send(Tick).await.unwrap().started);
    world.wait_idle().await;
    wait_until(
        Duration::from_secs(10),
        "the first poll to be written",
        || async { world.status("e0").await == "Running" },
    )
    .await;
    assert_eq!(spark.status_requests("driver-0"), 1);
    assert_eq!(spark.max_concurrent(), 1);
    let stats = world.stats().await;
    assert_eq!(
        stats.in_flight, 0,
        "the settled poll left the in-flight set"
    );
}

#[actix_rt::test]
async fn a_cycle_reads_due_jobs_page_by_page_and_polls_each_once() {
    let spark = FakeSpark::start().await;
    let world = World::with_pages(&spark.url(), 3, 25, 10).await;
    assert!(world.scheduler.send(Tick).await.unwrap().started);
    world.wait_idle().await;
    assert_eq!(world.count_status("Running").await, 25);
    assert_eq!(spark.total_status_requests(), 25);
    assert_each_asked_once(&spark, 25);
    let stats = world.stats().await;
    // 10 + 10 + 5: the short page says the cycle has read everything.
    assert_eq!(stats.pages, 3);
    assert_eq!((stats.dispatched, stats.completed), (25, 25));
}

#[actix_rt::test]
async fn the_largest_pool_over_a_big_fleet_on_sqlite_polls_every_job_once() {
    // The due query's size must not grow with the pool or the polls in flight: 4,096 pollers
    // and 50,000 due jobs stay within SQLite's 32,766 bind parameters.
    let spark = FakeSpark::start().await;
    let world = World::new(&spark.url(), jobwarden::config::MAX_POOL, 50_000).await;
    // 50,000 polls of a debug build beside the rest of the suite: minutes, not seconds.
    world.wait_idle_within(Duration::from_secs(180)).await;
    // Each job polled once, and each poll recorded: as Running, or as a failed poll when a
    // loaded machine made the request miss the 500 ms timeout (then it may never have reached
    // the server). No job reached the server twice.
    for i in 0..50_000 {
        assert!(
            spark.status_requests(&format!("driver-{i}")) <= 1,
            "driver-{i}"
        );
    }
    let recorded = SparkJobExecutions::find()
        .filter(spark_job_executions::Column::LastPolledAt.is_not_null())
        .count(&world.db.db)
        .await
        .unwrap();
    assert_eq!(recorded, 50_000);
    let stats = world.stats().await;
    assert_eq!(stats.completed, 50_000);
}

#[actix_rt::test]
async fn polls_that_bring_no_news_write_no_row() {
    let spark = FakeSpark::start().await;
    let world = World::polled(&spark.url(), 4, 20).await;
    assert_eq!(world.count_status("Running").await, 20);
    let before = world.row("e7").await;
    let written = world.metrics.store_rows_written.get();
    world.cycles(3).await;
    assert_eq!(spark.status_requests("driver-7"), 4, "asked at every cycle");
    assert_eq!(
        world.metrics.store_rows_written.get(),
        written,
        "60 answers, no news, no row written"
    );
    assert_eq!(world.row("e7").await, before);

    // News is written at once.
    spark.answer("driver-7", Answer::State("FINISHED"));
    world.cycle().await;
    assert_eq!(world.status("e7").await, "Succeeded");
    assert_eq!(world.metrics.store_rows_written.get(), written + 1);
}

#[actix_rt::test]
async fn answers_that_bring_no_news_are_not_sent_to_the_store() {
    let spark = FakeSpark::start().await;
    let world = World::polled(&spark.url(), 4, 20).await;
    // Looked for each driver's UI at polls 1 and 2: the third cycle is a plain one.
    world.cycle().await;
    let changes = world.store.send(GetStats).await.unwrap().changes;
    world.cycles(2).await;
    assert_eq!(spark.status_requests("driver-7"), 4, "asked at every cycle");
    assert_eq!(
        world.store.send(GetStats).await.unwrap().changes,
        changes,
        "40 answers the rows already said: the store was not asked to apply any"
    );
    spark.answer("driver-7", Answer::State("FINISHED"));
    world.cycle().await;
    assert_eq!(world.status("e7").await, "Succeeded");
    assert_eq!(
        world.store.send(GetStats).await.unwrap().changes,
        changes + 1
    );
}

#[actix_rt::test]
async fn a_steady_cycle_on_the_listing_settles_its_jobs_without_a_poll() {
    const JOBS: usize = 200;
    let spark = FakeSpark::start().await;
    for i in 0..JOBS {
        spark.list_on_master(&format!("driver-{i}"), "RUNNING");
    }
    let mut settings = spark_settings(&spark.url(), 4);
    settings.status_source = jobwarden::config::StatusSource::MasterUi;
    let world = World::polled_with(settings, JOBS).await;
    assert_eq!(world.count_status("Running").await, JOBS as u64);
    // The second cycle still looks each driver's UI up (poll 2), through a poller.
    world.cycle().await;
    let before = world.stats().await;
    let changes = world.store.send(GetStats).await.unwrap().changes;
    world.cycle().await;
    let after = world.stats().await;
    // A listing older than its second of reuse when the cycle began is read again by the
    // first poll: at most one job per poller waits for it.
    let polled = after.dispatched - before.dispatched;
    assert!(polled <= 4, "{polled} jobs went to a poller");
    assert_eq!(
        after.unchanged_at_once - before.unchanged_at_once + polled,
        JOBS as u64
    );
    assert_eq!(after.completed - before.completed, JOBS as u64);
    assert_eq!(world.store.send(GetStats).await.unwrap().changes, changes);
    assert_eq!(
        world.metrics.polls.with_label_values(&["observed"]).get(),
        3 * JOBS as u64,
        "counted as polls that observed the job"
    );
    // A change on the master is news: polled and written as ever.
    spark.list_on_master("driver-3", "FINISHED");
    world
        .cycle_until("the finished driver's row", || async {
            world.status("e3").await == "Succeeded"
        })
        .await;
    assert_eq!(spark.total_status_requests(), 0, "never a REST request");
}

#[actix_rt::test]
async fn every_state_lands_on_the_row_as_mapped() {
    let spark = FakeSpark::start().await;
    let cases = [
        ("SUBMITTED", "Submitting"),
        ("RUNNING", "Running"),
        ("RELAUNCHING", "Running"),
        ("FINISHED", "Succeeded"),
        ("FAILED", "Failed"),
        ("ERROR", "Failed"),
        ("KILLED", "Cancelled"),
        ("UNKNOWN", "Queued"),
    ];
    for (i, (state, _)) in cases.iter().enumerate() {
        spark.answer(&format!("driver-{i}"), Answer::State(state));
    }
    let world = World::polled(&spark.url(), 4, cases.len()).await;
    for (i, (state, status)) in cases.iter().enumerate() {
        let row = world.row(&format!("e{i}")).await;
        assert_eq!(row.status, *status, "{state}");
        assert_eq!(row.spark_state.as_deref(), Some(*state));
    }
    let succeeded = world.row("e3").await;
    assert_eq!(succeeded.progress, 100);
    assert!(succeeded.completed_at.is_some() && succeeded.started_at.is_some());
    let failed = world.row("e4").await;
    assert!(failed
        .error_message
        .unwrap()
        .starts_with("Caused by: java.lang.IllegalStateException: input table missing"));
    assert_eq!(
        spark.tail_requests(),
        1,
        "only the FAILED driver's log tail is fetched"
    );
    let error = world.row("e5").await;
    assert!(error.error_message.unwrap().contains("NoSuchFileException"));
    assert_eq!(world.metrics.unknown_state_answers.get(), 1);
}

#[actix_rt::test]
async fn relaunch_is_noted_in_history_while_the_job_stays_running() {
    let spark = FakeSpark::start().await;
    let world = World::polled(&spark.url(), 1, 1).await;
    spark.answer("driver-0", Answer::State("RELAUNCHING"));
    world.cycle().await;
    assert_eq!(world.status("e0").await, "Running");
    let history = world.history("e0").await;
    let last = history.last().unwrap();
    assert_eq!(last.to_status, "Running");
    assert!(last.detail.as_deref().unwrap().contains("RELAUNCHING"));
}

#[actix_rt::test]
async fn spark_outage_never_fails_a_job_and_backs_off() {
    let spark = FakeSpark::start().await;
    let world = World::polled(&spark.url(), 2, 3).await;
    answer_each(&spark, 3, Answer::Http500);
    world.cycle().await;
    assert_eq!(
        world.metrics.spark_up.with_label_values(&["default"]).get(),
        0.0,
        "Spark is reported down"
    );
    for i in 0..3 {
        let row = world.row(&format!("e{i}")).await;
        assert_eq!(row.status, "Running");
        assert_eq!(row.consecutive_poll_failures, 1);
        assert!(row.last_poll_error.unwrap().contains("HTTP 500"));
        assert!(
            row.next_poll_at.unwrap() > Utc::now(),
            "the next poll waits"
        );
    }
    // Backed off: the next cycle does not ask Spark again yet.
    let asked = spark.total_status_requests();
    world.cycle().await;
    assert_eq!(spark.total_status_requests(), asked);

    answer_each(&spark, 3, Answer::State("FINISHED"));
    let due_later = read::due_executions(
        &world.db.db,
        &DueJobs {
            now: Utc::now() + ChronoDuration::minutes(1),
            polled_before: Utc::now() + ChronoDuration::minutes(1),
            after: None,
            limit: 10,
        },
    )
    .await
    .unwrap();
    assert_eq!(due_later.len(), 3, "due again once the backoff has passed");
}

#[actix_rt::test]
async fn unknown_id_is_recorded_and_left_to_the_timeout_policy() {
    let spark = FakeSpark::start().await;
    spark.answer("driver-0", Answer::UnknownId);
    let world = World::polled(&spark.url(), 1, 1).await;
    let row = world.row("e0").await;
    assert_eq!(row.status, "Queued");
    assert_eq!(row.consecutive_poll_failures, 1);
    assert!(row
        .last_poll_error
        .unwrap()
        .contains("does not know submission driver-0"));

    assert_eq!(world.sweep_at(Utc::now()).await, Ok(0));
    let later = Utc::now() + ChronoDuration::minutes(6);
    assert_eq!(world.sweep_at(later).await, Ok(1));
    let row = world.row("e0").await;
    assert_eq!(row.status, "Failed");
    let reason = row.error_message.unwrap();
    assert!(reason.contains("has not confirmed this job"), "{reason}");
    assert!(reason.contains("stuck_timeout 5m"), "{reason}");
    assert_eq!(
        world.history("e0").await.last().unwrap().source,
        "timeout_sweep"
    );
}

/// One listing per cycle answers every listed driver: at 1,000 jobs a cycle costs the master
/// one request instead of a thousand, and the states are as true.
#[actix_rt::test]
async fn a_cycle_asks_the_master_once_for_the_listing() {
    const JOBS: usize = 1_000;
    let spark = FakeSpark::start().await;
    for i in 0..JOBS {
        spark.list_on_master(&format!("driver-{i}"), "RUNNING");
    }
    // A listing outside any cycle is reused for 50 ms only: far less than this cycle lasts.
    let mut settings = spark_settings(&spark.url(), 16);
    settings.poll_interval = Duration::from_millis(100);
    let world = World::configured(settings, JOBS, 2_000).await;
    // What the start-up checks read is not the cycle's.
    let before = spark.listing_requests();
    let started = std::time::Instant::now();
    assert!(world.scheduler.send(Tick).await.unwrap().started);
    world.wait_idle().await;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(world.count_status("Running").await, JOBS as u64);
    let listings = spark.listing_requests() - before;
    eprintln!(
        "master requests for a cycle over {JOBS} jobs ({seconds:.2} s): {listings} listing(s), {} REST status requests",
        spark.total_status_requests()
    );
    assert_eq!(
        listings, 1,
        "one listing for the whole cycle of {seconds:.2} s"
    );
    assert_eq!(spark.total_status_requests(), 0, "no REST request at all");
    for i in 0..10 {
        spark.list_on_master(&format!("driver-{i}"), "FINISHED");
    }
    // Each cycle reads the listing anew: the next cycle sees the change.
    world
        .cycle_until("the finished drivers' rows", || async {
            world.count_status("Succeeded").await == 10
        })
        .await;
    assert_eq!(spark.total_status_requests(), 0, "still no REST request");
}

/// With `status_source = "rest"`, every driver costs a REST request (the figure before the
/// listing), for comparison in the same test run.
#[actix_rt::test]
async fn the_rest_source_asks_per_driver() {
    const JOBS: usize = 1_000;
    let spark = FakeSpark::start().await;
    for i in 0..JOBS {
        spark.list_on_master(&format!("driver-{i}"), "RUNNING");
    }
    let mut settings = spark_settings(&spark.url(), 16);
    settings.status_source = jobwarden::config::StatusSource::Rest;
    let _world = World::polled_with(settings, JOBS).await;
    assert_eq!(spark.total_status_requests(), JOBS);
}

/// A master with REST off (Spark 3.5's default) is read from its UI's listing alone.
#[actix_rt::test]
async fn a_master_with_rest_off_is_read_from_its_listing() {
    let spark = FakeSpark::start().await;
    spark.list_on_master("driver-0", "RUNNING");
    spark.list_on_master("driver-1", "FINISHED");
    spark.list_on_master("driver-2", "FAILED");
    // Nothing listens on the REST port, as with REST off.
    let mut settings = spark_settings(&closed_url(), 4);
    settings.master_ui_url = Some(spark.url());
    let world = World::polled_with(settings, 3).await;
    assert_eq!(world.status("e0").await, "Running");
    assert_eq!(world.status("e1").await, "Succeeded");
    let failed = world.row("e2").await;
    assert_eq!(failed.status, "Failed");
    assert!(failed.error_message.unwrap().starts_with("Caused by:"));
    assert_eq!(world.row("e0").await.consecutive_poll_failures, 0);
}

/// Two masters of an HA pair: the standby's refusals pass the question to the alive one, so no
/// poll fails; after a failover the new alive master answers.
#[actix_rt::test]
async fn the_alive_master_of_a_pair_answers_and_a_failover_fails_no_poll() {
    let first = FakeSpark::start().await;
    let second = FakeSpark::start().await;
    first.set_standby(true);
    let rest = format!("spark://{},{}", first.addr, second.addr);
    let mut settings = spark_settings(&rest, 2);
    settings.master_ui_url = Some(format!("{},{}", first.url(), second.url()));
    let world = World::polled_with(settings, 1).await;
    let row = world.row("e0").await;
    assert_eq!(row.status, "Running");
    assert_eq!(
        row.consecutive_poll_failures, 0,
        "{:?}",
        row.last_poll_error
    );
    // Failover: the second master goes, the first takes over and knows the driver finished.
    second.set_standby(true);
    first.set_standby(false);
    first.answer("driver-0", Answer::State("FINISHED"));
    world.cycle().await;
    let row = world.row("e0").await;
    assert_eq!(row.status, "Succeeded");
    assert_eq!(
        row.consecutive_poll_failures, 0,
        "{:?}",
        row.last_poll_error
    );
}

/// After a failover, the new master shows recovered drivers as SUBMITTED (worker "None") until
/// their worker registers again: a Running row stays Running, and the answers, being answers,
/// never count toward the stuck rule.
#[actix_rt::test]
async fn a_recovering_masters_submitted_never_moves_a_running_row_back() {
    let (spark, world) = one_running_job().await;
    spark.answer("driver-0", Answer::State("SUBMITTED"));
    world.cycles(2).await;
    let row = world.row("e0").await;
    assert_eq!(row.status, "Running");
    assert_eq!(row.consecutive_poll_failures, 0);
    assert_eq!(row.failing_since, None);
    assert_eq!(world.sweep_much_later().await, Ok(0));
}

/// One job (e0, driver-0) that the first cycle saw Running.
async fn one_running_job() -> (FakeSpark, World) {
    let spark = FakeSpark::start().await;
    let world = World::polled(&spark.url(), 1, 1).await;
    assert_eq!(world.status("e0").await, "Running");
    (spark, world)
}

/// Lists driver-0 running (class Sleep, started at 1000 ms) and its job e0 as Running.
async fn running_and_listed(jobs: usize) -> (FakeSpark, World) {
    let spark = FakeSpark::start().await;
    spark.list_on_master_as("driver-0", "RUNNING", "Sleep", 1_000);
    let world = World::polled(&spark.url(), 1, jobs).await;
    assert_eq!(world.status("e0").await, "Running");
    (spark, world)
}

async fn history_details(world: &World, id: &str) -> Vec<String> {
    world
        .history(id)
        .await
        .into_iter()
        .filter_map(|h| h.detail)
        .collect()
}

/// Spark relaunches a supervised driver under a new id (its worker was lost): the row follows
/// the one new driver of the same main class started after it, and says so.
#[actix_rt::test]
async fn a_relaunched_driver_is_followed_to_its_new_id() {
    let (spark, world) = running_and_listed(1).await;
    spark.list_on_master_as("driver-0", "RELAUNCHING", "Sleep", 1_000);
    spark.list_on_master_as("driver-9", "RUNNING", "Sleep", 2_000);
    spark.list_on_master_as("driver-8", "RUNNING", "OtherJob", 3_000);
    // A listing is reused for up to a second: the cycles after that see the relaunch.
    world
        .cycle_until("the row to follow", || async {
            world.submission("e0").await.as_deref() != Some("driver-0")
        })
        .await;
    let row = world.row("e0").await;
    assert_eq!(row.submission_id.as_deref(), Some("driver-9"));
    assert_eq!(row.status, "Running");
    let details = history_details(&world, "e0").await;
    assert!(
        details
            .iter()
            .any(|d| d.contains("relaunched by Spark as driver-9 (was driver-0)")),
        "{details:?}"
    );
    spark.list_on_master_as("driver-9", "FINISHED", "Sleep", 2_000);
    world
        .cycle_until("the new driver's end", || async {
            world.status("e0").await == "Succeeded"
        })
        .await;
}

/// Two drivers could be the relaunched one: the row keeps watching the old id rather than
/// guess, and the history says so once.
#[actix_rt::test]
async fn an_ambiguous_relaunch_keeps_the_old_id_and_says_why() {
    let (spark, world) = running_and_listed(1).await;
    spark.list_on_master_as("driver-0", "RELAUNCHING", "Sleep", 1_000);
    spark.list_on_master_as("driver-8", "RUNNING", "Sleep", 2_000);
    spark.list_on_master_as("driver-9", "RUNNING", "Sleep", 3_000);
    world
        .cycle_until("the relaunch to be seen", || async {
            world.row("e0").await.spark_state.as_deref() == Some("RELAUNCHING")
        })
        .await;
    world.cycle().await;
    let row = world.row("e0").await;
    assert_eq!(row.submission_id.as_deref(), Some("driver-0"));
    let notes: Vec<String> = history_details(&world, "e0")
        .await
        .into_iter()
        .filter(|d| d.contains("could be the new one"))
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("driver-8, driver-9"), "{notes:?}");
}

/// A candidate another row already tracks is not the relaunched driver.
#[actix_rt::test]
async fn a_relaunch_never_takes_a_driver_another_row_tracks() {
    let (spark, world) = running_and_listed(2).await;
    spark.list_on_master_as("driver-1", "RUNNING", "Sleep", 2_000);
    spark.list_on_master_as("driver-0", "RELAUNCHING", "Sleep", 1_000);
    spark.list_on_master_as("driver-7", "RUNNING", "Sleep", 3_000);
    world
        .cycle_until("the row to follow", || async {
            world.submission("e0").await.as_deref() != Some("driver-0")
        })
        .await;
    assert_eq!(world.submission("e0").await.as_deref(), Some("driver-7"));
    assert_eq!(world.submission("e1").await.as_deref(), Some("driver-1"));
}

/// Starts one running job (e0, driver-0) and lets the master forget it while its worker's page
/// still lists it in `state`; one more cycle.
async fn forgotten_by_the_master(worker_state: &str) -> (FakeSpark, World) {
    let (spark, world) = one_running_job().await;
    spark.forget_on_master("driver-0", worker_state);
    world.cycle().await;
    (spark, world)
}

#[actix_rt::test]
async fn a_driver_the_master_forgot_ends_as_its_worker_says() {
    let (_spark, world) = forgotten_by_the_master("FINISHED").await;
    let row = world.row("e0").await;
    assert_eq!(row.status, "Succeeded");
    assert_eq!(row.consecutive_poll_failures, 0);
    assert!(row.spark_state.unwrap().contains("worker page"));
}

#[actix_rt::test]
async fn a_failed_driver_the_master_forgot_gets_its_reason_from_the_workers_log() {
    let (_spark, world) = forgotten_by_the_master("FAILED").await;
    let row = world.row("e0").await;
    assert_eq!(row.status, "Failed");
    let reason = row.error_message.unwrap();
    assert!(reason.starts_with("Caused by:"), "{reason}");
}

#[actix_rt::test]
async fn a_driver_killed_by_a_restarted_master_is_cancelled_saying_why() {
    let (_spark, world) = forgotten_by_the_master("KILLED").await;
    let row = world.row("e0").await;
    assert_eq!(row.status, "Cancelled");
    let reason = row.error_message.unwrap();
    assert!(reason.contains("master no longer knows it"), "{reason}");
}

#[actix_rt::test]
async fn a_driver_still_running_on_its_worker_stays_running_and_confirmed() {
    let (_spark, world) = forgotten_by_the_master("RUNNING").await;
    let row = world.row("e0").await;
    assert_eq!(row.status, "Running");
    assert_eq!(row.consecutive_poll_failures, 0, "its worker confirmed it");
}

#[actix_rt::test]
async fn a_driver_nobody_knows_is_left_to_the_stuck_rule_saying_who_was_asked() {
    let spark = FakeSpark::start().await;
    spark.answer("driver-0", Answer::UnknownId);
    let world = World::polled(&spark.url(), 1, 1).await;
    let row = world.row("e0").await;
    assert_eq!(row.status, "Queued");
    let error = row.last_poll_error.unwrap();
    assert!(
        error.contains("neither the master nor any of its 1 workers lists it"),
        "{error}"
    );
}

/// A standby (or recovering) master cannot say anything about any driver: a failover is under
/// way. Its answers are not a failed poll (nothing is counted or backed off: the job is asked
/// again every cycle, so its row is current as soon as a master is alive) and never bring a
/// job closer to the stuck rule.
#[actix_rt::test]
async fn a_standby_masters_answers_are_no_failed_poll_and_never_time_a_job_out() {
    let (spark, world) = one_running_job().await;
    spark.answer("driver-0", Answer::Standby);
    world.cycles(3).await;
    let row = world.row("e0").await;
    assert_eq!(row.status, "Running");
    assert_eq!(
        row.consecutive_poll_failures, 0,
        "no failed poll is counted"
    );
    assert_eq!(row.last_poll_error, None);
    assert_eq!(
        row.failing_since, None,
        "no run of answers without the job began"
    );
    assert!(
        world.metrics.polls.with_label_values(&["waited"]).get() >= 3,
        "polled at every cycle, without backoff, and counted as waiting for a master"
    );
    assert_eq!(world.sweep_much_later().await, Ok(0));
    assert_eq!(world.status("e0").await, "Running");
}

/// Spark out of reach for longer than the stuck timeout fails nothing: jobwarden not reaching
/// Spark says nothing about the jobs.
#[actix_rt::test]
async fn spark_out_of_reach_past_the_stuck_timeout_fails_nothing() {
    let spark = FakeSpark::start().await;
    let world = World::polled(&spark.url(), 1, 1).await;
    spark.answer("driver-0", Answer::Http500);
    world.cycle().await;
    let row = world.row("e0").await;
    assert!(row.consecutive_poll_failures > 0);
    assert_eq!(world.sweep_much_later().await, Ok(0));
    assert_eq!(world.status("e0").await, "Running");
}

#[actix_rt::test]
async fn job_spark_keeps_confirming_is_not_swept() {
    let spark = FakeSpark::start().await;
    let world = World::polled(&spark.url(), 1, 1).await;
    let much_later = Utc::now() + ChronoDuration::days(3);
    assert_eq!(world.sweep_at(much_later).await, Ok(0));
    assert_eq!(world.status("e0").await, "Running");
}

#[actix_rt::test]
async fn finished_jobs_are_not_polled_again() {
    let spark = FakeSpark::start().await;
    spark.answer("driver-0", Answer::State("FINISHED"));
    let world = World::polled(&spark.url(), 1, 1).await;
    world.cycles(2).await;
    assert_eq!(spark.status_requests("driver-0"), 1);
}

#[actix_rt::test]
async fn running_driver_shows_real_progress_from_its_ui() {
    let spark = FakeSpark::start().await;
    spark.serve_driver_ui("driver-0", "app-20261128210243-0000");
    let world = World::polled(&spark.url(), 1, 2).await;
    // 11 of 20 tasks done in tests/fixtures/driver-ui-api-v1-jobs.json.
    assert_eq!(world.row("e0").await.progress, 55);
    // A driver without a UI gets the state-based estimate.
    assert_eq!(world.row("e1").await.progress, 10);
    world.cycle().await;
    assert_eq!(
        spark.head_requests("driver-0"),
        1,
        "the UI is looked up once"
    );
}

#[actix_rt::test]
async fn a_listed_driver_without_a_ui_is_looked_up_on_the_same_schedule() {
    let spark = FakeSpark::start().await;
    spark.list_on_master("driver-0", "RUNNING");
    let mut settings = spark_settings(&spark.url(), 1);
    settings.status_source = jobwarden::config::StatusSource::MasterUi;
    let world = World::polled_with(settings, 1).await;
    world.cycles(8).await;
    // Nine polls, those between lookups settled from the listing: looked at polls 1, 2, 4
    // and 8 only.
    assert_eq!(spark.head_requests("driver-0"), 4);
}

#[actix_rt::test]
async fn driver_without_a_ui_is_not_searched_forever() {
    let spark = FakeSpark::start().await;
    let world = World::polled(&spark.url(), 1, 1).await;
    world.cycles(8).await;
    // Nine polls: looked at polls 1, 2, 4 and 8 only.
    assert_eq!(spark.head_requests("driver-0"), 4);
}

#[actix_rt::test]
async fn configured_credentials_are_sent_to_spark() {
    let spark = FakeSpark::start().await;
    let mut settings = spark_settings(&spark.url(), 1);
    settings.basic_auth = Some(jobwarden::config::BasicAuth {
        username: "ops".into(),
        password: jobwarden::config::Secret::new("pa55"),
    });
    SparkClient::new(&settings)
        .unwrap()
        .status("driver-1")
        .await
        .unwrap();
    assert_eq!(
        spark.last_authorization().as_deref(),
        Some("Basic b3BzOnBhNTU=")
    );

    let mut settings = spark_settings(&spark.url(), 1);
    settings.bearer_token = Some(jobwarden::config::Secret::new("t0ken"));
    SparkClient::new(&settings)
        .unwrap()
        .status("driver-1")
        .await
        .unwrap();
    assert_eq!(spark.last_authorization().as_deref(), Some("Bearer t0ken"));
}
