//! Readiness judged by progress, not by addresses: on a running instance, a part that stops
//! making progress (a store that cannot commit, a scheduler whose ticks stopped, a Kafka
//! listener stuck in its loop or cut off from its brokers) makes `/readyz` answer 503 naming
//! it, and 200 again once it is back. A failing notification channel is named in the detail
//! and a metric while readiness stays 200.

use std::time::Duration;

use jobwarden::actors::scheduler::GetSchedulerStats;
use jobwarden::actors::{Crash, Stall};
use jobwarden::config::{
    ChannelKind, ChannelSettings, EventKind, KafkaSettings, RuleSettings, Settings,
    DEFAULT_IN_FLIGHT,
};
use jobwarden::metrics::Metrics;
use jobwarden_testkit::{Answer, SparkServer};
use serde_json::{json, Value};

use sea_orm::ConnectionTrait;

use crate::helpers::{socket_of, wait_until, Backend, CutProxy, TestDb};
use crate::kafka::Broker;
use crate::operating::{instance_settings, start, Running};

/// How long readiness may take to change. The limits under test are a few seconds; the rest
/// is room for a loaded machine.
const SETTLE: Duration = Duration::from_secs(30);

/// An instance's settings on a fresh SQLite database, asking a Spark server of its own.
async fn on_sqlite() -> (SparkServer, TestDb, Settings) {
    let spark = SparkServer::start().await;
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    let settings = instance_settings(&db.url, &spark);
    (spark, db, settings)
}

/// An address nothing listens on.
fn closed_addr() -> std::net::SocketAddr {
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = nobody.local_addr().unwrap();
    drop(nobody);
    closed
}

/// Registers a job through the API without waiting: a write the store may have to hold. The
/// answer's HTTP status once it comes.
fn track_in_background(
    app: &Running,
    execution: &str,
    submission: &str,
) -> actix_rt::task::JoinHandle<reqwest::Result<u16>> {
    let url = format!("http://{}/api/v1/jobs", app.app.http_addr.unwrap());
    let body = json!({"execution_id": execution, "submission_id": submission});
    actix_rt::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    })
}

async fn wait_ready(app: &Running) {
    wait_until(SETTLE, "/readyz to answer 200", || async {
        app.get("/readyz").await.0 == 200
    })
    .await;
}

/// Waits until `/readyz` answers 503 naming `part`; returns that answer.
async fn wait_not_ready(app: &Running, part: &str) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    let last = &last;
    wait_until(
        SETTLE,
        &format!("/readyz to answer 503 naming {part}"),
        move || async move {
            let (status, body) = app.get("/readyz").await;
            let named = status == 503
                && body["not_ready"]
                    .as_array()
                    .is_some_and(|parts| parts.contains(&json!(part)));
            *last.borrow_mut() = body;
            named
        },
    )
    .await;
    last.take()
}

#[actix_rt::test]
async fn readiness_fails_while_the_store_cannot_commit_and_recovers_once_it_can() {
    let Some(db) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    let spark = SparkServer::start().await;
    let proxy = CutProxy::start(socket_of(&db.url)).await;
    let mut settings = instance_settings(&proxy.url_through(&db.url), &spark);
    settings.database.connect_timeout = Duration::from_millis(500);
    // Without a commit the store goes stale after max(5 × 200ms, 3s) = 3s.
    settings.store.retry_max = Duration::from_millis(200);
    let app = start(settings, db).await;
    wait_ready(&app).await;

    proxy.cut();
    // A write the store has to hold: an idle store has nothing to commit and stays fresh.
    let write = track_in_background(&app, "held", "driver-held");
    let body = wait_not_ready(&app, "job_store").await;
    assert_ne!(body["checks"]["job_store"], "ok", "{body}");

    proxy.restore();
    wait_ready(&app).await;
    // The change held through the outage was written, not dropped.
    assert_eq!(write.await.unwrap().unwrap(), 201);
}

#[actix_rt::test]
async fn readiness_names_a_store_stuck_in_a_transaction_until_a_restart_frees_it() {
    let (_spark, db, mut settings) = on_sqlite().await;
    // Stale after max(5 × 200ms, 3s) = 3s without a commit or an idle beat.
    settings.store.retry_max = Duration::from_millis(200);
    let app = start(settings, db).await;
    let store = app.app.store.clone();
    wait_ready(&app).await;

    // The database is fine; the store is not: only its heartbeat can tell.
    store.send(Stall).await.unwrap();
    let body = wait_not_ready(&app, "job_store").await;
    assert_eq!(body["not_ready"], json!(["job_store"]), "{body}");
    assert_eq!(body["checks"]["database"], "ok", "{body}");

    store.send(Crash).await.unwrap();
    wait_ready(&app).await;
    // And it writes again.
    let (status, _) = app
        .post(
            "/api/v1/jobs",
            r#"{"execution_id":"after","submission_id":"driver-after"}"#,
            None,
        )
        .await;
    assert_eq!(status, 201);
}

