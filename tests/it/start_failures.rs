//! A start that fails says one clear line: through the real binary, each way `jobwarden run`
//! can fail to start ends with its documented exit code and exactly one `jobwarden: ` line that
//! names the setting and what to do, never a panic.

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::binary::{jobwarden, workdir, Running};
use crate::helpers::{require_all_backends, socket_of};

/// A failure that needs no waiting must be reported well within this; a start that waits
/// instead (a refusal taken for an outage) fails the test here rather than hanging it.
const AT_ONCE: Duration = Duration::from_secs(20);

/// A failed start as the operator sees it.
struct Failure {
    /// The one `jobwarden: ` line, without that prefix.
    message: String,
    /// Everything printed, for assertion messages.
    log: String,
    took: Duration,
}

/// Runs `jobwarden run` to its end (killing it after `limit`) and checks what every failed
/// start must look like: the exit code, no panic, and one `jobwarden: ` line that says each
/// thing once.
fn failed_start(cmd: Command, limit: Duration, code: i32) -> Failure {
    let started = Instant::now();
    let (status, log) = Running::start(cmd).wait(limit);
    let took = started.elapsed();
    assert_eq!(status.code(), Some(code), "{log}");
    for forbidden in ["panicked", "stack backtrace", "there is no reactor running"] {
        assert!(!log.contains(forbidden), "{forbidden:?} printed:\n{log}");
    }
    let lines: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("jobwarden: "))
        .collect();
    assert_eq!(lines.len(), 1, "one `jobwarden: ` line expected:\n{log}");
    let message = lines[0].to_owned();
    // An error's cause printed again after a message that already holds it.
    let clauses: Vec<&str> = message
        .split([':', ';'])
        .map(str::trim)
        .filter(|c| c.len() > 12)
        .collect();
    for (i, clause) in clauses.iter().enumerate() {
        assert!(
            !clauses[..i].contains(clause),
            "{clause:?} said twice in: {message}"
        );
    }
    Failure { message, log, took }
}

/// A loopback port nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test server `var` names (else `default`), or `None` with the reason printed when it
/// does not answer and CI does not require it.
fn test_server(var: &str, default: &str) -> Option<url::Url> {
    let raw = std::env::var(var).unwrap_or_else(|_| default.into());
    let addr = socket_of(&raw);
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => Some(url::Url::parse(&raw).unwrap()),
        Err(e) if !require_all_backends() => {
            eprintln!(
                "SKIPPED: test database {addr} unreachable ({e}); set CI=1 to make this a failure"
            );
            None
        }
        Err(e) => panic!("test database {addr} unreachable: {e}"),
    }
}

#[test]
fn http_port_in_use_exits_4_naming_http_bind_and_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = workdir();
    let mut cmd = jobwarden(dir.path());
    cmd.env("JOBWARDEN__HTTP__BIND", &address);
    let failure = failed_start(cmd, AT_ONCE, 4);
    let message = &failure.message;
    assert!(message.contains("http.bind"), "{message}");
    assert!(message.contains(&address), "{message}");
    assert!(message.contains("pick another"), "{message}");
}

#[test]
fn database_unreachable_past_startup_wait_exits_3_naming_the_wait_and_url() {
    let url = format!("postgres://postgres@127.0.0.1:{}/test", closed_port());
    let dir = workdir();
    let mut cmd = jobwarden(dir.path());
    cmd.env("JOBWARDEN__DATABASE__URL", &url)
        .env("JOBWARDEN__DATABASE__STARTUP_WAIT", "1s")
        .env("JOBWARDEN__DATABASE__CONNECT_TIMEOUT", "500ms");
    let failure = failed_start(cmd, Duration::from_secs(30), 3);
    let message = &failure.message;
    assert!(message.contains("database.startup_wait = 1s"), "{message}");
    assert!(
        message.contains(&format!("database.url = {url}")),
        "{message}"
    );
    assert!(message.contains("start the database"), "{message}");
    assert!(
        failure.took >= Duration::from_secs(1),
        "gave up before database.startup_wait ({:?}):\n{}",
        failure.took,
        failure.log
    );
}

