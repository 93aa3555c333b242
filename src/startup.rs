//! Builds the running application (database, migrations, actors) and owns the shutdown order.

use std::future::Future;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use tracing::{error, info, warn};

use crate::actors::kafka_listener::{KafkaListener, KafkaStats, StopListening};
use crate::actors::scheduler::{Scheduler, StopPolling};
use crate::actors::spark_poller::{PollerPool, SparkHealth, SparkPoller};
use crate::actors::{Drain, JobStore, StoreHealth};
use crate::config::Settings;
use crate::domain::TimeoutPolicy;
use crate::http::HttpState;
use crate::store;

/// How long shutdown waits for accepted changes to be written before giving up on them.
/// Nothing is lost by giving up: unacknowledged Kafka offsets are redelivered and Spark is
/// polled again at the next start.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running jobwarden: what `main` runs and what tests spawn.
pub struct Application {
    pub settings: Settings,
    pub db: DatabaseConnection,
    pub store: Addr<JobStore>,
    pub store_health: std::sync::Arc<StoreHealth>,
    pub scheduler: Addr<Scheduler>,
    pub spark_health: std::sync::Arc<SparkHealth>,
    pub pollers: Vec<Addr<SparkPoller>>,
    /// Absent when no `[kafka]` section is configured.
    pub listener: Option<Addr<KafkaListener>>,
    pub kafka_stats: std::sync::Arc<KafkaStats>,
    /// Where the HTTP endpoints listen (absent when `http.bind` is empty).
    pub http_addr: Option<std::net::SocketAddr>,
    http: Option<actix_web::dev::ServerHandle>,
}

impl Application {
    /// Connects (waiting for the database if it is not up yet), migrates, starts the actors.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = connect_patiently(&settings).await?;
        let applied = store::migrate(&db)
            .await
            .context("failed to apply database migrations")?;
        if applied > 0 {
            info!(applied, "database migrations applied");
        }
        if let Some(kafka) = &settings.kafka {
            // Refuse a bad property now, not in a retry loop after start.
            crate::kafka::check(kafka).map_err(anyhow::Error::msg)?;
        }
        let policy = TimeoutPolicy {
            stuck_timeout: settings.spark.stuck_timeout,
            queued_timeout: settings.spark.queued_timeout,
            max_runtime: settings.spark.max_runtime,
        };
        let job_store = JobStore::new(db.clone(), settings.store.clone()).with_timeouts(policy);
        let store_health = job_store.health();
        let store = job_store.launch();
        let PollerPool {
            pollers,
            health: spark_health,
        } = PollerPool::start(&settings.spark, &store).map_err(anyhow::Error::msg)?;
        let scheduler =
            Scheduler::new(store.clone(), pollers.clone(), settings.spark.poll_interval);
        let scheduler = Supervisor::start(move |_| scheduler);
        let kafka_stats = std::sync::Arc::new(KafkaStats::default());
        let listener = settings.kafka.as_ref().map(|kafka| {
            KafkaListener::new(kafka.clone(), store.clone(), kafka_stats.clone()).start()
        });
        let http = if settings.http.bind.is_empty() {
            None
        } else {
            let state = HttpState {
                db: db.clone(),
                store: store.clone(),
                store_health: store_health.clone(),
                scheduler: scheduler.clone(),
                pollers: pollers.clone(),
                listener: listener.clone(),
                api_token: settings.http.api_token.clone(),
            };
            let (addr, handle) =
                crate::http::start(&settings.http.bind, state).with_context(|| {
                    format!("failed to listen on http.bind = {:?}", settings.http.bind)
                })?;
            info!(address = %addr, "HTTP endpoints listening (/healthz, /readyz, /metrics, /api/v1)");
            Some((addr, handle))
        };
        Ok(Application {
            settings,
            db,
            store,
            store_health,
            scheduler,
            pollers,
            spark_health,
            listener,
            kafka_stats,
            http_addr: http.as_ref().map(|(addr, _)| *addr),
            http: http.map(|(_, handle)| handle),
        })
    }

    /// Runs until `shutdown` resolves, then stops taking work and flushes the store.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = &'static str>,
    ) -> anyhow::Result<()> {
        info!(
            database = %self.settings.database.url,
            spark = %self.settings.spark.rest_url,
            poll_interval = %humantime::format_duration(self.settings.spark.poll_interval),
            max_concurrent_polls = self.settings.spark.max_concurrent_polls,
            "jobwarden running"
        );
        if self.settings.kafka.is_none() {
            info!("no [kafka] section configured; status events are not consumed");
        }
        let reason = shutdown.await;
        info!(
            signal = reason,
            "shutting down: no new work, flushing pending changes"
        );
        self.shutdown().await
    }

    /// Stops taking work and waits for the store to make accepted changes durable.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(http) = &self.http {
            http.stop(true).await;
        }
        // Polls in flight finish (each is bounded by the request timeout) and get recorded.
        let polls_done = self.settings.spark.request_timeout * 2 + Duration::from_secs(1);
        if tokio::time::timeout(polls_done, self.scheduler.send(StopPolling))
            .await
            .is_err()
        {
            warn!("polls still in flight at shutdown; they will be repeated at next start");
        }
        if let Some(listener) = &self.listener {
            // Bounded inside the listener; the outer limit only guards against a stuck actor.
            let limit = Duration::from_secs(60);
            if tokio::time::timeout(limit, listener.send(StopListening))
                .await
                .is_err()
            {
                warn!("Kafka listener did not stop in time; unwritten events will be redelivered");
            }
        }
        match tokio::time::timeout(DRAIN_TIMEOUT, self.store.send(Drain)).await {
            Ok(Ok(())) => info!("all accepted changes are durable; bye"),
            Ok(Err(e)) => warn!(error = %e, "job store stopped before draining"),
            Err(_) => error!(
                timeout = ?DRAIN_TIMEOUT,
                "database still unreachable; unwritten changes will be re-derived at next start"
            ),
        }
        Ok(())
    }
}

/// Connects, retrying while the database is unreachable; refuses at once on errors that
/// waiting cannot fix (bad credentials, unknown database).
async fn connect_patiently(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    let mut delay = settings.store.retry_initial;
    let mut warned = false;
    loop {
        match store::connect(&settings.database).await {
            Ok(db) => {
                if warned {
                    info!(database = %settings.database.url, "database reachable");
                }
                return Ok(db);
            }
            Err(e) if store::is_transient(&e) => {
                if !warned {
                    warn!(database = %settings.database.url, error = %e,
                        "database unreachable; waiting for it (Ctrl-C to give up)");
                    warned = true;
                }
                actix_rt::time::sleep(delay).await;
                delay = (delay * 2).min(settings.store.retry_max);
            }
            Err(e) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("failed to connect to {}", settings.database.url))
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops jobwarden");
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
