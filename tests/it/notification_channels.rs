//! The email and Alertmanager channels against the real servers: Python's aiosmtpd (installed
//! by `.ci/smtp.sh`) receives the real binary's mail, Debian's prometheus-alertmanager
//! (`.ci/alertmanager.sh`) its alerts. Each test starts its own server on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobwarden_testkit::{free_port, Answer, SparkServer};
use serde_json::{json, Value};

use crate::helpers::{skip_unless_ci, wait_until};
use crate::notifications::{base_config, Service};

const SINK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smtp_sink.py");

fn runs(program: &Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python that imports aiosmtpd: `$JOBWARDEN_TEST_SMTP_PYTHON`, the venv `.ci/smtp.sh`
/// makes, or `python3`.
fn smtp_python() -> Option<PathBuf> {
    let cache =
        std::env::var("JOBWARDEN_CI_CACHE").unwrap_or_else(|_| "/var/cache/jobwarden-ci".into());
    let candidates = [
        std::env::var("JOBWARDEN_TEST_SMTP_PYTHON")
            .ok()
            .map(PathBuf::from),
        Some(Path::new(&cache).join("aiosmtpd/bin/python3")),
        Some(PathBuf::from("python3")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|python| runs(python, &["-c", "import aiosmtpd"]))
        .or_else(|| {
            skip_unless_ci(
                "the email (aiosmtpd) tests",
                "aiosmtpd is not installed (run `bash .ci/smtp.sh`)",
            );
            None
        })
}

/// Debian's `prometheus-alertmanager`, or `$JOBWARDEN_TEST_ALERTMANAGER`.
fn alertmanager_binary() -> Option<PathBuf> {
    let binary = std::env::var("JOBWARDEN_TEST_ALERTMANAGER")
        .unwrap_or_else(|_| "prometheus-alertmanager".into());
    let binary = PathBuf::from(binary);
    if runs(&binary, &["--version"]) {
        Some(binary)
    } else {
        skip_unless_ci(
            "the Alertmanager tests",
            "Alertmanager is not installed (run `bash .ci/alertmanager.sh`)",
        );
        None
    }
}

/// A child process killed when the test lets go of it.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// aiosmtpd running tests/fixtures/smtp_sink.py: every message it accepts, as a mail client
/// parsed it; files in its state directory make it answer 451 or 550.
struct SmtpSink {
    python: PathBuf,
    port: u16,
    state: tempfile::TempDir,
    process: Option<Process>,
}

impl SmtpSink {
    /// A port for the server, nobody listening on it yet.
    fn reserve(python: &Path) -> SmtpSink {
        SmtpSink {
            python: python.to_owned(),
            port: free_port(),
            state: tempfile::tempdir().unwrap(),
            process: None,
        }
    }

    async fn started(python: &Path) -> SmtpSink {
        let mut sink = SmtpSink::reserve(python);
        sink.start().await;
        sink
    }

    async fn start(&mut self) {
        let child = Command::new(&self.python)
            .arg(SINK)
            .arg(self.port.to_string())
            .arg(self.state.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.process = Some(Process(child));
        let ready = self.state.path().join("ready");
        wait_until(Duration::from_secs(30), "aiosmtpd to listen", || {
            let up = ready.exists();
            async move { up }
        })
        .await;
    }

    /// Requires this login (set before `start`).
    fn require_login(&self, user: &str, password: &str) {
        std::fs::write(
            self.state.path().join("credentials"),
            format!("{user}\n{password}"),
        )
        .unwrap();
    }

    /// Answers every recipient with `451` (`"defer"`) or `550` (`"refuse"`) while set.
    fn answer(&self, control: &str, on: bool) {
        let file = self.state.path().join(control);
        if on {
            std::fs::write(file, "").unwrap();
        } else {
            std::fs::remove_file(file).unwrap();
        }
    }

    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state.path().join("received.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn rejections(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.path().join("rejected.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    async fn wait_for(&self, count: usize) -> Vec<Value> {
        wait_until(Duration::from_secs(60), &format!("{count} emails"), || {
            let n = self.received().len();
            async move { n >= count }
        })
        .await;
        self.received()
    }
}

/// A real Alertmanager on a free loopback port, alone (no cluster peers), with a route that
/// notifies nobody: the test reads what it holds through its API.
struct Alertmanager {
    url: String,
    http: reqwest::Client,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    async fn start(binary: &Path) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        // group_wait 0s: alerts are processed (and shown as active) as soon as they arrive.
        std::fs::write(
            &config,
            "route:\n  receiver: nobody\n  group_wait: 0s\nreceivers:\n  - name: nobody\n",
        )
        .unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg("--cluster.listen-address=")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let alertmanager = Alertmanager {
            url: format!("http://{address}"),
            http: reqwest::Client::new(),
            _process: Process(child),
            _dir: dir,
        };
        let ready = format!("{}/-/ready", alertmanager.url);
        wait_until(Duration::from_secs(30), "Alertmanager to be ready", || {
            let request = alertmanager.http.get(&ready).send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        alertmanager
    }

    /// The alerts it holds (resolved ones are not listed).
    async fn alerts(&self) -> Vec<Value> {
        self.http
            .get(format!("{}/api/v2/alerts", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn wait_for_active(&self, count: usize) -> Vec<Value> {
        wait_until(
            Duration::from_secs(60),
            &format!("{count} active alerts"),
            || async move {
                let alerts = self.alerts().await;
                alerts.len() >= count && alerts.iter().all(|a| a["status"]["state"] == "active")
            },
        )
        .await;
        self.alerts().await
    }
}

/// The config with one channel (its TOML section) and a rule sending `on` to it.
fn write_config(dir: &Path, spark: &SparkServer, name: &str, channel: &str, on: &[&str]) {
    let text = format!(
        "{base}[notifications.channels.{name}]\n{channel}\n\
         [[notifications.rules]]\non = {on:?}\nchannels = [\"{name}\"]\n",
        base = base_config(dir, spark),
    );
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

fn email_channel(port: u16, tls: &str) -> String {
    format!(
        "kind = \"email\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\ntimeout = \"2s\"\n\
         from = \"Jobwarden <jobwarden@example.com>\"\n\
         to = [\"ops@example.com\", \"Data Team <data@example.com>\"]\n"
    )
}

const EVERY_ENDING: [&str; 4] = ["failed", "timed_out", "succeeded", "cancelled"];

async fn until_outbox(service: &Service, state: &str, count: u64) -> Value {
    wait_until(
        Duration::from_secs(60),
        &format!("{count} {state} messages"),
        || async move { service.outbox(state).await["counts"][state] == count },
    )
    .await;
    service.outbox(state).await
}

async fn until_pending_error(service: &Service, needle: &str) -> Value {
    wait_until(
        Duration::from_secs(60),
        &format!("a pending message whose last error has {needle:?}"),
        || async move {
            service.outbox("pending").await["messages"]
                .as_array()
                .is_some_and(|ms| {
                    ms.iter()
                        .any(|m| m["last_error"].as_str().is_some_and(|e| e.contains(needle)))
                })
        },
    )
    .await;
    service.outbox("pending").await
}

/// The JSON an email carries for machines, after its text.
fn machine_part(mail: &Value) -> Value {
    let body = mail["body"].as_str().unwrap();
    let (_, json) = body
        .split_once("the webhook body:\n")
        .unwrap_or_else(|| panic!("no JSON part in {body}"));
    serde_json::from_str(json.trim()).unwrap()
}

#[actix_rt::test]
async fn a_failed_job_is_mailed_to_every_recipient_under_its_headline_with_its_id_in_the_headers() {
    let Some(python) = smtp_python() else {
        return;
    };
    let sink = SmtpSink::started(&python).await;
    let spark = SparkServer::start().await;
    spark.answer("driver-f1", Answer::State("ERROR"));
    let dir = tempfile::tempdir().unwrap();
    let channel = email_channel(sink.port, "none");
    write_config(dir.path(), &spark, "mail", &channel, &EVERY_ENDING);
    let service = Service::start(dir.path());
    service.track("f1", "driver-f1", "nightly-load").await;

    let mail = sink.wait_for(1).await.remove(0);
    let delivered = until_outbox(&service, "delivered", 1).await;
    let id = delivered["messages"][0]["message_id"].as_str().unwrap();
    let reason = delivered["messages"][0]["notification"]["reason"]
        .as_str()
        .unwrap();
    let headline = format!(
        "nightly-load (f1) failed: {}",
        reason.lines().next().unwrap()
    );
    assert_eq!(mail["subject"], headline.as_str());
    assert_eq!(mail["mail_from"], "jobwarden@example.com");
    assert_eq!(
        mail["rcpt_tos"],
        json!(["ops@example.com", "data@example.com"])
    );
    assert_eq!(mail["to"], "ops@example.com, Data Team <data@example.com>");
    assert_eq!(mail["jobwarden_message_id"], id);
    assert_eq!(mail["message_id"], format!("<{id}@jobwarden>").as_str());
    assert_eq!(mail["content_type"], "text/plain");
    let body = mail["body"].as_str().unwrap();
    assert!(body.starts_with(&headline), "{body}");
    let machine = machine_part(&mail);
    assert_eq!(machine["id"], id);
    assert_eq!(machine["event"], "failed");
    assert_eq!(machine["job"]["id"], "f1");
    assert_eq!(machine["reason"], reason);
    assert_eq!(sink.received().len(), 1, "one email for one failure");
}

#[actix_rt::test]
async fn mail_written_while_the_smtp_server_is_down_is_all_delivered_once_it_is_up() {
    let Some(python) = smtp_python() else {
        return;
    };
    let mut sink = SmtpSink::reserve(&python);
    let spark = SparkServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let channel = email_channel(sink.port, "none");
    write_config(dir.path(), &spark, "mail", &channel, &EVERY_ENDING);
    let service = Service::start(dir.path());
    for i in 0..3 {
        spark.answer(&format!("driver-d{i}"), Answer::State("FINISHED"));
        service
            .track(&format!("d{i}"), &format!("driver-d{i}"), "hourly")
            .await;
    }
    until_pending_error(&service, "Connection refused").await;

    sink.start().await;
    sink.wait_for(3).await;
    let delivered = until_outbox(&service, "delivered", 3).await;
    let mails = sink.received();
    let machine: Vec<Value> = mails.iter().map(machine_part).collect();
    let mut jobs: Vec<&str> = machine
        .iter()
        .map(|m| m["job"]["id"].as_str().unwrap())
        .collect();
    jobs.sort_unstable();
    assert_eq!(jobs, ["d0", "d1", "d2"], "every message, each once");
    let mut ids: Vec<&str> = delivered["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut mailed: Vec<&str> = mails
        .iter()
        .map(|m| m["jobwarden_message_id"].as_str().unwrap())
        .collect();
    mailed.sort_unstable();
    assert_eq!(mailed, ids, "each email under its outbox message's id");
}

#[actix_rt::test]
async fn a_mail_server_answering_4xx_is_tried_again_until_it_accepts() {
    let Some(python) = smtp_python() else {
        return;
    };
    let sink = SmtpSink::started(&python).await;
    sink.answer("defer", true);
    let spark = SparkServer::start().await;
    spark.answer("driver-t1", Answer::State("FINISHED"));
    let dir = tempfile::tempdir().unwrap();
    let channel = email_channel(sink.port, "none");
    write_config(dir.path(), &spark, "mail", &channel, &EVERY_ENDING);
    let service = Service::start(dir.path());
    service.track("t1", "driver-t1", "hourly").await;
    wait_until(Duration::from_secs(30), "two deferred attempts", || {
        let n = sink.rejections().len();
        async move { n >= 2 }
    })
    .await;
    let pending = until_pending_error(&service, "SMTP 451").await;
    assert!(
        pending["messages"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("try again later"),
        "the server's answer is kept: {pending}"
    );

    sink.answer("defer", false);
    sink.wait_for(1).await;
    until_outbox(&service, "delivered", 1).await;
    assert_eq!(machine_part(&sink.received()[0])["job"]["id"], "t1");
}

#[actix_rt::test]
async fn a_mail_server_refusing_with_5xx_fails_the_message_for_good_with_its_answer() {
    let Some(python) = smtp_python() else {
        return;
    };
    let sink = SmtpSink::started(&python).await;
    sink.answer("refuse", true);
    let spark = SparkServer::start().await;
    spark.answer("driver-r1", Answer::State("FINISHED"));
    let dir = tempfile::tempdir().unwrap();
    let channel = email_channel(sink.port, "none");
    write_config(dir.path(), &spark, "mail", &channel, &EVERY_ENDING);
    let service = Service::start(dir.path());
    service.track("r1", "driver-r1", "hourly").await;

    let failed = until_outbox(&service, "failed", 1).await;
    let message = &failed["messages"][0];
    let error = message["last_error"].as_str().unwrap();
    assert!(error.contains("SMTP 550"), "{error}");
    assert!(
        error.contains("mailbox unavailable"),
        "the server's answer is kept: {error}"
    );
    assert_eq!(message["attempts"], 1, "a 5xx is not retried: {message}");
    assert_eq!(sink.rejections().len(), 1);
    assert!(sink.received().is_empty());
}

#[actix_rt::test]
async fn a_mail_server_requiring_a_login_gets_the_channels_credentials() {
    let Some(python) = smtp_python() else {
        return;
    };
    let mut sink = SmtpSink::reserve(&python);
    sink.require_login("jobwarden", "s3cret-smtp");
    sink.start().await;
    let spark = SparkServer::start().await;
    spark.answer("driver-l1", Answer::State("FINISHED"));
    let dir = tempfile::tempdir().unwrap();
    let channel = format!(
        "{}username = \"jobwarden\"\npassword = \"s3cret-smtp\"\n",
        email_channel(sink.port, "none")
    );
    write_config(dir.path(), &spark, "mail", &channel, &EVERY_ENDING);
    let service = Service::start(dir.path());
    service.track("l1", "driver-l1", "hourly").await;

    let mail = sink.wait_for(1).await.remove(0);
    assert_eq!(mail["login"], "jobwarden");
    until_outbox(&service, "delivered", 1).await;
}

#[actix_rt::test]
async fn a_rejected_login_keeps_the_message_for_when_the_credentials_are_fixed() {
    let Some(python) = smtp_python() else {
        return;
    };
    let mut sink = SmtpSink::reserve(&python);
    sink.require_login("jobwarden", "the-new-password");
    sink.start().await;
    let spark = SparkServer::start().await;
    spark.answer("driver-w1", Answer::State("FINISHED"));
    let dir = tempfile::tempdir().unwrap();
    let channel = format!(
        "{}username = \"jobwarden\"\npassword = \"the-old-password\"\n",
        email_channel(sink.port, "none")
    );
    write_config(dir.path(), &spark, "mail", &channel, &EVERY_ENDING);
    let service = Service::start(dir.path());
    service.track("w1", "driver-w1", "hourly").await;

    // 535 is a 5xx, but it refuses the login, not the message: kept and retried.
    until_pending_error(
        &service,
        "SMTP 535: 5.7.8 Authentication credentials invalid",
    )
    .await;
    wait_until(Duration::from_secs(30), "a second attempt", || async {
        service.outbox("pending").await["messages"][0]["attempts"]
            .as_i64()
            .is_some_and(|n| n >= 2)
    })
    .await;
    assert!(sink.received().is_empty());
}

#[actix_rt::test]
async fn starttls_to_a_server_that_does_not_offer_it_sends_nothing_and_keeps_the_message() {
    let Some(python) = smtp_python() else {
        return;
    };
    // aiosmtpd without a certificate does not offer STARTTLS.
    let sink = SmtpSink::started(&python).await;
    let spark = SparkServer::start().await;
    spark.answer("driver-p1", Answer::State("FINISHED"));
    let dir = tempfile::tempdir().unwrap();
    let channel = email_channel(sink.port, "starttls");
    write_config(dir.path(), &spark, "mail", &channel, &EVERY_ENDING);
    let service = Service::start(dir.path());
    service.track("p1", "driver-p1", "hourly").await;

    until_pending_error(&service, "STARTTLS is not supported").await;
    assert!(
        sink.received().is_empty() && sink.rejections().is_empty(),
        "nothing was sent in clear"
    );
}

fn alertmanager_channel(url: &str) -> String {
    format!(
        "kind = \"alertmanager\"\nurl = \"{url}\"\nresolve_after = \"2h\"\nseverity = \"critical\"\n\
         labels = {{ team = \"data\" }}\ntimeout = \"2s\"\n"
    )
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

#[actix_rt::test]
async fn a_failed_job_fires_an_alert_in_alertmanager_that_ends_by_itself_after_resolve_after() {
    let Some(binary) = alertmanager_binary() else {
        return;
    };
    let alertmanager = Alertmanager::start(&binary).await;
    let spark = SparkServer::start().await;
    spark.answer("driver-a1", Answer::State("ERROR"));
    let dir = tempfile::tempdir().unwrap();
    let channel = alertmanager_channel(&alertmanager.url);
    write_config(
        dir.path(),
        &spark,
        "alerts",
        &channel,
        &["failed", "timed_out"],
    );
    let service = Service::start(dir.path());
    service.track("a1", "driver-a1", "nightly-load").await;

    let alerts = alertmanager.wait_for_active(1).await;
    let sent_by = Utc::now();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    let delivered = until_outbox(&service, "delivered", 1).await;
    let notification = &delivered["messages"][0]["notification"];
    let mut labels = json!({
        "alertname": "JobwardenJobFailed",
        "job_id": "a1",
        "job_name": "nightly-load",
        "severity": "critical",
        "team": "data",
    });
    if let Some(cluster) = notification["job"]["cluster"].as_str() {
        labels["cluster"] = json!(cluster);
    }
    assert_eq!(alert["labels"], labels);
    let reason = notification["reason"].as_str().unwrap();
    assert_eq!(
        alert["annotations"]["summary"],
        format!(
            "nightly-load (a1) failed: {}",
            reason.lines().next().unwrap()
        )
        .as_str()
    );
    assert_eq!(alert["annotations"]["description"], reason);
    let starts = time(&alert["startsAt"]) - time(&notification["at"]);
    assert!(
        starts.abs() < chrono::Duration::milliseconds(1),
        "starts when the job failed (Alertmanager keeps milliseconds): {starts}"
    );
    let ends_in = time(&alert["endsAt"]) - sent_by;
    assert!(
        ends_in > chrono::Duration::minutes(119) && ends_in <= chrono::Duration::hours(2),
        "ends resolve_after (2h) after it was sent: in {ends_in}"
    );
}

#[actix_rt::test]
async fn a_storm_reaches_alertmanager_as_an_alert_per_listed_job_and_one_counting_the_rest() {
    const JOBS: usize = 7;
    let Some(binary) = alertmanager_binary() else {
        return;
    };
    let alertmanager = Alertmanager::start(&binary).await;
    let spark = SparkServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let channel = alertmanager_channel(&alertmanager.url);
    write_config(dir.path(), &spark, "alerts", &channel, &["failed"]);
    let service = Service::start(dir.path());
    for i in 0..JOBS {
        service
            .track(&format!("s{i}"), &format!("driver-s{i}"), "nightly")
            .await;
    }
    // The cluster fails them all at once.
    for i in 0..JOBS {
        spark.answer(&format!("driver-s{i}"), Answer::State("ERROR"));
    }
    until_outbox(&service, "delivered", JOBS as u64).await;

    // storm_list = 3: three jobs alerted one by one, one alert for the storm.
    let alerts = alertmanager.wait_for_active(4).await;
    let mut names: Vec<&str> = alerts
        .iter()
        .map(|a| a["labels"]["alertname"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "JobwardenFailureStorm",
            "JobwardenJobFailed",
            "JobwardenJobFailed",
            "JobwardenJobFailed"
        ]
    );
    let storm = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "JobwardenFailureStorm")
        .unwrap();
    let summary = storm["annotations"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("7 jobs failed"), "{summary}");
    let description = storm["annotations"]["description"].as_str().unwrap();
    assert!(description.contains("…and 4 more"), "{description}");
    assert_eq!(storm["labels"]["severity"], "critical");
}

#[actix_rt::test]
async fn a_stuck_soon_warning_fires_in_alertmanager_and_is_resolved_when_spark_confirms_the_job() {
    let Some(binary) = alertmanager_binary() else {
        return;
    };
    let alertmanager = Alertmanager::start(&binary).await;
    let spark = SparkServer::start().await;
    spark.answer("driver-w1", Answer::State("RUNNING"));
    let dir = tempfile::tempdir().unwrap();
    let base = base_config(dir.path(), &spark).replace(
        "poll_interval = \"1s\"\n",
        "poll_interval = \"1s\"\nstuck_timeout = \"8s\"\n",
    );
    let text = format!(
        "{base}[notifications.channels.alerts]\n{channel}\n\
         [[notifications.rules]]\non = [\"stuck_soon\"]\nchannels = [\"alerts\"]\nresolved = true\n\
         [store]\nsweep_interval = \"1s\"\n",
        channel = alertmanager_channel(&alertmanager.url),
    );
    std::fs::write(dir.path().join("config.toml"), text).unwrap();
    let service = Service::start(dir.path());
    service.track("w1", "driver-w1", "nightly-load").await;
    wait_until(Duration::from_secs(30), "w1 running", || {
        let asked = spark.status_requests("driver-w1");
        async move { asked >= 2 }
    })
    .await;

    // The master stops knowing the driver: half of stuck_timeout later, a warning fires.
    spark.answer("driver-w1", Answer::UnknownId);
    let alerts = alertmanager.wait_for_active(1).await;
    assert_eq!(alerts[0]["labels"]["alertname"], "JobwardenJobStuckSoon");
    assert_eq!(alerts[0]["labels"]["job_id"], "w1");

    // Spark confirms it again: the same alert is sent ending now, and Alertmanager drops it.
    spark.answer("driver-w1", Answer::State("RUNNING"));
    wait_until(Duration::from_secs(60), "the alert resolved", || async {
        alertmanager
            .alerts()
            .await
            .iter()
            .all(|a| a["labels"]["alertname"] != "JobwardenJobStuckSoon")
    })
    .await;
    let delivered = until_outbox(&service, "delivered", 2).await;
    let events: Vec<&str> = delivered["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["event"].as_str().unwrap())
        .collect();
    assert!(
        events.contains(&"resolved") && events.contains(&"stuck_soon"),
        "{events:?}"
    );
}
