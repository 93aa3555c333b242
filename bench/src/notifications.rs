//! Notifications: what the outbox adds to a transition on the write path (the same endings
//! written with and without a rule that notifies), and how fast the Notifier delivers to a
//! local receiver beside plain sequential POSTs to the same receiver.

use std::time::{Duration, Instant};

use actix::Actor;
use anyhow::Context as _;
use chrono::Utc;
use futures::future::join_all;

use jobwarden::actors::notifier::Notifier;
use jobwarden::actors::JobStore;
use jobwarden::config::{
    ChannelKind, ChannelSettings, EventKind, NotificationSettings, RuleSettings, Secret, Settings,
    DEFAULT_IN_FLIGHT,
};
use jobwarden::domain::{JobStatus, Observation};
use jobwarden::events::Events;
use jobwarden::store::{self, Rules};
use jobwarden::store_api::{PendingNotifications, StoreHandle, WriteOp};
use jobwarden_testkit::receiver::{Mode, Receiver};

pub struct NotifyFigures {
    pub endings: usize,
    pub plain_per_second: f64,
    pub notifying_per_second: f64,
    /// Delivered per second with one delivery under way, then with the default `in_flight`.
    pub delivered_one_at_a_time: f64,
    pub delivered_per_second: f64,
    pub in_flight: usize,
    pub posts_per_second: f64,
}

impl NotifyFigures {
    /// What a notified ending costs the write path beyond a plain one, in microseconds.
    pub fn added_micros(&self) -> f64 {
        (1.0 / self.notifying_per_second - 1.0 / self.plain_per_second) * 1e6
    }
}

fn notifications(url: &str, in_flight: usize) -> NotificationSettings {
    NotificationSettings {
        check_every: Duration::from_millis(50),
        channels: [(
            "bench".to_owned(),
            ChannelSettings {
                kind: ChannelKind::Webhook {
                    url: url.to_owned(),
                    secret: Some(Secret::new("bench-secret")),
                },
                min_interval: Duration::ZERO,
                timeout: Duration::from_secs(10),
                in_flight,
            },
        )]
        .into(),
        rules: vec![RuleSettings {
            on: vec![EventKind::Succeeded],
            jobs: "*".into(),
            channels: vec!["bench".into()],
            resolved: false,
        }],
        ..NotificationSettings::default()
    }
}

/// Writes `endings` Succeeded transitions through a store on a fresh SQLite file; their rate.
async fn endings_per_second(
    settings: &Settings,
    scratch: &std::path::Path,
    name: &str,
    notify: Option<&NotificationSettings>,
    endings: usize,
) -> anyhow::Result<(f64, actix::Addr<JobStore>)> {
    let mut settings = settings.clone();
    super::scratch_database(&mut settings, None, scratch, name);
    let db = store::connect(&settings.database).await?;
    store::migrate(&db).await?;
    let mut job_store = JobStore::new(
        db,
        settings.store.clone(),
        Rules::from_settings(&settings.spark),
        Events::default(),
    );
    if let Some(notify) = notify {
        job_store = job_store.with_notifications(notify);
    }
    let store = job_store.launch();
    let ids: Vec<String> = (0..endings).map(|i| format!("n{i}")).collect();
    super::track_all(&store, ids.iter().cloned()).await?;
    let handle = StoreHandle::from(&store);
    let now = Utc::now();
    let started = Instant::now();
    for chunk in ids.chunks(10_000) {
        let written = join_all(chunk.iter().map(|id| {
            handle.write(WriteOp::Observe {
                asked: None,
                execution_id: id.clone(),
                observation: Observation {
                    status: Some(JobStatus::Succeeded),
                    raw_state: Some("FINISHED".into()),
                    progress: Some(100),
                    message: None,
                    relaunching: false,
                    successors: Vec::new(),
                    at: now,
                },
            })
        }))
        .await;
        anyhow::ensure!(written.iter().all(Result::is_ok), "some endings failed");
    }
    Ok((endings as f64 / started.elapsed().as_secs_f64(), store))
}

pub async fn measure(settings: Settings, endings: usize) -> anyhow::Result<NotifyFigures> {
    let scratch = tempfile::tempdir().context("failed to create a scratch directory")?;
    // Counting only: the receiver's work per request stays what a bare 200 costs.
    let receiver = Receiver::start(Mode::Count).await;
    let url = receiver.url.clone();

    // The same kind of request, one after the other, as plainly as a client can send it;
    // first, while nothing else runs in the process.
    let client = reqwest::Client::new();
    let body =
        serde_json::json!({"id": "x", "event": "succeeded", "job": {"kind": "spark", "id": "n1"}});
    let posts = endings.min(5_000);
    let started = Instant::now();
    for _ in 0..posts {
        client
            .post(&url)
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
    }
    let posts_per_second = posts as f64 / started.elapsed().as_secs_f64();

    let (plain, _) = endings_per_second(&settings, scratch.path(), "plain", None, endings).await?;
    let one = notifications(&url, 1);
    let (notifying, store) =
        endings_per_second(&settings, scratch.path(), "notifying", Some(&one), endings).await?;
    let delivered_one_at_a_time = deliver_all(&receiver, one, store, endings).await?;

    let several = notifications(&url, DEFAULT_IN_FLIGHT);
    let (_, store) = endings_per_second(
        &settings,
        scratch.path(),
        "several",
        Some(&several),
        endings,
    )
    .await?;
    let delivered = deliver_all(&receiver, several, store, endings).await?;

    Ok(NotifyFigures {
        endings,
        plain_per_second: plain,
        notifying_per_second: notifying,
        delivered_one_at_a_time,
        delivered_per_second: delivered,
        in_flight: DEFAULT_IN_FLIGHT,
        posts_per_second,
    })
}

/// Starts a Notifier over a store whose outbox holds `endings` messages; the rate at which the
/// receiver got them and their attempts were recorded.
async fn deliver_all(
    receiver: &Receiver,
    notify: NotificationSettings,
    store: actix::Addr<JobStore>,
    endings: usize,
) -> anyhow::Result<f64> {
    let before = receiver.requests();
    let started = Instant::now();
    let notifier = Notifier::new(
        notify,
        store.clone().recipient(),
        StoreHandle::from(&store),
        Events::default(),
    )
    .start();
    let deadline = Instant::now() + Duration::from_secs(600);
    while receiver.requests() - before < endings {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the notifications were not all delivered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while !store
        .send(PendingNotifications { per_channel: 1 })
        .await??
        .is_empty()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the deliveries were not all recorded"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The notifier stays, looking at an empty outbox now: one small read per look.
    drop(notifier);
    Ok(endings as f64 / started.elapsed().as_secs_f64())
}
