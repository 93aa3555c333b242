//! `jobwarden-bench suite`: every scenario in its own child process (so each has its own peak
//! RSS), one table row each: jobwarden's figure, the ceiling measured in the same run, the
//! ratio, the peak RSS.

use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use jobwarden::config::Settings;

/// One scenario, as passed to the child process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scenario {
    Poll {
        jobs: usize,
        pool: usize,
        wrk_seconds: u64,
        /// Run on mimalloc instead of glibc's malloc.
        #[serde(default)]
        mimalloc: bool,
    },
    Freshness {
        jobs: usize,
        flip: usize,
        interval_ms: u64,
        pool: usize,
    },
    KafkaIngest {
        events: usize,
        brokers: Option<String>,
        database_url: Option<String>,
    },
    StoreWrites {
        changes: usize,
        database_url: Option<String>,
    },
    /// Jobs that keep running unchanged, polled again and again.
    SteadyState {
        jobs: usize,
        cycles: usize,
    },
    /// The service as it runs, over a fleet inserted by SQL (no set-up memory in the figure).
    Fleet {
        jobs: usize,
    },
    /// Refresh cycles answered by the master's listing alone, beside one bare listing read.
    Listing {
        jobs: usize,
    },
    /// The `jobwarden` binary in its own process over a fleet, as configured and with glibc's
    /// malloc held to two arenas: its own peak RSS and CPU per check.
    ServiceMemory {
        jobs: usize,
        /// One setting to measure instead of the usual three (`{"NAME": "value"}` added to the
        /// service's environment), to compare a setting by hand.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<std::collections::BTreeMap<String, String>>,
    },
    /// One `jobwarden` process beside three sharing a database, over a saturated fleet.
    Instances {
        jobs: usize,
        database_url: String,
    },
    /// The same fleet on an application's mapped table and on jobwarden's own.
    MappedSchema {
        jobs: usize,
        database_url: Option<String>,
    },
    Idle,
    /// Endings written with and without a rule that notifies; the Notifier's delivery rate.
    Notifications {
        endings: usize,
    },
    /// One Submitter look's decisions among thousands of waiting jobs, beside none; and the
    /// time from a parent's end to its child's submission.
    Ordering {
        waiting: usize,
        decisions: usize,
        pairs: usize,
    },
    /// The dashboard's jobs page over a fleet, beside the JSON API's list.
    Dashboard {
        jobs: usize,
    },
    StatusCheck {
        rest_url: String,
        submission_id: String,
        spark_home: String,
    },
}

/// One line of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub ours: String,
    pub ceiling: String,
    /// jobwarden's figure over the ceiling's, higher is better.
    pub ratio: Option<f64>,
    #[serde(default)]
    pub peak_rss_kb: Option<u64>,
}

/// What the suite measures, straight from the command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SuiteOptions {
    /// The full sizes (10k and 100k jobs, 200k events, 100k changes); minutes, not seconds.
    #[arg(long)]
    pub full: bool,
    /// A Kafka broker for the ingest scenario; librdkafka's mock cluster when omitted.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Also measure ingest and store writes on this PostgreSQL database.
    #[arg(long, value_name = "URL")]
    pub postgres_url: Option<String>,
    /// Also measure ingest and store writes on this MySQL/MariaDB database.
    #[arg(long, value_name = "URL")]
    pub mariadb_url: Option<String>,
    /// With --submission-id and --spark-home: the status-check scenario on a real cluster.
    #[arg(long)]
    pub spark_rest_url: Option<String>,
    #[arg(long)]
    pub submission_id: Option<String>,
    #[arg(long, env = "SPARK_HOME")]
    pub spark_home: Option<String>,
}

fn label_db(url: &Option<String>) -> String {
    match url {
        None => "SQLite".into(),
        Some(u) if u.starts_with("postgres") => "PostgreSQL".into(),
        Some(u) if u.starts_with("mysql") || u.starts_with("mariadb") => "MariaDB".into(),
        Some(_) => "database".into(),
    }
}

