//! The early warnings, with driven time and no sleeps, on every database: "stuck soon" at half
//! of `stuck_timeout` without a confirmation, "running long" past the usual duration, each sent
//! once per run, and a resolved message when the warning no longer holds.

use actix::prelude::*;
use entity::jobwarden_outbox;
use entity::prelude::*;
use jobwarden::actors::JobStore;
use jobwarden::config::{
    ChannelKind, ChannelSettings, EventKind, NotificationSettings, RuleSettings, DEFAULT_IN_FLIGHT,
};
use jobwarden::domain::JobStatus;
use jobwarden::events::Events;
use jobwarden::store::warnings;
use jobwarden::store_api::{Source, TrackRequest, Warning, Write, WriteOp, WriteOutcome};
use sea_orm::{EntityTrait, QueryOrder};

use crate::helpers::{rules, TestDb};
use crate::on_every_database;
use crate::worlds::{observed, t};

/// A store sending both warnings, and their resolution, to one channel.
fn start_store(db: &TestDb) -> Addr<JobStore> {
    let settings = db.settings();
    let notifications = NotificationSettings {
        channels: [(
            "ops".to_owned(),
            ChannelSettings {
                kind: ChannelKind::Webhook {
                    url: "http://127.0.0.1:9/hook".into(),
                    secret: None,
                },
                min_interval: std::time::Duration::ZERO,
                timeout: std::time::Duration::from_secs(1),
                in_flight: DEFAULT_IN_FLIGHT,
            },
        )]
        .into(),
        rules: vec![RuleSettings {
            on: vec![EventKind::StuckSoon, EventKind::RunningLong],
            jobs: "nightly*".into(),
            channels: vec!["ops".into()],
            resolved: true,
        }],
        ..NotificationSettings::default()
    };
    JobStore::new(
        db.db.clone(),
        settings.store.clone(),
        rules(&settings),
        Events::default(),
    )
    .with_notifications(&notifications)
    .launch()
}

async fn write(store: &Addr<JobStore>, op: WriteOp) -> WriteOutcome {
    store.send(Write(op)).await.unwrap().unwrap()
}

fn track(id: &str, name: &str) -> WriteOp {
    WriteOp::Track(TrackRequest {
        spec: None,
        execution_id: id.into(),
        submission_id: Some(format!("driver-{id}")),
        job_name: Some(name.into()),
        cluster: None,
        source: Source::Api,
        after: Vec::new(),
        priority: 0,
        allowed: None,
    })
}

fn stuck_soon(id: &str, at: i64) -> WriteOp {
    WriteOp::Warn {
        execution_id: id.into(),
        warning: Warning::StuckSoon,
        now: t(at),
    }
}

async fn outbox(db: &TestDb) -> Vec<(String, String)> {
    JobwardenOutbox::find()
        .order_by_asc(jobwarden_outbox::Column::Id)
        .all(&db.db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.event, row.job_id.unwrap_or_default()))
        .collect()
}

/// Half of the default `stuck_timeout` (5 minutes) after the first answer without the job.
async fn stuck_soon_is_sent_once_at_half_the_stuck_timeout_and_resolved_by_a_confirmation(
    db: TestDb,
) {
    let store = start_store(&db);
    write(&store, track("e1", "nightly-load")).await;
    write(&store, observed("e1", JobStatus::Running, 0)).await;
    let unknown = WriteOp::PollFailed {
        asked: None,
        execution_id: "e1".into(),
        at: t(10),
        error: "Spark does not know submission driver-e1".into(),
        outage: false,
    };
    write(&store, unknown).await;
    assert_eq!(
        write(&store, stuck_soon("e1", 10 + 149)).await,
        WriteOutcome::Warned { sent: false },
        "not yet half of five minutes"
    );
    assert_eq!(
        write(&store, stuck_soon("e1", 10 + 150)).await,
        WriteOutcome::Warned { sent: true }
    );
    write(&store, stuck_soon("e1", 10 + 200)).await;
    assert_eq!(
        outbox(&db).await,
        [("stuck_soon".to_owned(), "e1".to_owned())],
        "once per run"
    );

    write(&store, observed("e1", JobStatus::Running, 240)).await;
    assert_eq!(
        outbox(&db).await,
        [
            ("stuck_soon".to_owned(), "e1".to_owned()),
            ("resolved".to_owned(), "e1".to_owned())
        ],
        "Spark confirms it again: resolved"
    );
    let payload = JobwardenOutbox::find()
        .order_by_desc(jobwarden_outbox::Column::Id)
        .one(&db.db)
        .await
        .unwrap()
        .unwrap()
        .payload;
    assert!(payload.contains("confirms the job again"), "{payload}");
}

async fn running_long_is_judged_against_the_names_past_successful_runs(db: TestDb) {
    let store = start_store(&db);
    // Five earlier runs of the name took 10 minutes each.
    for i in 0..5 {
        let id = format!("past-{i}");
        write(&store, track(&id, "nightly-load")).await;
        write(&store, observed(&id, JobStatus::Running, i * 1_000)).await;
        write(&store, observed(&id, JobStatus::Succeeded, i * 1_000 + 600)).await;
    }
    write(&store, track("now", "nightly-load")).await;
    write(&store, observed("now", JobStatus::Running, 10_000)).await;
    let at = |secs: i64| warnings::running_long(&db.db, t(secs), 2.0, 5);
    assert!(
        at(10_000 + 1_199).await.unwrap().is_empty(),
        "under twice 10 minutes"
    );
    let found = at(10_000 + 1_200).await.unwrap();
    assert_eq!(found.len(), 1);
    for op in found {
        assert_eq!(write(&store, op).await, WriteOutcome::Warned { sent: true });
    }
    for op in at(10_000 + 1_500).await.unwrap() {
        write(&store, op).await;
    }
    assert_eq!(
        outbox(&db).await,
        [("running_long".to_owned(), "now".to_owned())]
    );
    let payload = JobwardenOutbox::find()
        .one(&db.db)
        .await
        .unwrap()
        .unwrap()
        .payload;
    assert!(
        payload.contains("last 5 successful runs took at most 10m"),
        "{payload}"
    );

    write(&store, observed("now", JobStatus::Succeeded, 12_000)).await;
    assert_eq!(
        outbox(&db).await,
        [
            ("running_long".to_owned(), "now".to_owned()),
            ("resolved".to_owned(), "now".to_owned())
        ]
    );
}

async fn a_name_with_too_few_past_runs_is_never_called_long(db: TestDb) {
    let store = start_store(&db);
    write(&store, track("past", "nightly-new")).await;
    write(&store, observed("past", JobStatus::Running, 0)).await;
    write(&store, observed("past", JobStatus::Succeeded, 60)).await;
    write(&store, track("now", "nightly-new")).await;
    write(&store, observed("now", JobStatus::Running, 1_000)).await;
    let found = warnings::running_long(&db.db, t(100_000), 2.0, 5)
        .await
        .unwrap();
    assert!(found.is_empty(), "one past run is not a usual duration");
}

on_every_database!(
    stuck_soon_is_sent_once_at_half_the_stuck_timeout_and_resolved_by_a_confirmation,
    running_long_is_judged_against_the_names_past_successful_runs,
    a_name_with_too_few_past_runs_is_never_called_long,
);
