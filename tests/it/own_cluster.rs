//! A Spark standalone cluster owned by one test (a master and its workers, from a given Spark
//! distribution, on the test's own ports), for tests that kill or restart Spark's processes or
//! need another Spark version: the shared cluster of `.ci/spark.sh` serves other tests at the
//! same time and must never be touched.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sea_orm::{Database, DatabaseConnection};
use serde_json::{json, Value};

use crate::binary::{jobwarden, run_to_end, text};
use crate::helpers::require_all_backends;

/// Tests that start their own cluster take turns: some share ports, and on a two-core machine
/// clusters starting side by side would slow each other past the timings the tests measure.
pub(crate) static OWN_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Spark distribution (`SPARK_HOME`) named by the environment variable `var`; `None`, with
/// the reason printed, where it is not set, except under CI, where that is a failure.
pub(crate) fn spark_home(var: &str, script: &str) -> Option<PathBuf> {
    match std::env::var(var).ok().filter(|v| !v.is_empty()) {
        Some(home) => Some(PathBuf::from(home)),
        None => {
            assert!(
                !require_all_backends(),
                "CI must run this real-Spark test: {var} is not set (run `eval \"$(bash {script})\"`)"
            );
            eprintln!(
                "SKIPPED real-Spark test: {var} is not set (run `eval \"$(bash {script})\"`)"
            );
            None
        }
    }
}

