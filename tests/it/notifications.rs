//! Notifications end to end, with the real binary and real receivers over HTTP: a failed job
//! is announced with a signature the receiver can verify, a receiver that is down or refuses
//! loses nothing, a kill -9 between commit and delivery loses nothing, and a storm of failures
//! is one message per channel.

use std::time::Duration;

use jobwarden_testkit::receiver::{Mode, Receiver, SECRET};
use jobwarden_testkit::{Answer, SparkServer};
use serde_json::{json, Value};

use crate::binary::{jobwarden, jobwarden_in, text, Running};
use crate::helpers::wait_until;

/// The database, the Spark server and `[notifications]` with short timings (storms from 5
/// failures, 3 listed), before any channel or rule.
pub(crate) fn base_config(dir: &std::path::Path, spark: &SparkServer) -> String {
    format!(
        "[database]\nurl = \"sqlite://{db}?mode=rwc\"\n\
         [spark]\nrest_url = \"{spark}\"\nmaster_ui_url = \"{spark}\"\nstatus_source = \"rest\"\npoll_interval = \"1s\"\nmax_concurrent_polls = 16\n\
         [notifications]\ngroup_wait = \"5s\"\nstorm_threshold = 5\nstorm_list = 3\ncheck_every = \"100ms\"\n",
        db = dir.join("jw.db").display(),
        spark = spark.url()
    )
}

