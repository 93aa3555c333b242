//! Job analytics: the figures the queries give on rows put straight into the database (on
//! every database), the API's answers from a real server, and the job-duration histogram the
//! real binary exports once a run ends. The page in a real browser is in `dashboard.rs`, with
//! the other pages' browser tests.

use std::net::TcpListener;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveTime, Utc};
use entity::spark_job_executions as executions;
use jobwarden::analytics::Window;
use jobwarden::store::analytics_read::{job_detail, overview};
use jobwarden_testkit::{Answer, SparkServer};
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait};
use serde_json::{json, Value};

use crate::binary::{jobwarden_in, workdir};
use crate::helpers::{wait_until, Backend, TestDb};

/// The job name most seeded runs have.
pub(crate) const ETL: &str = "nightly etl/eu";

/// Noon (UTC) `days` days before today: always in the past, inside a 7-day window for 1..=6.
pub(crate) fn noon_days_ago(days: u64) -> DateTime<Utc> {
    let date = Utc::now()
        .date_naive()
        .checked_sub_days(Days::new(days))
        .unwrap();
    date.and_time(NaiveTime::from_hms_opt(12, 0, 0).unwrap())
        .and_utc()
}

/// One ended (or running) execution, as an application would have it.
pub(crate) struct Seeded<'a> {
    pub id: String,
    pub name: Option<&'a str>,
    pub status: &'a str,
    pub ended: DateTime<Utc>,
    /// Seconds from creation to the driver's start; none: it never started.
    pub waited: Option<i64>,
    pub ran: i64,
    pub error: Option<&'a str>,
}

pub(crate) async fn insert(db: &DatabaseConnection, run: Seeded<'_>) {
    let started = run.ended - chrono::Duration::seconds(run.ran);
    let created = started - chrono::Duration::seconds(run.waited.unwrap_or(30));
    let running = run.status == "Running";
    executions::Entity::insert(executions::ActiveModel {
        execution_id: Set(run.id),
        job_name: Set(run.name.map(str::to_owned)),
        submission_id: Set(None),
        status: Set(run.status.into()),
        progress: Set(if running { 10 } else { 100 }),
        submitted_at: Set(Some(created)),
        started_at: Set(run.waited.map(|_| started)),
        completed_at: Set((!running).then_some(run.ended)),
        error_message: Set(run.error.map(str::to_owned)),
        consecutive_poll_failures: Set(0),
        created_at: Set(created),
        updated_at: Set(run.ended),
        attempt: Set(0),
        ..Default::default()
    })
    .exec(db)
    .await
    .unwrap();
}

/// `nightly etl/eu`: yesterday 10 successes that ran 10, 20, … 100 s after waiting 5, 10, …
/// 50 s; two days ago 3 failures (200 s each, after 60 s; two with the same first line) and
/// one cancel before it started. `hourly report`: one success yesterday. Left out: a run 30
/// days ago, one still running, and one without a name (in the overview's days only).
pub(crate) async fn seed(db: &DatabaseConnection) {
    let yesterday = noon_days_ago(1);
    for i in 1..=10i64 {
        insert(
            db,
            Seeded {
                id: format!("etl-ok-{i}"),
                name: Some(ETL),
                status: "Succeeded",
                ended: yesterday + chrono::Duration::minutes(i),
                waited: Some(5 * i),
                ran: 10 * i,
                error: None,
            },
        )
        .await;
    }
    let two_days_ago = noon_days_ago(2);
    let errors = [
        "input table missing: s3://lake/eu\n\tat Foo.scala:12",
        "\ninput table missing: s3://lake/eu\n\tat Bar.scala:9",
        "java.lang.OutOfMemoryError: Java heap space",
    ];
    for (i, error) in errors.into_iter().enumerate() {
        insert(
            db,
            Seeded {
                id: format!("etl-failed-{i}"),
                name: Some(ETL),
                status: "Failed",
                ended: two_days_ago + chrono::Duration::minutes(i as i64),
                waited: Some(60),
                ran: 200,
                error: Some(error),
            },
        )
        .await;
    }
    let others = [
        ("etl-cancelled", Some(ETL), "Cancelled", two_days_ago, None),
        (
            "report-1",
            Some("hourly report"),
            "Succeeded",
            yesterday,
            Some(1),
        ),
        ("etl-old", Some(ETL), "Failed", noon_days_ago(30), Some(1)),
        ("etl-running", Some(ETL), "Running", yesterday, Some(1)),
        ("unnamed-1", None, "Succeeded", yesterday, Some(1)),
    ];
    for (id, name, status, ended, waited) in others {
        insert(
            db,
            Seeded {
                id: id.into(),
                name,
                status,
                ended,
                waited,
                ran: 5,
                error: Some("late error"),
            },
        )
        .await;
    }
}

