//! Builds the running application (database, migrations, actors, HTTP) and owns the shutdown
//! order. Everything that can fail at start (the database, the HTTP port, the Kafka and Spark
//! settings) is checked before any actor starts, so a failed start is one message and an exit
//! code, with nothing half-running behind it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use sea_orm::{DatabaseConnection, DbErr};
use tracing::{error, info, warn};

use crate::actors::kafka_listener::{KafkaListener, StopListening};
use crate::actors::notifier::Notifier;
use crate::actors::polling;
use crate::actors::scheduler::{Scheduler, StopPolling};
use crate::actors::spark_poller::SparkPoller;
use crate::actors::submitter::{StopSubmitting, Submitter};
use crate::actors::{JobStore, StoreHealth};
use crate::backend::rest_off::SubmitGate;
use crate::backend::spark::SparkSetupError;
use crate::config::{DatabaseSettings, Settings};
use crate::events::Events;
use crate::health::Part;
use crate::http::HttpState;
use crate::kafka::KafkaSetupError;
use crate::metrics::Metrics;
use crate::store::mapped::{self, Mapping, MappingError};
use crate::store::{self, MigrateError, Rules};
use crate::store_api::StoreHandle;

/// How long shutdown waits for accepted changes to be written before giving up on them.
/// Nothing is lost by giving up: unacknowledged Kafka offsets are redelivered and Spark is
/// polled again at the next start.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why jobwarden could not start: one line naming the setting and what to do, and the exit
/// code the process ends with (documented in the README).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use database.url = {url}: {reason}")]
    DatabaseRefused { url: String, reason: String },
    #[error("database.url = {url} still unreachable after database.startup_wait = {waited}: {error}; start the database or fix database.url")]
    DatabaseUnreachable {
        url: String,
        waited: String,
        error: String,
    },
    #[error("cannot apply database migrations on database.url = {url}: {error}; check that the user may create tables")]
    Migration { url: String, error: String },
    #[error("refusing database.url = {url}: {error}")]
    SchemaNewer { url: String, error: String },
    #[error("cannot listen on http.bind = {bind:?}: {error}; stop what uses that address, pick another, or set http.bind = \"\" to turn the HTTP server off")]
    HttpBind { bind: String, error: std::io::Error },
    // The inner messages name the setting; the hint says where to change it.
    #[error("{0}; fix or remove it in the [kafka] section (kafka.properties go to librdkafka as written)")]
    Kafka(#[from] KafkaSetupError),
    #[error("{0}; fix it in the [spark] section")]
    Spark(#[from] SparkSetupError),
    #[error("{0}\nfix the [tables] settings to match the tables (jobwarden never changes a mapped table)")]
    Mapping(#[from] MappingError),
    #[error("another jobwarden{holder} already runs on the SQLite file {path}: SQLite is for one instance; stop the other one, or use PostgreSQL or MySQL/MariaDB (database.url) to run several instances that share the work")]
    SqliteInUse { path: String, holder: String },
    #[error("cannot take a share of the work on database.url = {url}: {error}")]
    Leases { url: String, error: String },
}

impl StartError {
    pub fn from_migration(database: &crate::config::DatabaseSettings, e: MigrateError) -> Self {
        let url = database.url.to_string();
        let error = e.to_string();
        match e {
            MigrateError::Newer { .. } => StartError::SchemaNewer { url, error },
            MigrateError::Db(_) => StartError::Migration { url, error },
        }
    }

    /// 3: the database; 4: the HTTP address; 5: Kafka; 6: the mapped tables; 2: another
    /// setting (as for an invalid configuration file).
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::DatabaseRefused { .. }
            | StartError::DatabaseUnreachable { .. }
            | StartError::Migration { .. }
            | StartError::SchemaNewer { .. }
            | StartError::SqliteInUse { .. }
            | StartError::Leases { .. } => 3,
            StartError::HttpBind { .. } => 4,
            StartError::Kafka(_) => 5,
            StartError::Spark(_) => 2,
            StartError::Mapping(_) => 6,
        }
    }
}

/// A running jobwarden: what `main` runs and what tests spawn.
pub struct Application {
    pub settings: Settings,
    pub db: DatabaseConnection,
    pub store: Addr<JobStore>,
    pub store_handle: StoreHandle,
    pub store_health: Arc<StoreHealth>,
    pub scheduler: Addr<Scheduler>,
    pub pollers: Vec<Addr<SparkPoller>>,
    /// Absent when no `[kafka]` section is configured.
    pub listener: Option<Addr<KafkaListener>>,
    /// Absent when no notification rule is configured.
    pub notifier: Option<Addr<Notifier>>,
    /// Absent on mapped tables (submission needs jobwarden's own).
    pub submitter: Option<Addr<Submitter>>,
    /// This application's own metrics (not shared with another application in the process).
    pub metrics: Arc<Metrics>,
    /// Where the HTTP endpoints listen (absent when `http.bind` is empty).
    pub http_addr: Option<std::net::SocketAddr>,
    /// This instance's id among those sharing the database.
    pub instance: String,
    http: Option<actix_web::dev::ServerHandle>,
    /// Held while running on a SQLite file, so a second instance on it refuses to start.
    _sqlite_lock: Option<std::fs::File>,
}