#[actix_rt::test]
async fn readiness_names_a_scheduler_whose_ticks_stopped_until_a_restart_restores_them() {
    let (_spark, db, mut settings) = on_sqlite().await;
    // Stale after 2 × 200ms + 2 × 200ms + 1s = 1.8s without a tick.
    settings.spark.poll_interval = Duration::from_millis(200);
    settings.spark.request_timeout = Duration::from_millis(200);
    let app = start(settings, db).await;
    let scheduler = app.app.scheduler.clone();
    wait_ready(&app).await;

    scheduler.send(Stall).await.unwrap();
    let body = wait_not_ready(&app, "scheduler").await;
    assert_eq!(body["not_ready"], json!(["scheduler"]), "{body}");

    // A stopped timer never restarts itself; a restart of the actor re-creates it.
    scheduler.send(Crash).await.unwrap();
    wait_ready(&app).await;
    assert_eq!(
        Metrics::count(&app.app.metrics.actor_restarts, "scheduler"),
        1
    );
    // Ready because it ticks again on its own, not only because the restart beat once.
    let cycles = scheduler.send(GetSchedulerStats).await.unwrap().cycles;
    wait_until(SETTLE, "the scheduler to tick on its own again", || {
        let scheduler = scheduler.clone();
        async move { scheduler.send(GetSchedulerStats).await.unwrap().cycles >= cycles + 3 }
    })
    .await;
    assert_eq!(app.get("/readyz").await.0, 200);
}

#[actix_rt::test]
async fn readiness_names_a_hung_kafka_listener_until_a_crash_rebuilds_its_consumer() {
    let broker = Broker::start();
    let (_spark, db, mut settings) = on_sqlite().await;
    settings.kafka = Some(broker.settings(&format!("jw-readiness-{}", std::process::id())));
    let app = start(settings, db).await;
    let listener = app.app.listener.clone().unwrap();
    wait_ready(&app).await;

    // The consume loop stops turning; readiness calls it stuck after 5s.
    listener.send(Stall).await.unwrap();
    let body = wait_not_ready(&app, "kafka_listener").await;
    assert_eq!(body["not_ready"], json!(["kafka_listener"]), "{body}");

    // A crash still ends the hung loop; the consumer is rebuilt and its loop beats again.
    listener.send(Crash).await.unwrap();
    wait_ready(&app).await;
    assert_eq!(
        Metrics::count(&app.app.metrics.actor_restarts, "kafka_listener"),
        1
    );
}

#[actix_rt::test]
async fn readiness_names_the_kafka_listener_when_its_brokers_are_unreachable_from_the_start() {
    let (_spark, db, mut settings) = on_sqlite().await;
    let closed = closed_addr();
    settings.kafka = Some(KafkaSettings {
        bootstrap_servers: closed.to_string(),
        topic: "job-status".into(),
        group_id: "jw-unreachable".into(),
        max_payload_bytes: 1024,
        properties: Default::default(),
    });
    let app = start(settings, db).await;

    let body = wait_not_ready(&app, "kafka_listener").await;
    assert_eq!(body["not_ready"], json!(["kafka_listener"]), "{body}");
    let detail = body["checks"]["kafka_listener"].as_str().unwrap();
    assert!(detail.starts_with("brokers unreachable for"), "{body}");
    assert!(
        app.metrics()
            .await
            .contains("jobwarden_kafka_brokers_up{topic=\"job-status\"} 0"),
        "the metric says so too"
    );
}

#[actix_rt::test]
async fn readiness_names_the_kafka_listener_while_its_broker_is_down_and_recovers_when_it_is_back()
{
    let broker = Broker::start();
    let (_spark, db, mut settings) = on_sqlite().await;
    settings.kafka = Some(broker.settings(&format!("jw-broker-down-{}", std::process::id())));
    let app = start(settings, db).await;
    wait_ready(&app).await;

    broker.set_up(false);
    let body = wait_not_ready(&app, "kafka_listener").await;
    assert_eq!(body["not_ready"], json!(["kafka_listener"]), "{body}");

    broker.set_up(true);
    wait_ready(&app).await;
    assert!(app
        .metrics()
        .await
        .contains("jobwarden_kafka_brokers_up{topic=\"transformation-job-status\"} 1"));
}