fn thousands(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn plan(options: &SuiteOptions) -> Vec<Scenario> {
    let mut plan = Vec::new();
    let (jobs, pools, wrk, freshness, events, changes) = if options.full {
        (
            10_000,
            vec![5, 64, 256],
            5,
            (10_000, 1_000, 5_000),
            200_000,
            100_000,
        )
    } else {
        (2_000, vec![5, 64], 2, (500, 100, 1_000), 20_000, 5_000)
    };
    for pool in pools {
        plan.push(Scenario::Poll {
            jobs,
            pool,
            wrk_seconds: wrk,
            mimalloc: false,
        });
    }
    plan.push(Scenario::Poll {
        jobs,
        pool: 64,
        wrk_seconds: wrk,
        mimalloc: true,
    });
    if options.full {
        plan.push(Scenario::Poll {
            jobs: 100_000,
            pool: 64,
            wrk_seconds: wrk,
            mimalloc: false,
        });
    }
    plan.push(Scenario::Freshness {
        jobs: freshness.0,
        flip: freshness.1,
        interval_ms: freshness.2,
        pool: 64,
    });
    let mut databases = vec![None];
    if let Some(pg) = &options.postgres_url {
        databases.push(Some(pg.clone()));
    }
    if let Some(maria) = &options.mariadb_url {
        databases.push(Some(maria.clone()));
    }
    for db in &databases {
        plan.push(Scenario::KafkaIngest {
            events,
            brokers: options.brokers.clone(),
            database_url: db.clone(),
        });
    }
    for db in &databases {
        plan.push(Scenario::StoreWrites {
            changes,
            database_url: db.clone(),
        });
    }
    plan.push(Scenario::SteadyState {
        jobs: if options.full { 10_000 } else { 2_000 },
        cycles: 3,
    });
    plan.push(Scenario::Fleet {
        jobs: if options.full { 100_000 } else { 2_000 },
    });
    plan.push(Scenario::Listing {
        jobs: if options.full { 100_000 } else { 2_000 },
    });
    plan.push(Scenario::ServiceMemory {
        jobs: if options.full { 100_000 } else { 2_000 },
        env: None,
    });
    for db in &databases {
        plan.push(Scenario::MappedSchema {
            jobs: if options.full { 10_000 } else { 2_000 },
            database_url: db.clone(),
        });
    }
    // Several instances need a server database and the service binary beside this one.
    for db in databases.iter().flatten() {
        plan.push(Scenario::Instances {
            jobs: if options.full { 20_000 } else { 5_000 },
            database_url: db.clone(),
        });
    }
    plan.push(Scenario::Ordering {
        waiting: if options.full { 10_000 } else { 2_000 },
        decisions: 200,
        pairs: if options.full { 200 } else { 50 },
    });
    plan.push(Scenario::Dashboard {
        jobs: if options.full { 100_000 } else { 10_000 },
    });
    plan.push(Scenario::Notifications {
        endings: if options.full { 20_000 } else { 2_000 },
    });
    plan.push(Scenario::Idle);
    if let (Some(rest_url), Some(submission_id), Some(spark_home)) = (
        &options.spark_rest_url,
        &options.submission_id,
        &options.spark_home,
    ) {
        plan.push(Scenario::StatusCheck {
            rest_url: rest_url.clone(),
            submission_id: submission_id.clone(),
            spark_home: spark_home.clone(),
        });
    }
    plan
}

/// Runs one scenario in this process and returns its rows (the child side).
pub async fn run_scenario(settings: Settings, scenario: Scenario) -> anyhow::Result<Vec<Row>> {
    match scenario {
        Scenario::Poll {
            jobs,
            pool,
            wrk_seconds,
            mimalloc,
        } => {
            let malloc = if mimalloc { ", mimalloc" } else { "" };
            let server = jobwarden_testkit::SparkServer::start()
                .await
                .without_request_counts();
            let mut cycles = super::poll::cycles(settings, None, jobs, pool, &server, 3).await?;
            let steady = cycles.pop().context("no third cycle")?;
            let figures = cycles.swap_remove(0);
            let wrk = super::poll::wrk_ceiling(&server, pool, wrk_seconds).await?;
            let ceiling = wrk.map(|w| w.requests_per_second);
            let ours = figures.polls_per_second();
            let mut rows = vec![Row {
                scenario: format!(
                    "poll throughput, {} jobs, pool {pool}{malloc}",
                    thousands(jobs)
                ),
                ours: format!("{ours:.0} checks/s"),
                ceiling: ceiling.map_or("wrk not installed".into(), |c| {
                    format!("{c:.0} req/s (wrk, {pool} conns)")
                }),
                ratio: ceiling.map(|c| ours / c),
                peak_rss_kb: None,
            }];
            if pool == 64 {
                let floor = ceiling.map(|c| jobs as f64 / c);
                rows.push(Row {
                    scenario: format!(
                        "full refresh cycle, {} jobs, pool {pool}{malloc}",
                        thousands(jobs)
                    ),
                    ours: format!("{:.2} s", figures.seconds),
                    ceiling: floor.map_or("-".into(), |f| format!("{f:.2} s at the wrk rate")),
                    ratio: floor.map(|f| f / figures.seconds),
                    peak_rss_kb: None,
                });
                let cpu_row = |what: String, cpu: &[(String, f64)]| {
                    let per_check = super::cpu::own_seconds(cpu) / jobs as f64;
                    Row {
                        scenario: format!(
                            "CPU per check, {what}{malloc} (by thread: {})",
                            super::cpu::breakdown(cpu, jobs)
                        ),
                        ours: format!("{:.0} µs", per_check * 1e6),
                        ceiling: wrk.map_or("-".into(), |w| {
                            format!("{:.1} µs per request (wrk's own)", w.cpu_per_request * 1e6)
                        }),
                        ratio: wrk.map(|w| w.cpu_per_request / per_check),
                        peak_rss_kb: None,
                    }
                };
                rows.push(cpu_row(
                    format!("{} jobs, pool {pool}", thousands(jobs)),
                    &figures.cpu,
                ));
                let ours = steady.polls_per_second();
                rows.push(Row {
                    scenario: format!(
                        "poll throughput, {} jobs, pool {pool}{malloc}, third cycle (no change)",
                        thousands(jobs)
                    ),
                    ours: format!("{ours:.0} checks/s"),
                    ceiling: ceiling.map_or("-".into(), |c| format!("{c:.0} req/s")),
                    ratio: ceiling.map(|c| ours / c),
                    peak_rss_kb: None,
                });
                rows.push(cpu_row("third cycle".into(), &steady.cpu));
            }
            Ok(rows)
        }
        Scenario::Freshness {
            jobs,
            flip,
            interval_ms,
            pool,
        } => {
            let mut settings = settings;
            settings.spark.max_concurrent_polls = pool;
            let interval = Duration::from_millis(interval_ms);
            let (p50, p99) = super::poll::freshness(settings, jobs, flip, interval).await?;
            let seconds = interval.as_secs_f64();
            Ok(vec![Row {
                scenario: format!(
                    "freshness, {} of {} jobs flip, interval {}",
                    thousands(flip),
                    thousands(jobs),
                    humantime::format_duration(interval)
                ),
                ours: format!("p50 {p50:.2} s, p99 {p99:.2} s"),
                ceiling: format!("one interval: {seconds:.2} s"),
                ratio: Some(seconds / p99.max(1e-3)),
                peak_rss_kb: None,
            }])
        }
        Scenario::SteadyState { jobs, cycles } => {
            let interval = settings.spark.poll_interval;
            let (rows, polls) = super::poll::steady_state(settings, jobs, cycles).await?;
            let per_second = rows as f64 / (interval.as_secs_f64() * cycles as f64);
            Ok(vec![Row {
                scenario: format!(
                    "steady state, {} running jobs, no change, {cycles} cycles",
                    thousands(jobs)
                ),
                ours: format!(
                    "{rows} row writes for {polls} polls ({per_second:.1}/s at {})",
                    humantime::format_duration(interval)
                ),
                ceiling: format!(
                    "{polls} (a write per poll: {:.0}/s)",
                    polls as f64 / (interval.as_secs_f64() * cycles as f64)
                ),
                ratio: None,
                peak_rss_kb: None,
            }])
        }
        Scenario::KafkaIngest {
            events,
            brokers,
            database_url,
        } => {
            let on = brokers
                .clone()
                .map_or("mock cluster".to_owned(), |_| "broker".to_owned());
            let label = label_db(&database_url);
            let (ceiling, ours) =
                super::kafka_ingest::measure(settings, brokers, events, database_url).await?;
            Ok(vec![Row {
                scenario: format!("kafka ingest, {} events ({on}), {label}", thousands(events)),
                ours: format!("{ours:.0} events/s durable"),
                ceiling: format!("{ceiling:.0} events/s (plain consumer)"),
                ratio: Some(ours / ceiling),
                peak_rss_kb: None,
            }])
        }
        Scenario::StoreWrites {
            changes,
            database_url,
        } => {
            let label = label_db(&database_url);
            let f = super::store_writes::measure(settings, database_url, changes).await?;
            Ok(vec![Row {
                scenario: format!("store writes, {} changes, {label}", thousands(changes)),
                ours: format!("{:.0} changes/s", f.changes_per_second),
                ceiling: format!(
                    "{:.0} /s (bare multi-row upsert, {})",
                    f.baseline_per_second, f.baseline_client
                ),
                ratio: Some(f.changes_per_second / f.baseline_per_second),
                peak_rss_kb: None,
            }])
        }
        Scenario::Fleet { jobs } => {
            let scratch = tempfile::tempdir()?;
            let seconds = super::poll::fleet(settings, jobs, scratch.path()).await?;
            Ok(vec![Row {
                scenario: format!("service over {} jobs, first cycle", thousands(jobs)),
                ours: format!("{seconds:.2} s"),
                ceiling: "-".into(),
                ratio: None,
                peak_rss_kb: None,
            }])
        }
        Scenario::Listing { jobs } => {
            let f = super::listing::measure(settings, jobs).await?;
            let row = |what: &str, seconds: f64, listings: usize| Row {
                scenario: format!(
                    "full refresh cycle, {} jobs, master listing, {what}",
                    thousands(jobs)
                ),
                ours: format!("{seconds:.2} s, {listings} listing reads"),
                ceiling: format!("{:.3} s (one bare listing read and parse)", f.bare),
                ratio: Some(f.bare / seconds),
                peak_rss_kb: None,
            };
            let [first, second, third] = f.cycles;
            Ok(vec![
                row("first cycle (every job changes)", first.0, first.1),
                row(
                    "second cycle (no change, driver UIs looked up)",
                    second.0,
                    second.1,
                ),
                row(
                    "third cycle (no change, nothing looked up)",
                    third.0,
                    third.1,
                ),
            ])
        }
        Scenario::ServiceMemory { jobs, env } => {
            let mut rows = Vec::new();
            let given: Vec<(&str, &str)> = env
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let settings: Vec<&[(&str, &str)]> = if env.is_some() {
                vec![&given[..]]
            } else {
                // glibc's malloc as it comes, held to two arenas, and mimalloc: side by side.
                vec![
                    &[][..],
                    &[("MALLOC_ARENA_MAX", "2")][..],
                    &[("JOBWARDEN_ALLOCATOR", "mimalloc")][..],
                ]
            };
            for env in settings {
                let f = super::memory::measure(jobs, env).await?;
                rows.push(Row {
                    scenario: format!(
                        "service process over {} jobs, two cycles, {}",
                        thousands(jobs),
                        if env.is_empty() {
                            "as built (glibc malloc)"
                        } else {
                            f.setting.as_str()
                        }
                    ),
                    ours: format!(
                        "first cycle {:.2} s, {:.0} µs CPU per check; at most {:.1} MB anonymous, {:.1} MB file-backed; {:.1} MB held at the end",
                        f.first_cycle,
                        f.cpu_micros_per_check,
                        f.peak_anon_kb as f64 / 1024.0,
                        f.peak_file_kb as f64 / 1024.0,
                        f.end_rss_kb as f64 / 1024.0
                    ),
                    ceiling: "-".into(),
                    ratio: None,
                    peak_rss_kb: Some(f.peak_rss_kb),
                });
            }
            Ok(rows)
        }
        Scenario::MappedSchema { jobs, database_url } => {
            let label = label_db(&database_url);
            let own =
                super::mapped_schema::measure(settings.clone(), database_url.clone(), jobs, false)
                    .await?;
            let mapped = super::mapped_schema::measure(settings, database_url, jobs, true).await?;
            let per_poll = |seconds: f64| seconds * 1e6 / jobs as f64;
            let row = |what: &str, mapped: f64, own: f64| Row {
                scenario: format!("mapped table, {} jobs, {what}, {label}", thousands(jobs)),
                ours: format!("{:.0} µs/poll (mapped)", per_poll(mapped)),
                ceiling: format!("{:.0} µs/poll (own table)", per_poll(own)),
                ratio: Some(own / mapped),
                peak_rss_kb: None,
            };
            let mut steady = row("steady cycle (no change)", mapped.steady, own.steady);
            steady
                .ours
                .push_str(&format!(", {} rows written", mapped.steady_writes));
            steady
                .ceiling
                .push_str(&format!(", {} rows written", own.steady_writes));
            Ok(vec![
                row("first cycle (every job changes)", mapped.first, own.first),
                steady,
            ])
        }
        Scenario::Instances { jobs, database_url } => {
            let label = label_db(&Some(database_url.clone()));
            let window = Duration::from_secs(10);
            let one = super::instances::measure(&database_url, jobs, 1, window).await?;
            let three = super::instances::measure(&database_url, jobs, 3, window).await?;
            Ok(vec![Row {
                scenario: format!(
                    "poll throughput, {} running jobs, 3 instances vs 1, {label}",
                    thousands(jobs)
                ),
                ours: format!("{:.0} polls/s (3 processes)", three.polls_per_second),
                ceiling: format!("{:.0} polls/s (1 process)", one.polls_per_second),
                ratio: Some(three.polls_per_second / one.polls_per_second),
                peak_rss_kb: None,
            }])
        }
        Scenario::Ordering {
            waiting,
            decisions,
            pairs,
        } => {
            let d = super::ordering::decisions(settings.clone(), waiting, decisions).await?;
            let look =
                |what: &str, with: super::ordering::Look, alone: super::ordering::Look| Row {
                    scenario: format!(
                        "{what}, {decisions} in one look, {} waiting (SQLite)",
                        thousands(waiting)
                    ),
                    ours: format!(
                        "{:.1} ms a look, {:.0} µs a decision",
                        with.millis,
                        with.micros_per_decision()
                    ),
                    ceiling: format!(
                        "{:.1} ms, {:.0} µs with none waiting",
                        alone.millis,
                        alone.micros_per_decision()
                    ),
                    ratio: Some(alone.millis / with.millis),
                    peak_rss_kb: None,
                };
            let l = super::ordering::latency(settings, pairs).await?;
            let bound = l.poll_interval_ms + 100.0;
            Ok(vec![
                look(
                    "submissions decided",
                    d.begins_among_waiting,
                    d.begins_alone,
                ),
                look(
                    "children released",
                    d.releases_among_waiting,
                    d.releases_alone,
                ),
                Row {
                    scenario: format!(
                        "parent's end to child's submission, {} pairs, poll_interval {:.0} ms",
                        l.pairs, l.poll_interval_ms
                    ),
                    ours: format!("p50 {:.0} ms, p99 {:.0} ms", l.p50_ms, l.p99_ms),
                    ceiling: format!("{bound:.0} ms (one poll interval + 100 ms)"),
                    ratio: Some(bound / l.p99_ms.max(1.0)),
                    peak_rss_kb: None,
                },
            ])
        }
        Scenario::Dashboard { jobs } => {
            let f = super::dashboard::measure(settings, jobs).await?;
            let row = |what: &str, ours: f64| Row {
                scenario: format!("dashboard jobs page, {} jobs, {what}", thousands(jobs)),
                ours: format!("{ours:.2} ms"),
                ceiling: format!("{:.2} ms (JSON API, 50 jobs)", f.api),
                ratio: Some(f.api / ours),
                peak_rss_kb: None,
            };
            Ok(vec![
                row("last change first", f.by_last_change),
                row("by id", f.by_id),
            ])
        }
        Scenario::Notifications { endings } => {
            let f = super::notifications::measure(settings, endings).await?;
            let delivered = |width: String, per_second: f64| Row {
                scenario: format!(
                    "notifications delivered to a local webhook, {}, {width}",
                    thousands(endings)
                ),
                ours: format!("{per_second:.0} messages/s"),
                ceiling: format!("{:.0} POST/s (one client, in turn)", f.posts_per_second),
                ratio: Some(per_second / f.posts_per_second),
                peak_rss_kb: None,
            };
            Ok(vec![
                Row {
                    scenario: format!(
                        "job endings written, each notifying one channel, {} (SQLite)",
                        thousands(endings)
                    ),
                    ours: format!(
                        "{:.0} endings/s (+{:.0} µs each)",
                        f.notifying_per_second,
                        f.added_micros()
                    ),
                    ceiling: format!("{:.0} endings/s without a rule", f.plain_per_second),
                    ratio: Some(f.notifying_per_second / f.plain_per_second),
                    peak_rss_kb: None,
                },
                delivered(format!("{} in flight", f.in_flight), f.delivered_per_second),
                delivered("one in flight".into(), f.delivered_one_at_a_time),
            ])
        }
        Scenario::Idle => {
            let scratch = tempfile::tempdir()?;
            let mut settings = settings;
            super::scratch_database(&mut settings, None, scratch.path(), "idle");
            settings.http.bind = "127.0.0.1:0".into();
            let app = jobwarden::startup::Application::build(settings).await?;
            actix_rt::time::sleep(Duration::from_secs(2)).await;
            app.shutdown().await;
            Ok(vec![Row {
                scenario: "idle service (no jobs)".into(),
                ours: "-".into(),
                ceiling: "-".into(),
                ratio: None,
                peak_rss_kb: None,
            }])
        }
        Scenario::StatusCheck {
            rest_url,
            submission_id,
            spark_home,
        } => {
            let (ours, theirs) = super::status_check::measure(
                settings,
                rest_url,
                submission_id,
                Some(spark_home),
                200,
                3,
            )
            .await?;
            let theirs = theirs.context("spark-submit was not measured")?;
            Ok(vec![Row {
                scenario: "one status check vs spark-submit --status".into(),
                ours: format!("{ours:.3} ms"),
                ceiling: format!("{theirs:.0} ms (spark-submit)"),
                ratio: Some(theirs / ours),
                peak_rss_kb: None,
            }])
        }
    }
}

/// Runs `scenario` in a child process, returning its rows with the child's peak RSS.
fn run_child(scenario: &Scenario, config: Option<&std::path::Path>) -> anyhow::Result<Vec<Row>> {
    let exe = std::env::current_exe().context("cannot find the jobwarden-bench executable")?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.args(["scenario", &serde_json::to_string(scenario)?])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    if let Scenario::Poll { mimalloc: true, .. } = scenario {
        // Read at the child's first allocation: it runs on glibc's malloc throughout.
        cmd.env("JOBWARDEN_ALLOCATOR", "system");
    }
    let mut child = cmd.spawn().context("cannot start a scenario process")?;
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut out)?;
    }
    let (status, peak_kb) = wait_with_peak_rss(child.id())?;
    anyhow::ensure!(
        status == 0,
        "scenario {scenario:?} failed (exit status {status})"
    );
    let mut rows: Vec<Row> = serde_json::from_str(out.lines().last().unwrap_or("[]"))
        .with_context(|| format!("scenario printed {out:?}"))?;
    for row in &mut rows {
        // A row that measured another process keeps that process's figure.
        row.peak_rss_kb = row.peak_rss_kb.or(Some(peak_kb));
    }
    Ok(rows)
}