impl Application {
    /// Connects (waiting up to `database.startup_wait` for a database that is not up yet),
    /// migrates, checks the remaining settings, binds the HTTP address, then starts the actors.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let sqlite_lock = lock_sqlite_file(settings.database.url.expose())?;
        let instance = settings.instance.resolved_id();
        let db = connect_patiently(&settings.database).await?;
        // The mapping is checked before jobwarden adds its own tables to the database: a start
        // refused for a mapping leaves nothing behind.
        let mapping = Arc::new(check_tables(&db, &settings).await?);
        let applied = store::migrate_exclusively(&db, &settings.database)
            .await
            .map_err(|e| StartError::from_migration(&settings.database, e))?;
        if applied > 0 {
            info!(applied, "database migrations applied");
        }
        if let Some(kafka) = &settings.kafka {
            // Refuse a bad property now, not in a retry loop after start.
            crate::kafka::check(kafka)?;
        }
        // Refuse a cluster whose client cannot be built now, before anything starts.
        let clusters = crate::backend::spark::clusters(&settings.spark)?;
        // Only where jobwarden submits: mapped tables take no submissions.
        let submit_gate = match settings.tables.executions {
            Some(_) => None,
            None => Some(Arc::new(SubmitGate::new(&settings.spark)?)),
        };
        let listener_socket = if settings.http.bind.is_empty() {
            None
        } else {
            let bind = settings.http.bind.clone();
            Some(
                std::net::TcpListener::bind(&bind)
                    .map_err(|error| StartError::HttpBind { bind, error })?,
            )
        };

        // Several instances share PostgreSQL and MySQL/MariaDB through leases, claimed before
        // the first poll cycle so it already knows its share.
        let shared = db.get_database_backend() != sea_orm::DatabaseBackend::Sqlite;
        let held = if shared {
            store::leases::check_server(&db)
                .await
                .map_err(|error| StartError::Leases {
                    url: settings.database.url.to_string(),
                    error,
                })?;
            if settings.instance.is_made_up() {
                take_back_from_dead_predecessors(&db, &instance).await;
            }
            Some(
                first_claim(&db, &instance, settings.instance.lease)
                    .await
                    .map_err(|e| StartError::Leases {
                        url: settings.database.url.to_string(),
                        error: e.to_string(),
                    })?,
            )
        } else {
            None
        };