#[actix_rt::test]
async fn a_notification_channel_failing_longer_than_its_setting_is_named_while_readiness_stays_200()
{
    let (spark, db, mut settings) = on_sqlite().await;
    let closed = closed_addr();
    let notifications = &mut settings.notifications;
    notifications.check_every = Duration::from_millis(100);
    notifications.failing_after = Duration::from_secs(1);
    notifications.channels.insert(
        "ops".into(),
        ChannelSettings {
            kind: ChannelKind::Webhook {
                url: format!("http://{closed}/hook"),
                secret: None,
            },
            min_interval: Duration::ZERO,
            timeout: Duration::from_secs(1),
            in_flight: DEFAULT_IN_FLIGHT,
        },
    );
    notifications.rules.push(RuleSettings {
        on: vec![EventKind::Succeeded],
        jobs: "*".into(),
        channels: vec!["ops".into()],
        resolved: false,
    });
    let app = start(settings, db).await;
    wait_ready(&app).await;
    assert_eq!(app.get("/readyz").await.1["checks"]["notifications"], "ok");

    spark.answer("driver-told", Answer::State("FINISHED"));
    assert_eq!(app.track("told", "driver-told").await.0, 201);
    app.poll_cycle().await;

    let last = std::cell::RefCell::new(Value::Null);
    wait_until(SETTLE, "/readyz to name the failing channel", || async {
        let (status, body) = app.get("/readyz").await;
        assert_eq!(
            status, 200,
            "a failing channel never fails readiness: {body}"
        );
        let named = body["checks"]["notifications"]
            .as_str()
            .is_some_and(|d| d.contains("channel \"ops\" failing for"));
        *last.borrow_mut() = body;
        named
    })
    .await;
    let detail = last.take()["checks"]["notifications"].to_string();
    assert!(detail.contains("could not reach the receiver"), "{detail}");
    assert!(app
        .metrics()
        .await
        .contains("jobwarden_notification_channel_failing{channel=\"ops\"} 1"));
}

/// Ends every session on `db` but the caller's: the pool's connections come back with the
/// database's current settings.
async fn end_sessions(admin: &sea_orm::DatabaseConnection, db: &TestDb) {
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            db.name()
        ))
        .await
        .unwrap();
}

#[actix_rt::test]
async fn a_read_only_database_holds_changes_names_the_cause_and_loses_nothing() {
    let Some(db) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    let admin = db.admin().await.unwrap();
    let spark = SparkServer::start().await;
    let mut settings = instance_settings(&db.url, &spark);
    settings.store.retry_max = Duration::from_millis(200);
    let name = db.name().to_owned();
    let app = start(settings, db.clone()).await;
    wait_ready(&app).await;

    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = on"
        ))
        .await
        .unwrap();
    end_sessions(&admin, &db).await;
    let write = track_in_background(&app, "held-read-only", "driver-held");
    let body = wait_not_ready(&app, "job_store").await;
    let detail = body["checks"]["job_store"].as_str().unwrap();
    assert!(detail.contains("the database is read-only"), "{body}");

    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = off"
        ))
        .await
        .unwrap();
    end_sessions(&admin, &db).await;
    wait_ready(&app).await;
    assert_eq!(write.await.unwrap().unwrap(), 201, "held, then written");
    let (status, job) = app.get("/api/v1/jobs/held-read-only").await;
    assert_eq!(status, 200, "{job}");
}

#[actix_rt::test]
async fn a_store_whose_every_change_is_refused_fails_readiness_naming_the_cause() {
    let Some(db) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    // A rule of the database's own that refuses every write of a job row.
    for statement in [
        "CREATE FUNCTION refuse_jobs() RETURNS trigger AS $$ BEGIN \
         RAISE EXCEPTION 'no job rows today' USING ERRCODE = '23514'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_jobs BEFORE INSERT OR UPDATE ON spark_job_executions \
         FOR EACH ROW EXECUTE FUNCTION refuse_jobs()",
    ] {
        db.db.execute_unprepared(statement).await.unwrap();
    }
    let spark = SparkServer::start().await;
    let mut settings = instance_settings(&db.url, &spark);
    settings.store.refusing_after = Duration::from_secs(1);
    let handle = db.db.clone();
    let app = start(settings, db).await;
    wait_ready(&app).await;

    let (status, _) = app.track("refused", "driver-refused").await;
    assert_ne!(status, 201, "the database refused the row");
    let body = wait_until_named(&app).await;
    let detail = body["checks"]["job_store"].as_str().unwrap();
    assert!(detail.contains("(constraint)"), "{body}");
    assert!(detail.contains("no job rows today"), "{body}");
    assert!(app
        .metrics()
        .await
        .contains("jobwarden_store_refused_total{cause=\"constraint\"}"));

    handle
        .execute_unprepared("DROP TRIGGER refuse_jobs ON spark_job_executions")
        .await
        .unwrap();
    assert_eq!(app.track("accepted", "driver-accepted").await.0, 201);
    wait_ready(&app).await;
}

/// Readiness fails only after `refusing_after`: keeps refusing until it does.
async fn wait_until_named(app: &Running) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(SETTLE, "/readyz to name the refusing store", || async {
        let _ = app.track("refused-again", "driver-refused-again").await;
        let (status, body) = app.get("/readyz").await;
        let named = status == 503 && body["not_ready"] == json!(["job_store"]);
        *last.borrow_mut() = body;
        named
    })
    .await;
    last.take()
}
