//! The real `jobwarden` executable as tests and benchmarks start it: configured by nothing but
//! what the caller gives it, on a free port, every log line kept to wait on and to show when
//! something fails, and never outliving the value that started it.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A fresh working directory holding a copy of `config` as its `config.toml`, the file the
/// service reads when it is started there without `--config`.
pub fn workdir_with(config: impl AsRef<Path>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = config.as_ref();
    std::fs::copy(config, dir.path().join("config.toml"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", config.display()));
    dir
}

/// How one `jobwarden` process is to be started; [`Jobwarden::start`] runs the service,
/// [`Jobwarden::command`] gives the command for any other subcommand.
#[derive(Debug, Clone)]
pub struct Jobwarden {
    executable: PathBuf,
    dir: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    inherit_env: bool,
}

impl Jobwarden {
    /// The executable at `executable` (a crate's tests know it as
    /// `env!("CARGO_BIN_EXE_jobwarden")`), with the HTTP server on a free loopback port.
    pub fn new(executable: impl Into<PathBuf>) -> Jobwarden {
        Jobwarden {
            executable: executable.into(),
            dir: None,
            // Callers run side by side: each service takes a port of its own.
            env: vec![("JOBWARDEN__HTTP__BIND".into(), "127.0.0.1:0".into())],
            inherit_env: true,
        }
    }

    /// Runs it in `dir`, where it reads `config.toml` if there is one and keeps a SQLite file
    /// by default; without this it runs in the caller's directory.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Jobwarden {
        self.dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Sets `key`, usually a `JOBWARDEN__SECTION__KEY` override; a later value wins.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Jobwarden {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets each of `vars`, as [`Jobwarden::env`] does.
    pub fn envs<K, V>(self, vars: impl IntoIterator<Item = (K, V)>) -> Jobwarden
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        vars.into_iter()
            .fold(self, |jobwarden, (key, value)| jobwarden.env(key, value))
    }

    /// Inherits no environment but `PATH`, not only none of jobwarden's own variables: for a
    /// measurement that nothing else on the machine (a proxy, `PG*` defaults) may skew.
    pub fn inherit_only_path(mut self) -> Jobwarden {
        self.inherit_env = false;
        self
    }

    /// The command, for a subcommand other than `run` (add its arguments) or for
    /// [`Running::start`].
    pub fn command(self) -> Command {
        let mut command = Command::new(&self.executable);
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        if self.inherit_env {
            // What the caller's shell or CI configures must not reach a service configured by
            // its test: the result would depend on where the test runs.
            command
                .env_remove("RUST_LOG")
                .env_remove("JOBWARDEN_CONFIG");
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("JOBWARDEN__") {
                    command.env_remove(key);
                }
            }
        } else {
            command
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        }
        // Log lines are read by programs, not people.
        command.env("NO_COLOR", "1").envs(self.env);
        command
    }

    /// Starts the service (`jobwarden run`), panicking if it cannot be started.
    pub fn start(self) -> Running {
        Running::start(self.command())
    }

    /// Starts the service (`jobwarden run`), for a caller that reports errors itself.
    pub fn try_start(self) -> std::io::Result<Running> {
        Running::spawn(self.command())
    }
}

/// A running `jobwarden run` whose log lines (stdout and stderr) are kept as they arrive.
/// Dropped while it still runs, it is killed, and its log is printed if a panic is the reason.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// A panic message already carries the log: dropping must not print it twice.
    log_in_panic: bool,
}

impl Running {
    /// Starts `command` with `run` appended (a [`Jobwarden`]'s command configures it), panicking
    /// if it cannot be started.
    pub fn start(command: Command) -> Running {
        let program = command.get_program().to_owned();
        Running::spawn(command).unwrap_or_else(|e| panic!("starting {program:?}: {e}"))
    }

    /// Starts `command` with `run` appended.
    pub fn spawn(mut command: Command) -> std::io::Result<Running> {
        let mut child = command
            .arg("run")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, lines) = mpsc::channel();
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        // A reader per stream, so that a full pipe never blocks the service.
        for stream in [stdout, stderr].into_iter().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Running {
            child,
            lines,
            seen: Vec::new(),
            log_in_panic: false,
        })
    }

    /// The process id, for reading `/proc` or signalling it some other way.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line containing `needle` (one logged earlier counts); after `limit`
    /// without one, panics with the log so far.
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    self.log_in_panic = true;
                    panic!(
                        "no log line with {needle:?} within {limit:?}; got:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// The first log line containing `needle`, waiting for it as [`Running::wait_for_line`].
    pub fn line_with(&mut self, needle: &str, limit: Duration) -> String {
        self.wait_for_line(needle, limit);
        self.seen
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
            .unwrap_or_default()
    }

    /// Every line logged so far, for a failure message; never waits.
    pub fn log_so_far(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// The address the HTTP server took, once it says so (within a minute), from a text or a
    /// JSON log line.
    pub fn http_address(&mut self) -> String {
        let line = self.line_with("HTTP endpoints listening", Duration::from_secs(60));
        let from_json = || {
            let event: serde_json::Value = serde_json::from_str(&line).ok()?;
            event["fields"]["address"].as_str().map(str::to_owned)
        };
        let from_text = || {
            line.split("address=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
        };
        from_json()
            .or_else(from_text)
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// `http://` and [`Running::http_address`], the base of every URL it serves.
    pub fn http_url(&mut self) -> String {
        format!("http://{}", self.http_address())
    }

    /// Sends signal `name` (`TERM`, `KILL`, …), asserting that it was delivered.
    pub fn signal(&self, name: &str) {
        let status = self
            .kill_command(name)
            .status()
            .expect("the kill command runs");
        assert!(status.success(), "kill -{name} {}: {status}", self.pid());
    }

    /// Sends signal `name`, not minding a process that is already gone.
    pub fn signal_quietly(&self, name: &str) {
        let _ = self.kill_command(name).stderr(Stdio::null()).status();
    }

    fn kill_command(&self, name: &str) -> Command {
        let mut kill = Command::new("kill");
        kill.args([format!("-{name}"), self.pid().to_string()]);
        kill
    }

    /// How it exited, if it has; never waits.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("the child can be waited for")
    }

    /// Waits for it to exit and returns the status with the whole log; after `limit`, kills
    /// it and panics with the log.
    pub fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status() {
                self.collect_last_lines();
                return (status, self.seen.join("\n"));
            }
            if Instant::now() > deadline {
                self.kill();
                self.log_in_panic = true;
                panic!("did not exit within {limit:?}:\n{}", self.seen.join("\n"));
            }
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(line);
            }
        }
    }

    /// `SIGTERM`, then [`Running::wait`]: the way an operator stops it.
    pub fn stop(self, limit: Duration) -> (ExitStatus, String) {
        self.signal_quietly("TERM");
        self.wait(limit)
    }

    /// Kills it at once (as `SIGKILL` would) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The lines still in the pipes once it has exited: the readers end with the pipes.
    fn collect_last_lines(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
    }
}

impl Drop for Running {
    /// A test that fails half-way must not leave its service running behind it, and its
    /// failure is easier to read beside what the service logged.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
        if std::thread::panicking() && !self.log_in_panic {
            self.collect_last_lines();
            eprintln!("jobwarden's log:\n{}", self.seen.join("\n"));
        }
    }
}