#[test]
fn unknown_postgres_database_exits_3_at_once_saying_to_create_it() {
    let Some(mut url) = test_server(
        "JOBWARDEN_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) else {
        return;
    };
    // The server refuses a database it does not have: waiting cannot fix that.
    url.set_path("/jw_no_such_db");
    let dir = workdir();
    let mut cmd = jobwarden(dir.path());
    cmd.env("JOBWARDEN__DATABASE__URL", url.as_str())
        .env("JOBWARDEN__DATABASE__STARTUP_WAIT", "5m");
    let message = failed_start(cmd, AT_ONCE, 3).message;
    assert!(message.contains("database.url"), "{message}");
    assert!(message.contains("jw_no_such_db"), "{message}");
    assert!(message.contains("create the database"), "{message}");
}

#[test]
fn mariadb_access_denied_exits_3_at_once_saying_to_fix_user_or_password() {
    let Some(mut url) = test_server(
        "JOBWARDEN_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
    ) else {
        return;
    };
    url.set_username("nobody").unwrap();
    url.set_password(Some("wrong")).unwrap();
    let dir = workdir();
    let mut cmd = jobwarden(dir.path());
    cmd.env("JOBWARDEN__DATABASE__URL", url.as_str())
        .env("JOBWARDEN__DATABASE__STARTUP_WAIT", "5m");
    let failure = failed_start(cmd, AT_ONCE, 3);
    let message = &failure.message;
    assert!(message.contains("database.url"), "{message}");
    assert!(message.contains("user name or password"), "{message}");
    assert!(message.contains("nobody:****@"), "{message}");
    assert!(!failure.log.contains(":wrong@"), "{}", failure.log);
}

#[test]
fn unwritable_sqlite_path_exits_3_naming_database_url_and_the_directory() {
    let url = "sqlite:///nonexistent-dir/x/jw.db?mode=rwc";
    let dir = workdir();
    let mut cmd = jobwarden(dir.path());
    cmd.env("JOBWARDEN__DATABASE__URL", url)
        .env("JOBWARDEN__DATABASE__STARTUP_WAIT", "5m");
    let message = failed_start(cmd, AT_ONCE, 3).message;
    assert!(
        message.contains(&format!("database.url = {url}")),
        "{message}"
    );
    assert!(
        message.contains("directory exists and is writable"),
        "{message}"
    );
}

#[test]
fn kafka_property_librdkafka_refuses_exits_5_naming_it_and_the_section() {
    let dir = workdir();
    let config = dir.path().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[kafka.properties]\n\"no.such.property\" = \"x\"\n");
    std::fs::write(&config, text).unwrap();
    let mut cmd = jobwarden(dir.path());
    // Port 1: were the property accepted, the failure would be somewhere else entirely.
    cmd.env("JOBWARDEN__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1");
    let message = failed_start(cmd, AT_ONCE, 5).message;
    assert!(message.contains("[kafka]"), "{message}");
    assert!(message.contains("no.such.property"), "{message}");
    assert!(message.contains("fix or remove it"), "{message}");
}

#[test]
fn spark_setting_refused_when_building_the_client_exits_2_naming_it() {
    // Passes the configuration check (it starts with http://) but is no URL the client takes.
    let dir = workdir();
    let mut cmd = jobwarden(dir.path());
    cmd.env("JOBWARDEN__SPARK__MASTER_UI_URL", "http://");
    let message = failed_start(cmd, AT_ONCE, 2).message;
    assert!(message.contains("spark.master_ui_url"), "{message}");
    assert!(message.contains("[spark]"), "{message}");
}

#[test]
fn a_cluster_capacity_of_zero_exits_2_naming_max_running() {
    let dir = workdir();
    let mut cmd = jobwarden(dir.path());
    cmd.env("JOBWARDEN__SPARK__MAX_RUNNING", "0");
    // The first line says the configuration is refused; the lines under it name each key.
    let log = failed_start(cmd, AT_ONCE, 2).log;
    assert!(log.contains("spark.max_running = 0"), "{log}");
    assert!(log.contains("at least 1"), "{log}");
}

#[test]
fn a_queue_aging_of_zero_exits_2_naming_submit_aging() {
    let dir = workdir();
    let mut cmd = jobwarden(dir.path());
    cmd.env("JOBWARDEN__SUBMIT__AGING", "0s");
    let log = failed_start(cmd, AT_ONCE, 2).log;
    assert!(log.contains("submit.aging"), "{log}");
}