fn week() -> Window {
    Window::last_days(7, Utc::now())
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

crate::on_every_database!(
    runs_and_success_rate_count_each_ended_run_of_the_window_once,
    durations_are_nearest_rank_percentiles_of_runs_that_started,
    queue_wait_runs_from_the_rows_creation_to_the_drivers_start,
    failures_are_grouped_by_the_first_line_of_their_error,
    each_day_holds_the_runs_that_ended_on_it,
);

async fn runs_and_success_rate_count_each_ended_run_of_the_window_once(db: TestDb) {
    seed(&db.db).await;
    let o = overview(&db.db, week()).await.unwrap();
    let names: Vec<(&str, u64)> = o
        .jobs
        .iter()
        .map(|j| (j.job_name.as_str(), j.figures.runs))
        .collect();
    assert_eq!(names, [(ETL, 14), ("hourly report", 1)]);
    let etl = &o.jobs[0].figures;
    assert_eq!((etl.succeeded, etl.failed, etl.cancelled), (10, 3, 1));
    assert_eq!(etl.success_rate(), Some(10.0 / 13.0));
    assert_eq!(o.unnamed_runs, 1);
    assert!(!o.truncated);
}

async fn durations_are_nearest_rank_percentiles_of_runs_that_started(db: TestDb) {
    seed(&db.db).await;
    let d = job_detail(&db.db, week(), ETL).await.unwrap().unwrap();
    // 10, 20, … 100 and 200 three times: the 7th and the 13th of 13.
    assert_eq!(d.summary.figures.duration.p50, secs(70));
    assert_eq!(d.summary.figures.duration.p95, secs(200));
}

async fn queue_wait_runs_from_the_rows_creation_to_the_drivers_start(db: TestDb) {
    seed(&db.db).await;
    let d = job_detail(&db.db, week(), ETL).await.unwrap().unwrap();
    // 5, 10, … 50 and 60 three times; the cancelled run never started and has none.
    assert_eq!(d.summary.figures.queue_wait.p50, secs(35));
    assert_eq!(d.summary.figures.queue_wait.p95, secs(60));
}

async fn failures_are_grouped_by_the_first_line_of_their_error(db: TestDb) {
    seed(&db.db).await;
    let d = job_detail(&db.db, week(), ETL).await.unwrap().unwrap();
    let reasons: Vec<(&str, u64)> = d
        .reasons
        .iter()
        .map(|r| (r.reason.as_str(), r.runs))
        .collect();
    assert_eq!(
        reasons,
        [
            ("input table missing: s3://lake/eu", 2),
            ("java.lang.OutOfMemoryError: Java heap space", 1)
        ]
    );
}

async fn each_day_holds_the_runs_that_ended_on_it(db: TestDb) {
    seed(&db.db).await;
    let d = job_detail(&db.db, week(), ETL).await.unwrap().unwrap();
    assert_eq!(d.days.len(), 7);
    let day = |ago: u64| {
        let date = noon_days_ago(ago).date_naive();
        d.days
            .iter()
            .find(|x| x.date == date)
            .unwrap()
            .figures
            .clone()
    };
    let yesterday = day(1);
    assert_eq!((yesterday.runs, yesterday.succeeded), (10, 10));
    assert_eq!(
        (yesterday.duration.p50, yesterday.duration.p95),
        (secs(50), secs(100))
    );
    let before = day(2);
    assert_eq!((before.runs, before.failed, before.cancelled), (4, 3, 1));
    assert_eq!(day(3).runs, 0);
}

/// The API served in this process over a seeded SQLite database.
async fn api_on_seeded_rows() -> (TestDb, String, actix_web::dev::ServerHandle) {
    use jobwarden::actors::JobStore;
    use jobwarden::events::Events;
    use jobwarden::http::HttpState;
    use jobwarden::store_api::StoreHandle;

    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    seed(&db.db).await;
    let settings = db.settings();
    let job_store = JobStore::new(
        db.db.clone(),
        settings.store.clone(),
        crate::helpers::rules(&settings),
        Events::default(),
    );
    let store_health = job_store.health();
    let state = HttpState {
        db: db.db.clone(),
        store: StoreHandle::from(&job_store.launch()),
        store_health,
        heartbeats: Vec::new(),
        kafka_topic: None,
        notifications: None,
        metrics: std::sync::Arc::new(jobwarden::metrics::Metrics::new()),
        api_token: None,
        instance: "analytics-test".into(),
        clusters: Vec::new(),
        read_token: None,
        max_concurrent_polls: 1,
        submit_gate: None,
    };
    let (addr, server) =
        jobwarden::http::start(TcpListener::bind("127.0.0.1:0").unwrap(), state).unwrap();
    (db, format!("http://{addr}"), server)
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[actix_rt::test]
async fn the_overview_api_answers_each_job_names_figures_in_seconds() {
    let (_db, base, server) = api_on_seeded_rows().await;
    let (status, body) = get(&format!("{base}/api/v1/analytics")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["days"], 7);
    assert_eq!(body["per_day"].as_array().map(Vec::len), Some(7));
    let etl = &body["jobs"][0];
    assert_eq!(etl["job_name"], ETL);
    assert_eq!(
        (
            &etl["runs"],
            &etl["succeeded"],
            &etl["failed"],
            &etl["cancelled"]
        ),
        (&json!(14), &json!(10), &json!(3), &json!(1))
    );
    assert_eq!(etl["duration_p50_seconds"], json!(70.0));
    assert_eq!(etl["duration_p95_seconds"], json!(200.0));
    assert_eq!(etl["queue_wait_p50_seconds"], json!(35.0));
    assert_eq!(etl["queue_wait_p95_seconds"], json!(60.0));
    assert_eq!(body["unnamed_runs"], 1);
    server.stop(true).await;
}

#[actix_rt::test]
async fn the_job_api_answers_days_and_failure_reasons_for_an_encoded_name() {
    let (_db, base, server) = api_on_seeded_rows().await;
    let (status, body) = get(&format!(
        "{base}/api/v1/analytics/nightly%20etl%2Feu?days=3"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["job_name"], ETL);
    assert_eq!(body["summary"]["runs"], 14);
    let days = body["per_day"].as_array().unwrap();
    assert_eq!(days.len(), 3);
    let yesterday = noon_days_ago(1).date_naive().to_string();
    let day = days.iter().find(|d| d["date"] == yesterday).unwrap();
    assert_eq!(day["duration_p95_seconds"], json!(100.0), "{day}");
    assert_eq!(
        body["failure_reasons"][0],
        json!({"reason": "input table missing: s3://lake/eu", "runs": 2,
               "last_at": body["failure_reasons"][0]["last_at"]})
    );
    server.stop(true).await;
}

#[actix_rt::test]
async fn the_api_refuses_a_window_out_of_range_and_answers_404_for_a_name_without_runs() {
    let (_db, base, server) = api_on_seeded_rows().await;
    assert_eq!(get(&format!("{base}/api/v1/analytics?days=0")).await.0, 400);
    assert_eq!(
        get(&format!("{base}/api/v1/analytics?days=91")).await.0,
        400
    );
    let (status, body) = get(&format!("{base}/api/v1/analytics/nobody")).await;
    assert_eq!(status, 404, "{body}");
    // A run 30 days ago is outside the default week.
    assert_eq!(
        get(&format!("{base}/api/v1/analytics/hourly%20report?days=1"))
            .await
            .0,
        404
    );
    server.stop(true).await;
}

#[actix_rt::test]
async fn the_analytics_page_is_complete_without_javascript_and_escapes_names() {
    let (db, base, server) = api_on_seeded_rows().await;
    insert(
        &db.db,
        Seeded {
            id: "xss-1".into(),
            name: Some("<b>bold</b>"),
            status: "Succeeded",
            ended: noon_days_ago(1),
            waited: Some(1),
            ran: 1,
            error: None,
        },
    )
    .await;
    let page = reqwest::get(format!("{base}/analytics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<svg"), "{page}");
    assert!(
        page.contains("data-runs=\"13\""),
        "yesterday's bar: 10 + 1 named, 1 unnamed, and the new run: {page}"
    );
    assert!(page.contains("&lt;b&gt;bold&lt;/b&gt;"), "{page}");
    assert!(!page.contains("<b>bold</b>"), "{page}");
    server.stop(true).await;
}

#[actix_rt::test]
async fn an_open_analytics_page_is_answered_not_modified_while_its_figures_are_kept() {
    let (db, base, server) = api_on_seeded_rows().await;
    let http = reqwest::Client::new();
    let live = format!("{base}/live/analytics/job?name=nightly+etl%2Feu&days=7");
    let first = http.get(&live).send().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = first.json().await.unwrap();
    assert!(
        body["regions"]["analytics-job"]
            .as_str()
            .is_some_and(|r| r.contains("duration-per-day")),
        "{body}"
    );
    // A run that ends now is read with the next refresh, not with each live request.
    insert(
        &db.db,
        Seeded {
            id: "etl-late".into(),
            name: Some(ETL),
            status: "Succeeded",
            ended: Utc::now(),
            waited: Some(1),
            ran: 1,
            error: None,
        },
    )
    .await;
    let again = http
        .get(&live)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);
    server.stop(true).await;
}

/// The value of one series in a Prometheus text scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[actix_rt::test]
async fn a_run_that_ends_is_observed_once_in_the_duration_histogram_by_name_and_outcome() {
    let spark = SparkServer::start().await;
    let dir = workdir();
    let mut running = jobwarden_in(dir.path())
        .env("JOBWARDEN__SPARK__REST_URL", spark.url())
        .env("JOBWARDEN__SPARK__MASTER_UI_URL", spark.url())
        .env("JOBWARDEN__SPARK__POLL_INTERVAL", "300ms")
        .start();
    let base = running.http_url();
    let http = reqwest::Client::new();
    let track = |id: &'static str| {
        let http = http.clone();
        let url = format!("{base}/api/v1/jobs");
        async move {
            let body = json!({"execution_id": id, "submission_id": format!("driver-{id}"), "job_name": "nightly-etl"});
            let status = http.post(url).json(&body).send().await.unwrap().status();
            assert_eq!(status.as_u16(), 201, "tracking {id}");
        }
    };
    let scrape = || {
        let http = http.clone();
        let url = format!("{base}/metrics");
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let status_of = |id: &'static str| {
        let http = http.clone();
        let url = format!("{base}/api/v1/jobs/{id}");
        async move {
            let job: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            job["job"]["status"].as_str().unwrap_or_default().to_owned()
        }
    };
    let wait = Duration::from_secs(40);
    spark.answer("driver-etl-1", Answer::State("RUNNING"));
    track("etl-1").await;
    wait_until(wait, "etl-1 to run", || async {
        status_of("etl-1").await == "Running"
    })
    .await;
    spark.answer("driver-etl-1", Answer::State("FINISHED"));
    let succeeded =
        r#"jobwarden_job_duration_seconds_count{job_name="nightly-etl",outcome="succeeded"}"#;
    wait_until(wait, "the success to be observed", || async {
        sample(&scrape().await, succeeded).is_some()
    })
    .await;

    // A second run of the same name fails: one more series, and the success is not observed
    // again by the polls and batches that came after it.
    spark.answer("driver-etl-2", Answer::State("RUNNING"));
    track("etl-2").await;
    wait_until(wait, "etl-2 to run", || async {
        status_of("etl-2").await == "Running"
    })
    .await;
    spark.answer("driver-etl-2", Answer::State("FAILED"));
    let failed = r#"jobwarden_job_duration_seconds_count{job_name="nightly-etl",outcome="failed"}"#;
    wait_until(wait, "the failure to be observed", || async {
        sample(&scrape().await, failed).is_some()
    })
    .await;
    let text = scrape().await;
    assert_eq!(sample(&text, succeeded), Some(1.0), "{text}");
    assert_eq!(sample(&text, failed), Some(1.0), "{text}");
    let sum = sample(
        &text,
        r#"jobwarden_job_duration_seconds_sum{job_name="nightly-etl",outcome="succeeded"}"#,
    )
    .unwrap();
    assert!(sum > 0.0, "it ran from RUNNING to FINISHED: {text}");
    let (status, log) = running.stop(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}

/// `runs` ended runs of 200 names over the last week, written 1,000 rows a statement.
async fn seed_many(db: &DatabaseConnection, runs: usize) {
    let now = noon_days_ago(1);
    let rows: Vec<executions::ActiveModel> = (0..runs)
        .map(|i| {
            let ended = now - chrono::Duration::minutes((i % 6_000) as i64);
            let started = ended - chrono::Duration::seconds(60 + (i % 600) as i64);
            let failed = i % 10 == 0;
            executions::ActiveModel {
                execution_id: Set(format!("bulk-{i:06}")),
                job_name: Set(Some(format!("job-{:03}", i % 200))),
                status: Set(if failed { "Failed" } else { "Succeeded" }.into()),
                progress: Set(100),
                submitted_at: Set(Some(started - chrono::Duration::seconds(20))),
                started_at: Set(Some(started)),
                completed_at: Set(Some(ended)),
                error_message: Set(failed.then(|| format!("stage {} failed\n\tat x", i % 7))),
                consecutive_poll_failures: Set(0),
                created_at: Set(started - chrono::Duration::seconds(30)),
                updated_at: Set(ended),
                attempt: Set(0),
                ..Default::default()
            }
        })
        .collect();
    for chunk in rows.chunks(1_000) {
        executions::Entity::insert_many(chunk.to_vec())
            .exec(db)
            .await
            .unwrap();
    }
}

/// A week of 20,000 ended runs of 200 names is read whole: the overview counts every run and
/// one name's figures hold its 100 (the rows are decoded a thousand at a time).
async fn a_week_of_twenty_thousand_runs_is_counted_whole(db: TestDb) {
    seed_many(&db.db, 20_000).await;
    let o = overview(&db.db, week()).await.unwrap();
    let total: u64 = o.days.iter().map(|d| d.figures.runs).sum();
    assert_eq!(total, 20_000);
    let d = job_detail(&db.db, week(), "job-007")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.summary.figures.runs, 100);
}

crate::on_every_database!(a_week_of_twenty_thousand_runs_is_counted_whole);