        let metrics = Arc::new(Metrics::new());
        metrics
            .instance_info
            .with_label_values(&[instance.as_str()])
            .set(1.0);
        let events = Events::new(metrics.clone());
        let rules = Rules::from_settings(&settings.spark).with_submit(&settings.submit);
        // A parent's end wakes the Submitter at once, not at its next look.
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let mut job_store =
            JobStore::new(db.clone(), settings.store.clone(), rules, events.clone())
                .with_wake(wake.clone())
                .with_mapping(mapping)
                .with_notifications(&settings.notifications)
                .with_retention(settings.retention.clone())
                .with_timeout_sweep();
        // What /readyz and /metrics show before the first renewal (all of it on SQLite).
        let (buckets, leader, live) = held
            .as_ref()
            .map_or((usize::from(store::leases::BUCKETS), true, 1), |h| {
                (h.buckets.len(), h.leader.is_some(), h.live_instances)
            });
        metrics.buckets_held.set(buckets as f64);
        metrics.leader.set(if leader { 1.0 } else { 0.0 });
        metrics.live_instances.set(live as f64);
        if let Some(held) = held {
            info!(instance = %instance, buckets = held.buckets.len(), leader = held.leader.is_some(),
                live_instances = held.live_instances, "sharing the database with other instances through leases");
            job_store = job_store.shared_as(instance.clone(), settings.instance.lease, held);
        }
        let store_health = job_store.health();
        let store = job_store.launch();
        let store_handle = StoreHandle::from(&store);
        let (scheduler, pollers) =
            polling::assemble_with(clusters, &settings.spark, &store_handle, &events);
        let mut heartbeats = vec![Part::new(scheduler.heartbeat())];
        let scheduler = Supervisor::start(move |_| scheduler);
        store.do_send(crate::actors::job_store::OnBucketsGained(
            scheduler.clone().recipient(),
        ));
        let notifier = settings.notifications.is_enabled().then(|| {
            Notifier::new(
                settings.notifications.clone(),
                store.clone().recipient(),
                store_handle.clone(),
                events.clone(),
            )
        });
        let standing = notifier.as_ref().map(Notifier::standing);
        let notifier = notifier.map(Actor::start);
        let submitter = match settings.tables.executions {
            Some(_) => None,
            None => Some(
                Submitter::new(
                    &settings.spark,
                    settings.submit.clone(),
                    store_handle.clone(),
                )?
                .with_wake(wake)
                .start(),
            ),
        };
        let listener = settings.kafka.as_ref().map(|kafka| {
            let listener = KafkaListener::new(kafka.clone(), store_handle.clone(), events.clone());
            heartbeats.push(Part::new(listener.heartbeat()).waiting_on(listener.brokers()));
            listener.start()
        });
        let http = match listener_socket {
            None => None,
            Some(socket) => {
                let state = HttpState {
                    db: db.clone(),
                    store: store_handle.clone(),
                    store_health: store_health.clone(),
                    heartbeats,
                    kafka_topic: settings.kafka.as_ref().map(|k| k.topic.clone()),
                    notifications: standing,
                    metrics: metrics.clone(),
                    api_token: settings.http.api_token.clone(),
                    instance: instance.clone(),
                    clusters: settings.spark.clusters.keys().cloned().collect(),
                    read_token: settings.http.read_token.clone(),
                    max_concurrent_polls: settings.spark.max_concurrent_polls,
                    submit_gate,
                };
                let bind = settings.http.bind.clone();
                let (addr, handle) = crate::http::start(socket, state)
                    .map_err(|error| StartError::HttpBind { bind, error })?;
                info!(address = %addr, "HTTP endpoints listening (/healthz, /readyz, /metrics, /api/v1)");
                Some((addr, handle))
            }
        };
        Ok(Application {
            settings,
            db,
            store,
            store_handle,
            store_health,
            scheduler,
            pollers,
            listener,
            notifier,
            submitter,
            metrics,
            http_addr: http.as_ref().map(|(addr, _)| *addr),
            instance,
            http: http.map(|(_, handle)| handle),
            _sqlite_lock: sqlite_lock,
        })
    }

    /// Runs until `shutdown` resolves, then stops taking work and flushes the store.
    pub async fn run_until(self, shutdown: impl Future<Output = &'static str>) {
        info!(
            instance = %self.instance,
            database = %self.settings.database.url,
            spark = %self.settings.spark.rest_url,
            poll_interval = %humantime::format_duration(self.settings.spark.poll_interval),
            max_concurrent_polls = self.settings.spark.max_concurrent_polls,
            allocator = crate::allocator::name(),
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
    pub async fn shutdown(self) {
        self.store.do_send(crate::actors::job_store::StopClaiming);
        if let Some(submitter) = &self.submitter {
            // What it has in flight is reconciled at the next start, like a crash.
            let _ = submitter.send(StopSubmitting).await;
        }
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
        match tokio::time::timeout(DRAIN_TIMEOUT, self.store_handle.drain()).await {
            Ok(Ok(())) => {
                // Nothing of ours is left to write: the others may take our share at once.
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    self.store.send(crate::actors::job_store::ReleaseLeases),
                )
                .await;
                info!("all accepted changes are durable; bye")
            }
            Ok(Err(e)) => warn!(error = %e, "job store stopped before draining"),
            Err(_) => error!(
                timeout = ?DRAIN_TIMEOUT,
                "database still unreachable; unwritten changes will be re-derived at next start"
            ),
        }
    }
}

/// Connects, retrying while the database is unreachable for up to `database.startup_wait`;
/// refuses at once on errors that waiting cannot fix (bad credentials, unknown database, a
/// SQLite file that cannot be created).
pub async fn connect_patiently(
    settings: &DatabaseSettings,
) -> Result<DatabaseConnection, StartError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    let mut warned = false;
    loop {
        match store::connect(settings).await {
            Ok(db) => {
                if warned {
                    info!(database = %settings.url, "database reachable");
                }
                return Ok(db);
            }
            Err(e) if store::is_transient(&e) => {
                if started.elapsed() >= settings.startup_wait {
                    return Err(StartError::DatabaseUnreachable {
                        url: settings.url.to_string(),
                        waited: humantime::format_duration(settings.startup_wait).to_string(),
                        error: e.to_string(),
                    });
                }
                if !warned {
                    warn!(database = %settings.url, error = %e, wait = %humantime::format_duration(settings.startup_wait),
                        "database unreachable; waiting for it (Ctrl-C to give up)");
                    warned = true;
                }
                let left = settings.startup_wait.saturating_sub(started.elapsed());
                actix_rt::time::sleep(delay.min(left)).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(refused(settings, &e)),
        }
    }
}

