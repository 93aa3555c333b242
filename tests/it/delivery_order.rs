//! Several deliveries under way on one channel, on every database: they overlap up to the
//! channel's `in_flight`, yet each job's messages reach the receiver in the order they were
//! written, and a message waiting for its retry keeps its job's later messages back until it
//! is delivered.

use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use jobwarden::actors::notifier::Notifier;
use jobwarden::actors::JobStore;
use jobwarden::config::{
    ChannelKind, ChannelSettings, EventKind, NotificationSettings, RuleSettings, Secret,
};
use jobwarden::domain::JobStatus;
use jobwarden::events::Events;
use jobwarden::store_api::{
    Source, StoreHandle, TrackRequest, Warning, Write, WriteOp, WriteOutcome,
};
use jobwarden_testkit::receiver::{Mode, Receiver, SECRET};

use crate::helpers::{store_on, wait_until, TestDb};
use crate::on_every_database;
use crate::worlds::observed_at;

const JOBS: usize = 12;
/// What each job sends, in this order.
const SEQUENCE: [&str; 3] = ["stuck_soon", "resolved", "succeeded"];

fn notifications(url: &str, in_flight: usize) -> NotificationSettings {
    NotificationSettings {
        check_every: Duration::from_millis(50),
        channels: [(
            "ops".to_owned(),
            ChannelSettings {
                kind: ChannelKind::Webhook {
                    url: url.to_owned(),
                    secret: Some(Secret::new(SECRET)),
                },
                min_interval: Duration::ZERO,
                timeout: Duration::from_secs(5),
                in_flight,
            },
        )]
        .into(),
        rules: vec![
            RuleSettings {
                on: vec![EventKind::StuckSoon],
                jobs: "*".into(),
                channels: vec!["ops".into()],
                resolved: true,
            },
            RuleSettings {
                on: vec![EventKind::Succeeded],
                jobs: "*".into(),
                channels: vec!["ops".into()],
                resolved: false,
            },
        ],
        ..NotificationSettings::default()
    }
}

async fn write(store: &Addr<JobStore>, op: WriteOp) -> WriteOutcome {
    store.send(Write(op)).await.unwrap().unwrap()
}

/// Writes `JOBS` jobs whose outbox rows are, job after job: stuck soon, resolved, succeeded;
/// all of them due now.
async fn fill_outbox(store: &Addr<JobStore>) {
    let base = Utc::now() - chrono::Duration::seconds(3_600);
    let at = |secs: i64| base + chrono::Duration::seconds(secs);
    for i in 0..JOBS {
        let id = format!("job-{i}");
        write(
            store,
            WriteOp::Track(TrackRequest {
                spec: None,
                execution_id: id.clone(),
                submission_id: Some(format!("driver-{id}")),
                job_name: Some(format!("nightly-{i}")),
                cluster: None,
                source: Source::Api,
                after: Vec::new(),
                priority: 0,
                allowed: None,
            }),
        )
        .await;
        write(store, observed_at(&id, JobStatus::Running, at(0))).await;
        write(
            store,
            WriteOp::PollFailed {
                asked: None,
                execution_id: id.clone(),
                at: at(10),
                error: format!("Spark does not know submission driver-{id}"),
                outage: false,
            },
        )
        .await;
        let warned = write(
            store,
            WriteOp::Warn {
                execution_id: id.clone(),
                warning: Warning::StuckSoon,
                now: at(200),
            },
        )
        .await;
        assert_eq!(warned, WriteOutcome::Warned { sent: true });
        write(store, observed_at(&id, JobStatus::Running, at(240))).await;
        write(store, observed_at(&id, JobStatus::Succeeded, at(300))).await;
    }
}

fn start(db: &TestDb, notify: &NotificationSettings) -> Addr<JobStore> {
    store_on(db).with_notifications(notify).launch()
}

fn deliver(store: &Addr<JobStore>, notify: NotificationSettings) -> Addr<Notifier> {
    Notifier::new(
        notify,
        store.clone().recipient(),
        StoreHandle::from(store),
        Events::default(),
    )
    .start()
}

/// Each job's events in the order the receiver accepted them.
fn per_job(receiver: &Receiver) -> Vec<(String, Vec<String>)> {
    let mut jobs: Vec<(String, Vec<String>)> = Vec::new();
    for got in receiver.got() {
        assert!(got.signature_ok, "signed: {:?}", got.body);
        let job = got.body["job"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let event = got.body["event"].as_str().unwrap_or_default().to_owned();
        match jobs.iter_mut().find(|(j, _)| *j == job) {
            Some((_, events)) => events.push(event),
            None => jobs.push((job, vec![event])),
        }
    }
    jobs
}

async fn deliveries_overlap_up_to_in_flight_and_each_job_keeps_its_order(db: TestDb) {
    let receiver = Receiver::start(Mode::AcceptAfter(Duration::from_millis(30))).await;
    let notify = notifications(&receiver.url, 4);
    let store = start(&db, &notify);
    fill_outbox(&store).await;
    let _notifier = deliver(&store, notify);

    wait_until(Duration::from_secs(60), "every message delivered", || {
        let got = receiver.got().len();
        async move { got == JOBS * SEQUENCE.len() }
    })
    .await;
    let jobs = per_job(&receiver);
    assert_eq!(jobs.len(), JOBS);
    for (job, events) in &jobs {
        assert_eq!(events, &SEQUENCE, "{job}'s messages out of order");
    }
    let most = receiver.most_in_flight();
    assert!(
        (2..=4).contains(&most),
        "deliveries under way at once: {most}, wanted several and at most in_flight (4)"
    );
    assert_eq!(receiver.requests(), JOBS * SEQUENCE.len(), "each sent once");
}

async fn a_message_waiting_for_its_retry_goes_before_its_jobs_later_messages(db: TestDb) {
    let receiver = Receiver::start(Mode::UnavailableFor("job-0")).await;
    let notify = notifications(&receiver.url, 4);
    let store = start(&db, &notify);
    fill_outbox(&store).await;
    let _notifier = deliver(&store, notify);

    wait_until(
        Duration::from_secs(60),
        "job-0's first message retried",
        || {
            let refused = receiver.requests() - receiver.got().len();
            async move { refused >= 2 }
        },
    )
    .await;
    let before = per_job(&receiver);
    assert!(!before.is_empty(), "the other lanes delivered meanwhile");
    assert!(
        before.iter().all(|(job, _)| job != "job-0"),
        "nothing of job-0 is accepted while its receiver refuses it: {before:?}"
    );

    receiver.set(Mode::Accept);
    wait_until(
        Duration::from_secs(60),
        "every message delivered after the retry",
        || {
            let got = receiver.got().len();
            async move { got == JOBS * SEQUENCE.len() }
        },
    )
    .await;
    for (job, events) in &per_job(&receiver) {
        assert_eq!(events, &SEQUENCE, "{job}'s messages out of order");
    }
}

on_every_database!(
    deliveries_overlap_up_to_in_flight_and_each_job_keeps_its_order,
    a_message_waiting_for_its_retry_goes_before_its_jobs_later_messages,
);