/// A config with one webhook channel per receiver (`[notifications.channels.<name>]`) and a
/// rule sending every ending to all of them.
fn config(dir: &std::path::Path, spark: &SparkServer, channels: &[(&str, &str, &str)]) {
    let mut text = base_config(dir, spark);
    let mut names = Vec::new();
    for (name, kind, url) in channels {
        names.push(format!("\"{name}\""));
        text.push_str(&format!(
            "[notifications.channels.{name}]\nkind = \"{kind}\"\nurl = \"{url}\"\ntimeout = \"1s\"\n"
        ));
        if *kind == "webhook" {
            text.push_str(&format!("secret = \"{SECRET}\"\n"));
        }
    }
    text.push_str(&format!(
        "[[notifications.rules]]\non = [\"failed\", \"timed_out\", \"succeeded\", \"cancelled\"]\nchannels = [{}]\n",
        names.join(", ")
    ));
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

pub(crate) struct Service {
    pub(crate) running: Running,
    base: String,
    http: reqwest::Client,
}

impl Service {
    pub(crate) fn start(dir: &std::path::Path) -> Service {
        let mut running = jobwarden_in(dir).start();
        Service {
            base: running.http_url(),
            running,
            http: reqwest::Client::new(),
        }
    }

    pub(crate) async fn track(&self, id: &str, driver: &str, name: &str) {
        let answer = self
            .http
            .post(format!("{}/api/v1/jobs", self.base))
            .json(&json!({"execution_id": id, "submission_id": driver, "job_name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 201);
    }

    pub(crate) async fn outbox(&self, state: &str) -> Value {
        self.http
            .get(format!("{}/api/v1/notifications?state={state}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

async fn until_received(receiver: &Receiver, count: usize) {
    wait_until(
        Duration::from_secs(60),
        &format!("{count} messages"),
        || {
            let n = receiver.got().len();
            async move { n >= count }
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_failed_job_is_announced_once_with_a_signature_the_receiver_verifies() {
    let spark = SparkServer::start().await;
    spark.answer("driver-f1", Answer::State("ERROR"));
    let receiver = Receiver::start(Mode::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &spark, &[("ops", "webhook", &receiver.url)]);
    let service = Service::start(dir.path());
    service.track("f1", "driver-f1", "nightly-load").await;
    until_received(&receiver, 1).await;
    let got = receiver.got();
    let message = &got[0];
    assert!(message.signature_ok, "the signature verifies: {message:?}");
    assert_eq!(message.body["event"], "failed");
    assert_eq!(message.body["job"]["id"], "f1");
    assert_eq!(message.body["job"]["name"], "nightly-load");
    assert_eq!(message.body["to_status"], "Failed");
    assert!(
        message.body["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{}",
        message.body
    );
    assert_eq!(
        message.body["id"], message.id,
        "the body and the header carry one id"
    );
    wait_until(Duration::from_secs(30), "the delivery recorded", || {
        let service = &service;
        async move { service.outbox("delivered").await["counts"]["delivered"] == 1 }
    })
    .await;
    assert_eq!(receiver.got().len(), 1, "announced once");
}

#[actix_rt::test]
async fn a_receiver_that_was_down_gets_every_message_and_retries_share_their_ids() {
    let spark = SparkServer::start().await;
    for i in 0..3 {
        spark.answer(&format!("driver-s{i}"), Answer::State("FINISHED"));
    }
    let receiver = Receiver::start(Mode::Status(503)).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &spark, &[("ops", "webhook", &receiver.url)]);
    let service = Service::start(dir.path());
    for i in 0..3 {
        service
            .track(&format!("s{i}"), &format!("driver-s{i}"), "hourly")
            .await;
    }
    // Several go out at once, so a request seen is not yet an attempt recorded.
    wait_until(Duration::from_secs(30), "a refusal recorded", || {
        let service = &service;
        async move {
            service.outbox("pending").await["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| {
                    m["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("HTTP 503"))
                })
        }
    })
    .await;
    assert!(
        receiver.got().is_empty(),
        "nothing accepted while it refuses"
    );
    receiver.set(Mode::Accept);
    until_received(&receiver, 3).await;
    wait_until(Duration::from_secs(30), "every message delivered", || {
        let service = &service;
        async move { service.outbox("delivered").await["counts"]["delivered"] == 3 }
    })
    .await;
    let got = receiver.got();
    let mut ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        3,
        "three messages, each delivered under its own id: {got:?}"
    );
}

#[actix_rt::test]
async fn a_refusing_receiver_fails_the_message_for_good_with_its_answer() {
    let spark = SparkServer::start().await;
    spark.answer("driver-r1", Answer::State("FINISHED"));
    let receiver = Receiver::start(Mode::Status(400)).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &spark, &[("ops", "webhook", &receiver.url)]);
    let service = Service::start(dir.path());
    service.track("r1", "driver-r1", "hourly").await;
    wait_until(Duration::from_secs(30), "the message to be failed", || {
        let service = &service;
        async move { service.outbox("failed").await["counts"]["failed"] == 1 }
    })
    .await;
    let failed = service.outbox("failed").await;
    let error = failed["messages"][0]["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("HTTP 400"), "{error}");
    assert!(
        error.contains("bad payload"),
        "the receiver's answer is kept: {error}"
    );
    assert_eq!(receiver.requests(), 1, "a 4xx is not retried");
}

#[actix_rt::test]
async fn a_receiver_refusing_the_secret_gets_the_message_once_the_secret_is_right() {
    let spark = SparkServer::start().await;
    spark.answer("driver-k1", Answer::State("FINISHED"));
    // A secret just rotated on one side only: 401 until the other side follows.
    let receiver = Receiver::start(Mode::Status(401)).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &spark, &[("ops", "webhook", &receiver.url)]);
    let service = Service::start(dir.path());
    service.track("k1", "driver-k1", "hourly").await;
    wait_until(Duration::from_secs(30), "a few 401 answers", || {
        let n = receiver.requests();
        async move { n >= 2 }
    })
    .await;
    let failed = service.outbox("failed").await;
    assert_eq!(
        failed["counts"]["failed"].as_u64().unwrap_or(0),
        0,
        "a 401 is the channel's fault, not the message's: {failed}"
    );
    receiver.set(Mode::Accept);
    until_received(&receiver, 1).await;
}

/// A message failed for good by a receiver answering 400; the receiver then accepts.
async fn a_failed_message(id: &str) -> (SparkServer, Receiver, tempfile::TempDir, Service) {
    let spark = SparkServer::start().await;
    spark.answer(&format!("driver-{id}"), Answer::State("FINISHED"));
    let receiver = Receiver::start(Mode::Status(400)).await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &spark, &[("ops", "webhook", &receiver.url)]);
    let service = Service::start(dir.path());
    service.track(id, &format!("driver-{id}"), "hourly").await;
    wait_until(Duration::from_secs(30), "the message to be failed", || {
        let service = &service;
        async move { service.outbox("failed").await["counts"]["failed"] == 1 }
    })
    .await;
    receiver.set(Mode::Accept);
    (spark, receiver, dir, service)
}

#[actix_rt::test]
async fn a_failed_message_resent_from_the_command_line_is_delivered_under_its_id() {
    let (_spark, receiver, dir, service) = a_failed_message("rs1").await;
    let failed_id = service.outbox("failed").await["messages"][0]["message_id"].clone();
    let output = jobwarden(dir.path())
        .args([
            "notifications",
            "resend",
            "--failed",
            "--channel",
            "ops",
            "--since",
            "1h",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("1 failed message(s) back in the outbox"),
        "{stdout}"
    );
    until_received(&receiver, 1).await;
    assert_eq!(
        receiver.got()[0].id,
        failed_id.as_str().unwrap(),
        "the same id as before"
    );
}

#[actix_rt::test]
async fn the_api_resends_failed_messages_and_refuses_a_since_it_cannot_read() {
    let (_spark, receiver, _dir, service) = a_failed_message("rs2").await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/notifications/resend", service.base);
    let refused = http
        .post(&url)
        .json(&json!({"since": "yesterday-ish"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let other = http
        .post(&url)
        .json(&json!({"channel": "elsewhere"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.json::<Value>().await.unwrap()["resent"],
        0,
        "another channel's failures only"
    );
    let resent = http
        .post(&url)
        .json(&json!({"channel": "ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resent.json::<Value>().await.unwrap()["resent"], 1);
    until_received(&receiver, 1).await;
}

#[actix_rt::test]
async fn a_hanging_receiver_delays_only_its_own_channel() {
    let spark = SparkServer::start().await;
    spark.answer("driver-h1", Answer::State("FINISHED"));
    let stuck = Receiver::start(Mode::Hang).await;
    let healthy = Receiver::start(Mode::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    config(
        dir.path(),
        &spark,
        &[
            ("stuck", "webhook", &stuck.url),
            ("healthy", "webhook", &healthy.url),
        ],
    );
    let service = Service::start(dir.path());
    service.track("h1", "driver-h1", "hourly").await;
    until_received(&healthy, 1).await;
    wait_until(
        Duration::from_secs(30),
        "the healthy delivery recorded",
        || {
            let service = &service;
            async move { service.outbox("delivered").await["counts"]["delivered"] == 1 }
        },
    )
    .await;
    assert!(stuck.got().is_empty());
    let pending = service.outbox("pending").await;
    assert_eq!(pending["counts"]["pending"], 1, "{pending}");
    assert_eq!(pending["messages"][0]["channel"], "stuck");
}

#[actix_rt::test]
async fn a_message_committed_before_a_kill_is_delivered_after_the_restart() {
    let spark = SparkServer::start().await;
    spark.answer("driver-k1", Answer::State("ERROR"));
    // Nobody listens yet: the address is reserved and handed to the receiver later.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let dir = tempfile::tempdir().unwrap();
    config(
        dir.path(),
        &spark,
        &[("ops", "webhook", &format!("http://{address}/hook"))],
    );
    let service = Service::start(dir.path());
    service.track("k1", "driver-k1", "nightly").await;
    wait_until(Duration::from_secs(30), "a failed delivery attempt", || {
        let service = &service;
        async move {
            service.outbox("pending").await["messages"][0]["attempts"]
                .as_i64()
                .unwrap_or(0)
                >= 1
        }
    })
    .await;
    service.running.signal("KILL");
    drop(service);
    let receiver = Receiver::on(std::net::TcpListener::bind(address).unwrap(), Mode::Accept).await;
    let service = Service::start(dir.path());
    until_received(&receiver, 1).await;
    assert_eq!(receiver.got()[0].body["job"]["id"], "k1");
    wait_until(Duration::from_secs(30), "the delivery recorded", || {
        let service = &service;
        async move { service.outbox("delivered").await["counts"]["delivered"] == 1 }
    })
    .await;
}

#[actix_rt::test]
async fn five_hundred_failures_in_one_cycle_are_one_grouped_message_per_channel() {
    const JOBS: usize = 500;
    let spark = SparkServer::start().await;
    let webhook = Receiver::start(Mode::Accept).await;
    let chat = Receiver::start(Mode::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    config(
        dir.path(),
        &spark,
        &[
            ("ops", "webhook", &webhook.url),
            ("chat", "slack", &chat.url),
        ],
    );
    for i in 0..JOBS {
        spark.answer(&format!("driver-m{i}"), Answer::State("RUNNING"));
    }
    let service = Service::start(dir.path());
    for i in 0..JOBS {
        service
            .track(&format!("m{i:03}"), &format!("driver-m{i}"), "nightly")
            .await;
    }
    // Every job is running and polled at every cycle: none is backing off.
    let asked: Vec<usize> = (0..JOBS)
        .map(|i| spark.status_requests(&format!("driver-m{i}")))
        .collect();
    wait_until(
        Duration::from_secs(60),
        "a cycle over every running job",
        || {
            let done = (0..JOBS).all(|i| spark.status_requests(&format!("driver-m{i}")) > asked[i]);
            async move { done }
        },
    )
    .await;
    // The cluster fails them all at once.
    for i in 0..JOBS {
        spark.answer(&format!("driver-m{i}"), Answer::State("ERROR"));
    }
    until_received(&webhook, 1).await;
    until_received(&chat, 1).await;
    wait_until(Duration::from_secs(60), "every failure delivered", || {
        let service = &service;
        async move { service.outbox("delivered").await["counts"]["delivered"] == (2 * JOBS) as u64 }
    })
    .await;
    let storm = &webhook.got()[0];
    let summary: Vec<String> = webhook
        .got()
        .iter()
        .map(|r| format!("{} {}", r.body["event"], r.body["count"]))
        .collect();
    assert_eq!(
        webhook.got().len(),
        1,
        "one message for the storm: {summary:?}"
    );
    assert_eq!(chat.got().len(), 1, "one chat message for the storm");
    assert_eq!(storm.body["event"], "storm");
    assert_eq!(storm.body["count"], JOBS);
    assert_eq!(storm.body["jobs"].as_array().unwrap().len(), 3);
    assert!(storm.signature_ok);
    let text = chat.got()[0].body["text"].as_str().unwrap().to_owned();
    assert!(text.starts_with("500 jobs failed"), "{text}");
    assert!(text.contains("…and 497 more"), "{text}");
}