/// Where a cluster listens and how big it is.
pub(crate) struct Layout {
    pub(crate) master_port: u16,
    pub(crate) ui_port: u16,
    /// The REST submission server's port; it is only listened on when `rest_enabled`.
    pub(crate) rest_port: u16,
    pub(crate) rest_enabled: bool,
    /// More master properties (`spark.worker.timeout`, recovery settings…).
    pub(crate) properties: Vec<(&'static str, String)>,
    /// Properties of every worker.
    pub(crate) worker_properties: Vec<(&'static str, String)>,
    /// One web UI port per worker.
    pub(crate) worker_uis: Vec<u16>,
    pub(crate) worker_cores: u32,
    pub(crate) worker_memory: &'static str,
}

/// A Spark daemon in a process group of its own: killing the group kills what it launched too
/// (a worker's drivers), as a machine that dies takes its processes with it.
pub(crate) struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub(crate) fn start(
        home: &Path,
        dir: &Path,
        name: &str,
        class: &str,
        args: &[String],
    ) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let own = |sub: &str| {
            let path = dir.join(sub).join(name);
            std::fs::create_dir_all(&path).unwrap();
            path
        };
        let child = Command::new(home.join("bin/spark-class"))
            .arg(class)
            .args(args)
            .env("SPARK_HOME", home)
            .env("SPARK_LOCAL_IP", "127.0.0.1")
            // An empty conf dir: no configuration of another cluster leaks in.
            .env("SPARK_CONF_DIR", own("conf"))
            .env("SPARK_LOG_DIR", own("logs"))
            .env("SPARK_PID_DIR", own("pids"))
            .env("SPARK_DAEMON_MEMORY", "256m")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} with spark-class: {e}"));
        Daemon {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// SIGKILL to the whole group, as in a crash: no goodbye to the master or the workers.
    pub(crate) fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let group = self.child.id() as libc::pid_t;
            // SAFETY: killpg only sends a signal, to the group this test created for its child.
            unsafe {
                libc::killpg(group, libc::SIGKILL);
            }
        }
        // Reaped, so its ports are free when this returns.
        let _ = self.child.wait();
    }

    pub(crate) fn tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("SecurityManager"))
            .collect();
        format!(
            "--- last lines of {} ---\n{}",
            self.name,
            lines[lines.len().saturating_sub(25)..].join("\n")
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running cluster; dropping it kills every process it started.
pub(crate) struct OwnCluster {
    home: PathBuf,
    layout: Layout,
    http: reqwest::Client,
    master: Option<Daemon>,
    workers: Vec<Option<Daemon>>,
    /// Every daemon started so far, so a restarted one writes a log of its own.
    started: usize,
    /// Dropped after the daemons: their work dirs live here.
    dir: tempfile::TempDir,
}

impl OwnCluster {
    /// Starts the master, then every worker, and returns once the master is ALIVE with every
    /// worker registered.
    pub(crate) async fn start(home: &Path, layout: Layout) -> OwnCluster {
        let began = Instant::now();
        let mut ports = vec![layout.master_port, layout.ui_port];
        if layout.rest_enabled {
            ports.push(layout.rest_port);
        }
        ports.extend(&layout.worker_uis);
        for port in ports {
            // A cluster an interrupted run left behind would answer in this one's place.
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
                "port {port} is taken: is a Spark process of an earlier run still alive? (`ss -ltnp | grep {port}`)"
            );
        }
        let workers = layout.worker_uis.len();
        let mut cluster = OwnCluster {
            home: home.to_owned(),
            layout,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            master: None,
            workers: (0..workers).map(|_| None).collect(),
            started: 0,
            dir: tempfile::tempdir().unwrap(),
        };
        cluster.start_master();
        cluster.wait_alive(0).await;
        for i in 0..workers {
            cluster.start_worker(i);
        }
        cluster.wait_alive(workers).await;
        eprintln!(
            "own Spark cluster (spark://127.0.0.1:{}, {workers} worker(s)) up in {:?}",
            cluster.layout.master_port,
            began.elapsed()
        );
        cluster
    }

    fn next_name(&mut self, role: &str) -> String {
        self.started += 1;
        format!("{:02}-{role}", self.started)
    }

    /// Starts the master (again, on the same ports); returns without waiting for it.
    pub(crate) fn start_master(&mut self) {
        assert!(self.master.is_none(), "the master is already running");
        let properties = self.dir.path().join("master.properties");
        let mut lines = vec![
            format!("spark.master.rest.enabled {}", self.layout.rest_enabled),
            "spark.master.rest.host 127.0.0.1".to_owned(),
            format!("spark.master.rest.port {}", self.layout.rest_port),
        ];
        lines.extend(
            self.layout
                .properties
                .iter()
                .map(|(key, value)| format!("{key} {value}")),
        );
        std::fs::write(&properties, lines.join("\n") + "\n").unwrap();
        let name = self.next_name("master");
        let args = [
            "--host".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            self.layout.master_port.to_string(),
            "--webui-port".to_owned(),
            self.layout.ui_port.to_string(),
            "--properties-file".to_owned(),
            properties.display().to_string(),
        ];
        self.master = Some(Daemon::start(
            &self.home,
            self.dir.path(),
            &name,
            "org.apache.spark.deploy.master.Master",
            &args,
        ));
    }

    /// kill -9 of the master (its ports are free on return).
    pub(crate) fn kill_master(&mut self) {
        let mut master = self.master.take().expect("the master is not running");
        master.kill();
    }

    /// Starts worker `i` (again, in place: same web UI port, same work dir); returns without
    /// waiting for it to register.
    pub(crate) fn start_worker(&mut self, i: usize) {
        assert!(self.workers[i].is_none(), "worker {i} is already running");
        let properties = self.dir.path().join("worker.properties");
        let lines: Vec<String> = self
            .layout
            .worker_properties
            .iter()
            .map(|(key, value)| format!("{key} {value}\n"))
            .collect();
        std::fs::write(&properties, lines.concat()).unwrap();
        let name = self.next_name(&format!("worker{i}"));
        let args = [
            "--properties-file".to_owned(),
            properties.display().to_string(),
            "--host".to_owned(),
            "127.0.0.1".to_owned(),
            "--cores".to_owned(),
            self.layout.worker_cores.to_string(),
            "--memory".to_owned(),
            self.layout.worker_memory.to_owned(),
            "--webui-port".to_owned(),
            self.layout.worker_uis[i].to_string(),
            "--work-dir".to_owned(),
            self.dir
                .path()
                .join(format!("work{i}"))
                .display()
                .to_string(),
            self.spark_url(),
        ];
        self.workers[i] = Some(Daemon::start(
            &self.home,
            self.dir.path(),
            &name,
            "org.apache.spark.deploy.worker.Worker",
            &args,
        ));
    }

    /// kill -9 of worker `i` and of the drivers it runs, as when its machine dies.
    pub(crate) fn kill_worker(&mut self, i: usize) {
        let mut worker = self.workers[i].take().expect("the worker is not running");
        worker.kill();
    }

    pub(crate) fn spark_url(&self) -> String {
        format!("spark://127.0.0.1:{}", self.layout.master_port)
    }

    pub(crate) fn ui_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.layout.ui_port)
    }

    pub(crate) fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.layout.rest_port)
    }

    pub(crate) fn worker_ui(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.layout.worker_uis[i])
    }

    /// The master's `/json/`, or `None` while it does not answer.
    pub(crate) async fn master_json(&self) -> Option<Value> {
        self.http
            .get(format!("{}/json/", self.ui_url()))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// The index of the worker the master says runs the driver.
    pub(crate) async fn worker_running(&self, id: &str) -> Option<usize> {
        let json = self.master_json().await?;
        let worker = listed_drivers(&json).find(|d| d["id"] == id)?["worker"].clone();
        let address = json["workers"]
            .as_array()?
            .iter()
            .find(|w| w["id"] == worker)?["webuiaddress"]
            .as_str()?
            .to_owned();
        (0..self.layout.worker_uis.len()).find(|i| address == self.worker_ui(*i))
    }

    /// The HTML page of worker `i` (its Running and Finished Drivers tables).
    pub(crate) async fn worker_page(&self, i: usize) -> String {
        self.http
            .get(format!("{}/", self.worker_ui(i)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until the master answers and `check` holds for its `/json/`; panics after
    /// `limit` with what was last seen and the daemons' logs.
    pub(crate) async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        let mut last = None;
        loop {
            if let Some(json) = self.master_json().await {
                if check(&json) {
                    return;
                }
                last = Some(json);
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; the master's /json/ last said {}\n{}",
                last.map_or("nothing".to_owned(), |j| j.to_string()),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for the master to be ALIVE with at least `workers` workers registered.
    pub(crate) async fn wait_alive(&self, workers: usize) {
        self.wait_for(
            Duration::from_secs(120),
            &format!("the master ALIVE with {workers} worker(s)"),
            |json| {
                json["status"] == "ALIVE"
                    && json["aliveworkers"].as_u64().unwrap_or(0) >= workers as u64
            },
        )
        .await;
    }

    /// Submits through the master's REST server (Spark 4.x): the answer's driver id.
    pub(crate) async fn submit_rest(
        &self,
        jar: &str,
        main: &str,
        args: &[&str],
        supervise: bool,
    ) -> String {
        let body = json!({
            "action": "CreateSubmissionRequest",
            "appResource": jar,
            "mainClass": main,
            "appArgs": args,
            "clientSparkVersion": "4.3.0",
            "environmentVariables": {"SPARK_ENV_LOADED": "1"},
            "sparkProperties": {
                "spark.master": self.spark_url(),
                "spark.submit.deployMode": "cluster",
                "spark.app.name": format!("jobwarden-own-{main}"),
                "spark.driver.memory": "512m",
                "spark.executor.memory": "512m",
                "spark.cores.max": "1",
                "spark.jars": jar,
                "spark.driver.supervise": supervise.to_string(),
            },
        });
        let answer: Value = self
            .http
            .post(format!("{}/v1/submissions/create", self.rest_url()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["success"], true, "{answer}");
        answer["submissionId"].as_str().unwrap().to_owned()
    }

    /// Kills a driver through the master's REST server (Spark 4.x).
    pub(crate) async fn kill_rest(&self, id: &str) {
        let answer: Value = self
            .http
            .post(format!("{}/v1/submissions/kill/{id}", self.rest_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["success"], true, "{answer}");
    }

    /// The last lines of every daemon's log, for a failure message.
    pub(crate) fn logs(&self) -> String {
        self.master
            .iter()
            .chain(self.workers.iter().flatten())
            .map(Daemon::tail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Every driver entry of a master's `/json/`: waiting and running, then finished.
pub(crate) fn listed_drivers(json: &Value) -> impl Iterator<Item = &Value> {
    ["activedrivers", "completeddrivers"]
        .into_iter()
        .flat_map(|list| json[list].as_array().into_iter().flatten())
}

/// The state a worker's page shows for driver `id` (the State cell of its row), if it lists it.
pub(crate) fn state_on_worker_page(page: &str, id: &str) -> Option<String> {
    let row = page
        .split("<tr>")
        .find(|row| row.contains(&format!("<td>{id}</td>")))?;
    let cells: Vec<&str> = row
        .split("<td>")
        .skip(1)
        .map(|cell| cell.split("</td>").next().unwrap_or("").trim())
        .collect();
    // DriverID, Main Class, State, …
    cells.get(2).map(|s| (*s).to_owned())
}

/// A config for the binary supervising an own cluster: a fresh SQLite file in `dir` and the
/// given `[spark]` and `[store]` lines. Returns the database file.
pub(crate) fn write_config(dir: &Path, spark: &str, store: &str) -> PathBuf {
    let db = dir.join("jw.db");
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[database]\nurl = \"sqlite://{}?mode=rwc\"\n[spark]\n{spark}\n[store]\n{store}\n",
            db.display()
        ),
    )
    .unwrap();
    db
}

/// `jobwarden jobs track` of one driver, named as its execution.
pub(crate) fn track(dir: &Path, execution: &str, submission: &str) {
    jobs_track(
        dir,
        &[
            execution,
            "--submission-id",
            submission,
            "--name",
            execution,
        ],
    );
}

/// Like [`track`], giving the job no name.
pub(crate) fn track_unnamed(dir: &Path, execution: &str, submission: &str) {
    jobs_track(dir, &[execution, "--submission-id", submission]);
}

fn jobs_track(dir: &Path, args: &[&str]) {
    let out = run_to_end(
        jobwarden(dir)
            .args(["jobs", "track", "--execution-id"])
            .args(args),
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// A read-only connection to the binary's SQLite file.
pub(crate) async fn read_only(db: &Path) -> DatabaseConnection {
    Database::connect(format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap()
}
