//! Test fixtures: a fresh database per test on each backend, settings pointing at it, a TCP
//! proxy that can cut a database off, and waiting on conditions instead of sleeping.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use jobwarden::actors::JobStore;
use jobwarden::config::{self, DatabaseUrl, Settings};
use jobwarden::events::Events;
use jobwarden::store::Rules;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MariaDb,
}

impl Backend {
    fn admin_url(self) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                std::env::var("JOBWARDEN_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
            ),
            Backend::MariaDb => Some(
                std::env::var("JOBWARDEN_TEST_MYSQL_URL")
                    .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into()),
            ),
        }
    }
}

/// Every backend must be reachable when this is set (CI sets `CI=true`); otherwise a missing
/// server skips its tests with a printed reason.
pub(crate) fn require_all_backends() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
        || std::env::var("JOBWARDEN_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Something `what` needs is missing, for the reason `why` (saying how to get it): a failure
/// where every backend is required, a printed skip elsewhere.
pub(crate) fn skip_unless_ci(what: &str, why: &str) {
    assert!(!require_all_backends(), "CI must run {what}: {why}");
    eprintln!("SKIPPED {what}: {why}");
}

/// A database created for one test.
#[derive(Clone)]
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub db: DatabaseConnection,
    admin_url: Option<String>,
    name: String,
    _dir: Option<Arc<tempfile::TempDir>>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "jw_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

fn with_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("test database URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

impl TestDb {
    /// A fresh, migrated database, or `None` (with the reason printed) if the server is absent.
    pub async fn fresh(backend: Backend) -> Option<TestDb> {
        let db = TestDb::empty(backend).await?;
        jobwarden::store::migrate(&db.db)
            .await
            .expect("migrate test database");
        Some(db)
    }

    /// A fresh database with no table at all, or `None` as for [`TestDb::fresh`].
    pub async fn empty(backend: Backend) -> Option<TestDb> {
        let name = unique_name();
        let (url, admin_url, dir) = match backend.admin_url() {
            None => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("jw.db").display());
                (url, None, Some(Arc::new(dir)))
            }
            Some(admin) => {
                let admin_db = match Database::connect(&admin).await {
                    Ok(db) => db,
                    Err(e) if !require_all_backends() => {
                        eprintln!("SKIPPED on {backend:?}: {admin} unreachable ({e}); set CI=1 to make this a failure");
                        return None;
                    }
                    Err(e) => panic!("{backend:?} test server {admin} unreachable: {e}"),
                };
                admin_db
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                admin_db.close().await.ok();
                (with_database(&admin, &name), Some(admin), None)
            }
        };
        let settings = settings_for(&url);
        let db = jobwarden::store::connect(&settings.database)
            .await
            .expect("connect to test database");
        Some(TestDb {
            backend,
            url,
            db,
            admin_url,
            name,
            _dir: dir,
        })
    }

    /// A connection to the server's administrative database (not this one), for what must
    /// be done from outside: altering or dropping this database, ending its sessions.
    pub async fn admin(&self) -> Option<DatabaseConnection> {
        Database::connect(self.admin_url.as_deref()?).await.ok()
    }

    /// This database's name on its server.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Settings that point at this database, with short retry delays.
    pub fn settings(&self) -> Settings {
        settings_for(&self.url)
    }

    pub async fn drop_database(self) {
        self.db.close().await.ok();
        if let Some(admin) = &self.admin_url {
            if let Ok(admin_db) = Database::connect(admin).await {
                let force = if self.backend == Backend::Postgres {
                    " WITH (FORCE)"
                } else {
                    ""
                };
                admin_db
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {}{force}", self.name))
                    .await
                    .ok();
                admin_db.close().await.ok();
            }
        }
    }
}

/// The shipped defaults, pointed at `url`, with test-friendly timings.
pub fn settings_for(url: &str) -> Settings {
    let mut settings = config::load_with_env(
        Some(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config.toml"
        ))),
        Vec::new(),
    )
    .expect("shipped config.toml loads")
    .settings;
    settings.database.url = DatabaseUrl::new(url);
    settings.database.connect_timeout = Duration::from_secs(2);
    settings.store.retry_initial = Duration::from_millis(20);
    settings.store.retry_max = Duration::from_millis(200);
    settings
}

/// The domain rules the service would run with under `settings`.
pub fn rules(settings: &Settings) -> Rules {
    Rules::from_settings(&settings.spark)
}

/// A JobStore on `db` as the service builds it (without the timeout sweep), with metrics of
/// its own.
pub fn launch_store(db: DatabaseConnection, settings: &Settings) -> Addr<JobStore> {
    launch_store_counting(db, settings, Events::default())
}

/// Like [`launch_store`], counting into `events`.
pub fn launch_store_counting(
    db: DatabaseConnection,
    settings: &Settings,
    events: Events,
) -> Addr<JobStore> {
    JobStore::new(db, settings.store.clone(), rules(settings), events).launch()
}

/// A JobStore on `db` as the service builds it, not started yet: for a test that adds what it
/// needs (notifications, retention) before launching it.
pub fn store_on(db: &TestDb) -> JobStore {
    let settings = db.settings();
    JobStore::new(
        db.db.clone(),
        settings.store.clone(),
        rules(&settings),
        Events::default(),
    )
}

/// Runs `test` against a fresh database of `backend`, then drops that database.
pub async fn run_on<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDb::fresh(backend).await else {
        return;
    };
    test(db.clone()).await;
    db.drop_database().await;
}

/// Declares one test per backend for each named `async fn(TestDb)`.
#[macro_export]
macro_rules! on_every_database {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::helpers::{run_on, Backend};

            #[actix_rt::test]
            async fn sqlite() {
                run_on(Backend::Sqlite, super::$name).await
            }

            #[actix_rt::test]
            async fn postgres() {
                run_on(Backend::Postgres, super::$name).await
            }

            #[actix_rt::test]
            async fn mariadb() {
                run_on(Backend::MariaDb, super::$name).await
            }
        }
    )*};
}

/// Waits until `check` holds, polling briefly; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback TCP proxy in front of a database that a test can cut off and reconnect,
/// to play a database outage without touching the real server.
pub struct CutProxy {
    pub addr: SocketAddr,
    connected: watch::Sender<bool>,
    open: Arc<AtomicBool>,
}

impl CutProxy {
    pub async fn start(target: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, _) = watch::channel(true);
        let open = Arc::new(AtomicBool::new(true));
        let tx = connected.clone();
        let open_flag = open.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !open_flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut rx = tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        CutProxy {
            addr,
            connected,
            open,
        }
    }

    /// Drops every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.connected.send_replace(false);
    }

    pub fn restore(&self) {
        self.connected.send_replace(true);
        self.open.store(true, Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).unwrap();
        parsed.set_host(Some("127.0.0.1")).unwrap();
        parsed.set_port(Some(self.addr.port())).unwrap();
        parsed.to_string()
    }
}

/// The host:port a database URL points at.
pub fn socket_of(url: &str) -> SocketAddr {
    let parsed = url::Url::parse(url).unwrap();
    let host = parsed.host_str().unwrap();
    let port = parsed
        .port_or_known_default()
        .unwrap_or(match parsed.scheme() {
            "postgres" | "postgresql" => 5432,
            _ => 3306,
        });
    format!("{host}:{port}").parse().unwrap()
}
