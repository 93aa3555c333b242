//! The real `jobwarden` executable: start-up on the shipped config, signals, the CLI, secrets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use jobwarden_testkit::process::{workdir_with, Jobwarden};

pub(crate) use jobwarden_testkit::process::Running;

const BIN: &str = env!("CARGO_BIN_EXE_jobwarden");

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml")
}

/// A working directory holding a copy of the shipped config.toml.
pub(crate) fn workdir() -> tempfile::TempDir {
    workdir_with(shipped_config())
}

/// This crate's `jobwarden` in `dir`, configured by nothing but `dir` and what the test adds.
pub(crate) fn jobwarden_in(dir: &Path) -> Jobwarden {
    Jobwarden::new(BIN).current_dir(dir)
}

/// [`jobwarden_in`] as a command, for any subcommand or for [`Running::start`].
pub(crate) fn jobwarden(dir: &Path) -> Command {
    jobwarden_in(dir).command()
}

pub(crate) fn run_to_end(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn run_with_shipped_config_creates_the_sqlite_file_and_exits_0_on_sigterm() {
    let dir = workdir();
    let mut service = jobwarden_in(dir.path()).start();
    service.wait_for_line("jobwarden running", Duration::from_secs(30));
    assert!(dir.path().join("jobwarden.db").exists());
    service.signal("TERM");
    let (status, log) = service.wait(Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}:\n{log}");
    assert!(log.contains("SIGTERM"), "{log}");
}

#[test]
fn the_service_runs_on_glibc_malloc_unless_told_to_use_mimalloc() {
    for (chosen, said) in [
        (None, "allocator=\"system\""),
        (Some("mimalloc"), "allocator=\"mimalloc\""),
    ] {
        let dir = workdir();
        let mut service = jobwarden_in(dir.path());
        if let Some(chosen) = chosen {
            service = service.env("JOBWARDEN_ALLOCATOR", chosen);
        }
        let mut service = service.start();
        service.wait_for_line("jobwarden running", Duration::from_secs(30));
        service.signal("TERM");
        let (status, log) = service.wait(Duration::from_secs(30));
        assert!(status.success(), "exit {status:?}:\n{log}");
        let running = log
            .lines()
            .find(|l| l.contains("jobwarden running"))
            .unwrap();
        assert!(running.contains(said), "{running}");
    }
}

#[test]
fn sigint_also_stops_the_service_cleanly() {
    let dir = workdir();
    let mut service = jobwarden_in(dir.path()).start();
    service.wait_for_line("jobwarden running", Duration::from_secs(30));
    service.signal("INT");
    let (status, log) = service.wait(Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}:\n{log}");
}

#[test]
fn runs_on_embedded_defaults_without_any_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = jobwarden_in(dir.path()).start();
    service.wait_for_line("jobwarden running", Duration::from_secs(30));
    assert!(dir.path().join("jobwarden.db").exists());
    service.signal("TERM");
    assert!(service.wait(Duration::from_secs(30)).0.success());
}

#[test]
fn invalid_config_value_is_refused_at_start_naming_key_and_value() {
    let dir = workdir();
    let out = run_to_end(
        jobwarden(dir.path())
            .arg("run")
            .env("JOBWARDEN__SPARK__POLL_INTERVAL", "soon"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("spark.poll_interval"), "{msg}");
    assert!(msg.contains("soon"), "{msg}");
    assert!(
        !dir.path().join("jobwarden.db").exists(),
        "nothing may start"
    );
}

#[test]
fn unknown_config_key_is_refused_naming_it() {
    let dir = workdir();
    std::fs::write(
        dir.path().join("custom.toml"),
        "[spark]\nmax_concurent_polls = 10\n",
    )
    .unwrap();
    let out = run_to_end(jobwarden(dir.path()).args(["--config", "custom.toml", "check-config"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("max_concurent_polls"), "{}", text(&out));
}

#[test]
fn check_config_masks_the_database_password() {
    let dir = workdir();
    let out = run_to_end(jobwarden(dir.path()).arg("check-config").env(
        "JOBWARDEN__DATABASE__URL",
        "postgres://app:hunter2@db.internal:5432/jobs",
    ));
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("postgres://app:****@db.internal:5432/jobs"),
        "{shown}"
    );
}

#[test]
fn database_password_never_reaches_the_logs() {
    // Nothing listens on port 9: the service logs its wait for the database, with the URL.
    let dir = workdir();
    let mut service = jobwarden_in(dir.path())
        .env(
            "JOBWARDEN__DATABASE__URL",
            "postgres://app:hunter2@127.0.0.1:9/jobs",
        )
        .env("JOBWARDEN__DATABASE__CONNECT_TIMEOUT", "300ms")
        .env("RUST_LOG", "debug")
        .start();
    service.wait_for_line("database unreachable", Duration::from_secs(30));
    service.signal("TERM");
    let (status, log) = service.wait(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
    assert!(log.contains("app:****@127.0.0.1:9"), "{log}");
}

#[test]
fn help_describes_every_command() {
    let out = run_to_end(Command::new(BIN).arg("--help"));
    assert!(out.status.success());
    let help = text(&out);
    for command in ["run", "migrate", "check-config", "jobs"] {
        assert!(help.contains(command), "{help}");
    }
    let jobs = text(&run_to_end(Command::new(BIN).args(["jobs", "--help"])));
    for command in ["list", "show", "track"] {
        assert!(jobs.contains(command), "{jobs}");
    }
}

#[test]
fn jobs_track_then_show_prints_the_history() {
    let dir = workdir();
    let tracked = run_to_end(jobwarden(dir.path()).args([
        "jobs",
        "track",
        "--execution-id",
        "nightly-42",
        "--submission-id",
        "driver-20261128210232-0000",
        "--name",
        "nightly rollup",
    ]));
    assert!(tracked.status.success(), "{}", text(&tracked));

    let again = run_to_end(jobwarden(dir.path()).args([
        "jobs",
        "track",
        "--execution-id",
        "nightly-42",
        "--submission-id",
        "driver-x",
    ]));
    assert!(!again.status.success());
    assert!(text(&again).contains("already tracked"), "{}", text(&again));

    let listed = text(&run_to_end(
        jobwarden(dir.path()).args(["jobs", "list", "--status", "queued"]),
    ));
    assert!(listed.contains("nightly-42"), "{listed}");

    let shown = run_to_end(jobwarden(dir.path()).args(["jobs", "show", "nightly-42"]));
    let shown_text = text(&shown);
    assert!(shown.status.success(), "{shown_text}");
    assert!(
        shown_text.contains("driver-20261128210232-0000"),
        "{shown_text}"
    );
    assert!(shown_text.contains("(new) -> Queued"), "{shown_text}");

    let missing = run_to_end(jobwarden(dir.path()).args(["jobs", "show", "nope"]));
    assert!(!missing.status.success());
    assert!(text(&missing).contains("no execution \"nope\""));
}

#[test]
fn migrate_applies_the_schema_and_is_repeatable() {
    let dir = workdir();
    let first = run_to_end(jobwarden(dir.path()).arg("migrate"));
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("11 migration(s) applied"),
        "{}",
        text(&first)
    );
    let second = run_to_end(jobwarden(dir.path()).arg("migrate"));
    assert!(
        text(&second).contains("0 migration(s) applied"),
        "{}",
        text(&second)
    );
}