/// The database answered but will not serve us: say what to fix.
fn refused(settings: &DatabaseSettings, e: &DbErr) -> StartError {
    let text = e.to_string();
    let url = settings.url.expose();
    let hint = if url.starts_with("sqlite:") && !url.contains("mode=rwc") {
        "check that the file exists, or add ?mode=rwc to the URL to create it"
    } else if url.starts_with("sqlite:") {
        "check that the file's directory exists and is writable"
    } else if text.contains("password") || text.contains("Access denied") {
        "fix the user name or password in database.url"
    } else if text.contains("does not exist") || text.contains("Unknown database") {
        "create the database or fix its name in database.url"
    } else {
        "fix database.url"
    };
    StartError::DatabaseRefused {
        url: settings.url.to_string(),
        reason: format!("{text}; {hint}"),
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

/// The application tables of `[tables]`, checked against the database's catalogue; none
/// configured means jobwarden's own tables.
pub async fn check_tables(
    db: &DatabaseConnection,
    settings: &Settings,
) -> Result<Mapping, StartError> {
    if settings.tables.is_empty() {
        return Ok(Mapping::default());
    }
    let mapping = mapped::check(db, &settings.tables).await?;
    for line in mapped::describe(&mapping).lines() {
        info!("{line}");
    }
    Ok(mapping)
}

/// On a SQLite file, a lock beside it held for the life of the process: a second instance on
/// the same file is refused instead of fighting the first for it. `None` for other databases.
fn lock_sqlite_file(url: &str) -> Result<Option<std::fs::File>, StartError> {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Ok(None);
    };
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return Ok(None);
    }
    let lock_path = format!("{path}.jobwarden-lock");
    let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
    else {
        // Cannot create it (a read-only directory): the database open will say what is wrong.
        return Ok(None);
    };
    match file.try_lock() {
        Ok(()) => {
            use std::io::{Seek, Write};
            let _ = file.set_len(0);
            let _ = file.seek(std::io::SeekFrom::Start(0));
            let _ = write!(file, "{}", std::process::id());
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&lock_path)
                .ok()
                .map(|pid| pid.trim().to_owned())
                .filter(|pid| !pid.is_empty())
                .map(|pid| format!(" (process {pid})"))
                .unwrap_or_default();
            Err(StartError::SqliteInUse {
                path: path.to_owned(),
                holder,
            })
        }
        Err(std::fs::TryLockError::Error(_)) => Ok(None),
    }
}

/// The first lease claim. Instances started at the same moment claim the same free rows, and
/// MySQL/MariaDB may pick one of those transactions as a deadlock victim (seen: one of three
/// instances started together exited here): such a collision is tried again, not fatal.
async fn first_claim(
    db: &DatabaseConnection,
    instance: &str,
    lease: Duration,
) -> Result<store::leases::Held, DbErr> {
    let mut pause = Duration::from_millis(20);
    for _ in 0..20 {
        let now = chrono::Utc::now();
        match store::leases::renew(db, instance, now, now, lease, &[], true).await {
            Err(e) if store::is_conflict(&e) => {
                // Apart, so the same transactions do not collide again.
                let jitter = u64::from(std::process::id() % 17) * 3;
                tokio::time::sleep(pause + Duration::from_millis(jitter)).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            answer => return answer,
        }
    }
    let now = chrono::Utc::now();
    store::leases::renew(db, instance, now, now, lease, &[], true).await
}

/// Whether process `pid` of this host is a running jobwarden (other than this one). Where
/// `/proc` cannot tell, it is taken to be running: its leases then run out as usual.
fn is_running_jobwarden(pid: u32) -> bool {
    if pid == std::process::id() {
        // A predecessor that had this pid (a restarted container) is gone: this is us.
        return false;
    }
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| String::from_utf8_lossy(&cmdline).contains("jobwarden"))
        .unwrap_or(false)
}

/// A restarted instance with a made-up id (`host-pid-suffix`, new at every start) would see
/// its crashed predecessor as alive and wait a whole lease for its share. Instances recorded
/// under this host's name whose process is gone are released now instead.
async fn take_back_from_dead_predecessors(db: &DatabaseConnection, me: &str) {
    let host = crate::config::host_name();
    let recorded = match store::leases::recorded_instances(db).await {
        Ok(recorded) => recorded,
        Err(e) => return warn!(error = %e, "cannot read the instances recorded on the database"),
    };
    for id in recorded.iter().filter(|id| id.as_str() != me) {
        let Some(pid) = crate::config::made_up_pid(id, &host) else {
            continue;
        };
        if is_running_jobwarden(pid) {
            continue;
        }
        match store::leases::release_all(db, id).await {
            Ok(()) => info!(instance = %me, gone = %id,
                "released the leases of an instance of this host whose process is gone; taking its share now"),
            Err(e) => {
                warn!(gone = %id, error = %e, "cannot release the leases of a gone instance; they run out after a lease")
            }
        }
    }
}
