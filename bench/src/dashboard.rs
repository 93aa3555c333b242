//! The dashboard's first screen over a large fleet: the jobs page rendered by the running
//! service and fetched through HTTP, beside the JSON API's list of a page of the same size
//! (the API's own read: by id, no history, no HTML).

use std::time::{Duration, Instant};

use jobwarden::config::Settings;
use jobwarden::store;
use sea_orm::ConnectionTrait;

/// Medians of one run, in milliseconds per request.
#[derive(Debug, Clone)]
pub struct Figures {
    /// `/`: Spark and queue jobs by last change (the walk of the history).
    pub by_last_change: f64,
    /// `/?kind=spark&sort=id`: the API's rows, as a page.
    pub by_id: f64,
    /// `/api/v1/jobs?limit=50`.
    pub api: f64,
    /// `/live/` answering 304: what an open tab costs every two seconds while nothing changes.
    pub live_unchanged: f64,
    /// `/?status=Running`: one job in twenty matches, ETAs drawn.
    pub running: f64,
    /// `/?name=…` matching nothing: the worst case, a whole walk budget read.
    pub no_match: f64,
}

const SAMPLES: usize = 40;

/// Seeds `jobs` executions (nine in ten succeeded, one in twenty failed with a reason, the
/// rest running) with three transitions each, starts the service on them and times the pages.
pub async fn measure(mut settings: Settings, jobs: usize) -> anyhow::Result<Figures> {
    let scratch = tempfile::tempdir()?;
    super::scratch_database(&mut settings, None, scratch.path(), "dashboard");
    {
        let db = store::connect(&settings.database).await?;
        store::migrate(&db).await?;
        let last = jobs.saturating_sub(1);
        // Every job started i seconds after the first and took 60 to 660 s; running ones
        // are not due for a poll, so the service stays quiet while it is measured.
        db.execute_unprepared(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
             INSERT INTO spark_job_executions (execution_id, submission_id, job_name, status, \
               progress, started_at, completed_at, status_changed_at, last_polled_at, \
               next_poll_at, error_message, created_at, updated_at) \
             SELECT printf('exec-%07d', i), printf('driver-%07d', i), 'job-' || (i % 200), \
               CASE WHEN i % 20 = 0 THEN 'Running' WHEN i % 20 = 1 THEN 'Failed' ELSE 'Succeeded' END, \
               CASE WHEN i % 20 = 0 THEN 42 ELSE 100 END, \
               strftime('%Y-%m-%dT%H:%M:%S+00:00', 1700000000 + i, 'unixepoch'), \
               CASE WHEN i % 20 = 0 THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%S+00:00', 1700000060 + i + (i % 600), 'unixepoch') END, \
               strftime('%Y-%m-%dT%H:%M:%S+00:00', 1700000060 + i + (i % 600), 'unixepoch'), \
               strftime('%Y-%m-%dT%H:%M:%S+00:00', 1700000060 + i + (i % 600), 'unixepoch'), \
               CASE WHEN i % 20 = 0 THEN '2999-01-01T00:00:00+00:00' ELSE NULL END, \
               CASE WHEN i % 20 = 1 THEN 'Caused by: java.lang.IllegalStateException: input table missing' || char(10) || 'at Job.run(Job.java:42)' ELSE NULL END, \
               strftime('%Y-%m-%dT%H:%M:%S+00:00', 1700000000 + i, 'unixepoch'), \
               strftime('%Y-%m-%dT%H:%M:%S+00:00', 1700000060 + i + (i % 600), 'unixepoch') \
             FROM n"
        ))
        .await?;
        // Three transitions a job, in time order, as the store would have written them.
        db.execute_unprepared(
            "INSERT INTO job_status_history (job_kind, job_id, from_status, to_status, source, at) \
             SELECT 'spark', execution_id, f, t, s, at FROM ( \
               SELECT execution_id, NULL AS f, 'Queued' AS t, 'api' AS s, started_at AS at FROM spark_job_executions \
               UNION ALL SELECT execution_id, 'Queued', 'Running', 'spark_poll', started_at FROM spark_job_executions \
               UNION ALL SELECT execution_id, 'Running', status, 'spark_poll', completed_at FROM spark_job_executions WHERE completed_at IS NOT NULL \
             ) ORDER BY at, execution_id",
        )
        .await?;
        db.close().await?;
    }
    let spark = jobwarden_testkit::SparkServer::start()
        .await
        .without_request_counts();
    settings.spark.rest_url = spark.url();
    settings.spark.master_ui_url = Some(spark.url());
    settings.spark.poll_interval = Duration::from_secs(3600);
    settings.http.bind = "127.0.0.1:0".into();
    let app = jobwarden::startup::Application::build(settings).await?;
    let base = format!(
        "http://{}",
        app.http_addr
            .ok_or_else(|| anyhow::anyhow!("the HTTP server did not start"))?
    );
    let http = reqwest::Client::new();
    let time = |path: String, etag: Option<String>| {
        let mut request = http.get(format!("{base}{path}"));
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        async move {
            let started = Instant::now();
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            let elapsed = started.elapsed().as_secs_f64() * 1e3;
            anyhow::ensure!(
                status.is_success() || status.as_u16() == 304,
                "{path} answered {status}"
            );
            anyhow::Ok((elapsed, body.len()))
        }
    };
    let first = http.get(format!("{base}/live/")).send().await?;
    let etag = first
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut samples: [Vec<f64>; 6] = Default::default();
    for round in 0..SAMPLES + 5 {
        let round_samples = [
            time("/".into(), None).await?,
            time("/?kind=spark&sort=id".into(), None).await?,
            time("/api/v1/jobs?limit=50".into(), None).await?,
            time("/live/".into(), etag.clone()).await?,
            time("/?status=Running".into(), None).await?,
            time("/?name=no-such-job".into(), None).await?,
        ];
        // The first rounds warm the caches (the ETA durations, SQLite's pages).
        if round >= 5 {
            for (all, (ms, _)) in samples.iter_mut().zip(round_samples) {
                all.push(ms);
            }
        }
    }
    let [changed, by_id, api, live, running, no_match] = samples;
    app.shutdown().await;
    Ok(Figures {
        by_last_change: super::median(changed),
        by_id: super::median(by_id),
        api: super::median(api),
        live_unchanged: super::median(live),
        running: super::median(running),
        no_match: super::median(no_match),
    })
}

/// Runs the measurement and prints it.
pub async fn run(settings: Settings, jobs: usize) -> anyhow::Result<()> {
    let f = measure(settings, jobs).await?;
    println!(
        "dashboard first screen over {jobs} jobs (SQLite, median of {SAMPLES} requests each):"
    );
    println!(
        "  jobs page, last change first   {:>8.2} ms",
        f.by_last_change
    );
    println!("  jobs page, by id               {:>8.2} ms", f.by_id);
    println!("  JSON API, 50 jobs by id        {:>8.2} ms", f.api);
    println!(
        "  live update, nothing changed   {:>8.2} ms (304)",
        f.live_unchanged
    );
    println!("  jobs page, status Running      {:>8.2} ms", f.running);
    println!(
        "  jobs page, a name nothing has  {:>8.2} ms (reads the whole walk budget)",
        f.no_match
    );
    println!(
        "  ratio API / page: {:.2} (last change), {:.2} (by id)",
        f.api / f.by_last_change,
        f.api / f.by_id
    );
    Ok(())
}