/// Reaps the child and reads its own peak resident set size (kB).
fn wait_with_peak_rss(pid: u32) -> anyhow::Result<(i32, u64)> {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own unreaped child; status and usage point to live locals.
    let reaped = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    anyhow::ensure!(
        reaped == pid as libc::pid_t,
        "wait4 failed: {}",
        std::io::Error::last_os_error()
    );
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((code, usage.ru_maxrss.max(0) as u64))
}

/// Runs the plan and prints the table (markdown, so it can go straight into the README).
pub fn run(options: SuiteOptions, config: Option<&std::path::Path>) -> anyhow::Result<Vec<Row>> {
    let mode = if options.full { "full" } else { "quick" };
    println!(
        "jobwarden-bench suite ({mode}), {} cores, {} UTC\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        chrono::Utc::now().format("%Y-%m-%d %H:%M")
    );
    println!("| scenario | jobwarden | ceiling (same run) | ratio | peak RSS |");
    println!("| --- | --- | --- | --- | --- |");
    let mut all = Vec::new();
    for scenario in plan(&options) {
        for row in run_child(&scenario, config)? {
            println!(
                "| {} | {} | {} | {} | {} |",
                row.scenario,
                row.ours,
                row.ceiling,
                row.ratio.map_or("-".into(), |r| format!("{r:.2}")),
                row.peak_rss_kb
                    .map_or("-".into(), |kb| format!("{:.1} MB", kb as f64 / 1024.0))
            );
            all.push(row);
        }
    }
    Ok(all)
}
