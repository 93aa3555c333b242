//! The analytics pages: `/analytics` (every job name over the last days: runs, success rate,
//! duration and queue-wait percentiles, and all runs per day as a chart) and
//! `/analytics/job?name=…` (one name day by day, as charts, and its failures by their first
//! line). What each figure means is in `crate::analytics`.
//!
//! A window's figures are read from the whole window's rows, so they are kept for
//! [`FRESH_FOR`] and shared by every tab showing them: a page left open asks every 2 seconds,
//! and gets an empty 304 until the figures are read again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;

use crate::analytics::{
    Figures, JobDetail, Overview, Quantiles, Window, DEFAULT_DAYS, MAX_DAYS, MAX_JOB_NAMES,
    MAX_REASONS,
};
use crate::store::analytics_read::{self, MAX_RUNS_READ};

use super::super::HttpState;
use super::charts::{percentiles_per_day, runs_per_day, Series};
use super::layout::{duration, time, Nav, Page};
use super::{given, query, respond, unavailable, Dashboard, View};

/// How long a window's figures are shown before they are read again.
const FRESH_FOR: Duration = Duration::from_secs(30);
/// Windows kept at most (by days and name); past that the oldest reads are dropped.
const MAX_CACHED: usize = 64;
/// The windows the form offers.
const DAY_CHOICES: [u32; 5] = [1, 7, 14, 30, 90];

#[derive(Clone)]
enum Read {
    Overview(Arc<Overview>),
    Job(Option<Arc<JobDetail>>),
}

/// Each window's figures by (days, job name), with when they were read.
type Cached = HashMap<(u32, Option<String>), (Instant, Read)>;

/// Figures by (days, job name), each read at most once a [`FRESH_FOR`].
#[derive(Default)]
pub struct AnalyticsCache {
    cached: Mutex<Cached>,
}

impl AnalyticsCache {
    async fn read(
        &self,
        db: &sea_orm::DatabaseConnection,
        days: u32,
        name: Option<&str>,
    ) -> Result<Read, sea_orm::DbErr> {
        let key = (days, name.map(str::to_owned));
        if let Some((at, read)) = self.cached.lock().expect("analytics cache").get(&key) {
            if at.elapsed() < FRESH_FOR {
                return Ok(read.clone());
            }
        }
        let window = Window::last_days(days, chrono::Utc::now());
        let read = match name {
            None => Read::Overview(Arc::new(analytics_read::overview(db, window).await?)),
            Some(name) => Read::Job(
                analytics_read::job_detail(db, window, name)
                    .await?
                    .map(Arc::new),
            ),
        };
        let mut cached = self.cached.lock().expect("analytics cache");
        cached.retain(|_, (at, _)| at.elapsed() < FRESH_FOR);
        if cached.len() >= MAX_CACHED {
            cached.clear();
        }
        cached.insert(key, (Instant::now(), read.clone()));
        Ok(read)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AnalyticsQuery {
    days: Option<String>,
    name: Option<String>,
}

impl AnalyticsQuery {
    /// The asked window, within 1..=[`MAX_DAYS`]; the default for anything unreadable.
    fn days(&self) -> u32 {
        given(&self.days)
            .and_then(|d| d.parse::<u32>().ok())
            .map_or(DEFAULT_DAYS, |d| d.clamp(1, MAX_DAYS))
    }
}

pub async fn page(
    request: HttpRequest,
    state: web::Data<HttpState>,
    dashboard: web::Data<Dashboard>,
    params: web::Query<AnalyticsQuery>,
) -> HttpResponse {
    overview(request, state, dashboard, params.into_inner(), View::Page).await
}

pub async fn live(
    request: HttpRequest,
    state: web::Data<HttpState>,
    dashboard: web::Data<Dashboard>,
    params: web::Query<AnalyticsQuery>,
) -> HttpResponse {
    overview(request, state, dashboard, params.into_inner(), View::Live).await
}

pub async fn job_page(
    request: HttpRequest,
    state: web::Data<HttpState>,
    dashboard: web::Data<Dashboard>,
    params: web::Query<AnalyticsQuery>,
) -> HttpResponse {
    job(request, state, dashboard, params.into_inner(), View::Page).await
}

pub async fn job_live(
    request: HttpRequest,
    state: web::Data<HttpState>,
    dashboard: web::Data<Dashboard>,
    params: web::Query<AnalyticsQuery>,
) -> HttpResponse {
    job(request, state, dashboard, params.into_inner(), View::Live).await
}

/// The link to one job name's analytics over `days`.
fn job_href(name: &str, days: u32) -> String {
    let days = days.to_string();
    format!(
        "/analytics/job?{}",
        query(&[("name", Some(name)), ("days", Some(&days))])
    )
}

/// The window picker; `name` keeps the job name on the job page.
fn days_form(action: &str, days: u32, name: Option<&str>) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            @if let Some(name) = name { input type="hidden" name="name" value=(name); }
            label { "Window"
                select name="days" {
                    @for choice in DAY_CHOICES {
                        option value=(choice) selected[choice == days] {
                            "last " (choice) " day" @if choice != 1 { "s" }
                        }
                    }
                    @if !DAY_CHOICES.contains(&days) {
                        option value=(days) selected { "last " (days) " days" }
                    }
                }
            }
            button type="submit" { "Show" }
        }
    }
}

fn rate(figures: &Figures) -> Markup {
    match figures.success_rate() {
        Some(r) => html! { (format!("{:.1}%", r * 100.0)) },
        None => html! { span.none { "—" } },
    }
}

fn took(d: Option<Duration>) -> Markup {
    match d {
        Some(d) => html! { (duration(d)) },
        None => html! { span.none { "—" } },
    }
}

/// The seconds behind a shown duration, for tests and scripts reading the page.
fn seconds(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.3}", d.as_secs_f64()))
        .unwrap_or_default()
}

fn window_note(window: &Window, truncated: bool) -> Markup {
    html! {
        p.note {
            "Runs that ended from " (time(Some(window.from))) " (UTC midnight) to " (time(Some(window.to)))
            "; read again at most every " (FRESH_FOR.as_secs()) " s. "
            "Duration: driver start to end. Queue wait: created (or submitted, if earlier) to driver start. "
            "Success rate: succeeded ÷ (succeeded + failed). Percentiles are nearest-rank."
            @if truncated {
                " " span.down { "This window holds more than " (MAX_RUNS_READ) " runs: only the latest were counted." }
            }
        }
    }
}

async fn overview(
    request: HttpRequest,
    state: web::Data<HttpState>,
    dashboard: web::Data<Dashboard>,
    params: AnalyticsQuery,
    view: View,
) -> HttpResponse {
    let days = params.days();
    let overview = match dashboard.analytics.read(&state.db, days, None).await {
        Ok(Read::Overview(o)) => o,
        Ok(Read::Job(_)) => unreachable!("a read without a name is an overview"),
        Err(e) => return unavailable(&request, view, "Analytics", Nav::Analytics, &e),
    };
    let content = html! {
        @if overview.days.iter().all(|d| d.figures.runs == 0) {
            div.card { p { "No Spark run ended in the last " (days) " day(s)." } }
        } @else {
            div.overview-chart { (runs_per_day("runs-per-day", "Runs per day, every job name", &overview.days)) }
            table.analytics {
                thead { tr {
                    th { "Job name" } th { "Runs" } th { "Succeeded" } th { "Failed" } th { "Cancelled" }
                    th { "Success rate" } th { "Duration p50" } th { "p95" } th { "Queue wait p50" } th { "p95" }
                    th { "Last ended" }
                } }
                tbody {
                    @for job in &overview.jobs {
                        @let f = &job.figures;
                        tr data-job=(job.job_name) {
                            td.name { a href=(job_href(&job.job_name, days)) { (job.job_name) } }
                            td.num.runs { (f.runs) } td.num { (f.succeeded) } td.num { (f.failed) } td.num { (f.cancelled) }
                            td.num.rate { (rate(f)) }
                            td.num.p50 data-seconds=(seconds(f.duration.p50)) { (took(f.duration.p50)) }
                            td.num.p95 data-seconds=(seconds(f.duration.p95)) { (took(f.duration.p95)) }
                            td.num.wait-p50 data-seconds=(seconds(f.queue_wait.p50)) { (took(f.queue_wait.p50)) }
                            td.num.wait-p95 data-seconds=(seconds(f.queue_wait.p95)) { (took(f.queue_wait.p95)) }
                            td.time { (time(Some(job.last_ended_at))) }
                        }
                    }
                }
            }
            @if overview.other_names > 0 {
                p.note { (overview.other_names) " more job name(s) with " (overview.other_runs)
                    " run(s) in all are not listed: only the " (MAX_JOB_NAMES) " with the most runs are. "
                    "The API has the same figures for any name." }
            }
            @if overview.unnamed_runs > 0 {
                p.note { (overview.unnamed_runs) " run(s) of executions without a job name are in the chart, not in the table." }
            }
        }
        (window_note(&overview.window, overview.truncated))
    };
    let page = Page {
        title: "Analytics".to_owned(),
        nav: Nav::Analytics,
        fixed: Some(days_form("/analytics", days, None)),
        regions: vec![("analytics", content)],
    };
    respond(&request, view, StatusCode::OK, page)
}

fn quantile_facts(label: &str, q: &Quantiles) -> Markup {
    html! {
        dt { (label) } dd {
            "p50 " (took(q.p50)) ", p95 " (took(q.p95))
        }
    }
}

async fn job(
    request: HttpRequest,
    state: web::Data<HttpState>,
    dashboard: web::Data<Dashboard>,
    params: AnalyticsQuery,
    view: View,
) -> HttpResponse {
    let days = params.days();
    let Some(name) = given(&params.name).map(str::to_owned) else {
        let page = Page {
            title: "Analytics".to_owned(),
            nav: Nav::Analytics,
            fixed: None,
            regions: vec![(
                "analytics-job",
                html! { div.card { p { "Give a job name: /analytics/job?name=…" } p { a href="/analytics" { "Every job name" } } } },
            )],
        };
        return respond(&request, view, StatusCode::NOT_FOUND, page);
    };
    let detail = match dashboard.analytics.read(&state.db, days, Some(&name)).await {
        Ok(Read::Job(detail)) => detail,
        Ok(Read::Overview(_)) => unreachable!("a read with a name is one job's"),
        Err(e) => return unavailable(&request, view, "Analytics", Nav::Analytics, &e),
    };
    let title = format!("Analytics: {name}");
    let fixed = Some(days_form("/analytics/job", days, Some(&name)));
    let Some(detail) = detail else {
        let page = Page {
            title,
            nav: Nav::Analytics,
            fixed,
            regions: vec![(
                "analytics-job",
                html! { div.card {
                    p { "No run named " code { (name) } " ended in the last " (days) " day(s)." }
                    p { a href="/analytics" { "Every job name" } }
                } },
            )],
        };
        return respond(&request, view, StatusCode::NOT_FOUND, page);
    };
    let s = &detail.summary.figures;
    let jobs_href = format!(
        "/?{}",
        query(&[("kind", Some("spark")), ("name", Some(&name))])
    );
    let content = html! {
        div.card #summary {
            dl.facts {
                dt { "Runs" } dd.runs { (s.runs) " (" (s.succeeded) " succeeded, " (s.failed) " failed, " (s.cancelled) " cancelled)" }
                dt { "Success rate" } dd.rate { (rate(s)) }
                (quantile_facts("Duration", &s.duration))
                (quantile_facts("Queue wait", &s.queue_wait))
                dt { "Last ended" } dd { (time(Some(detail.summary.last_ended_at))) }
                dt { "Its jobs" } dd { a href=(jobs_href) { "on the jobs page" } }
            }
        }
        div.charts {
            (runs_per_day("runs-per-day", "Runs per day", &detail.days))
            (percentiles_per_day("duration-per-day", "Duration per day (p50, p95)", &detail.days, Series::Duration))
            (percentiles_per_day("queue-wait-per-day", "Queue wait per day (p50, p95)", &detail.days, Series::QueueWait))
        }
        h2 { "Failures by first line of the reason" }
        @if detail.reasons.is_empty() {
            p.muted { "No failed run in this window." }
        } @else {
            table.reasons {
                thead { tr { th { "Reason (first line)" } th { "Runs" } th { "Last" } } }
                tbody {
                    @for reason in &detail.reasons {
                        tr {
                            td.error { @if reason.reason.is_empty() { span.none { "(no reason recorded)" } } @else { (reason.reason) } }
                            td.num { (reason.runs) }
                            td.time { (time(Some(reason.last_at))) }
                        }
                    }
                }
            }
            @if detail.other_reason_runs > 0 {
                p.note { (detail.other_reason_runs) " more failed run(s) gave other reasons (only the " (MAX_REASONS) " most frequent are listed)." }
            }
        }
        (window_note(&detail.window, detail.truncated))
    };
    let page = Page {
        title,
        nav: Nav::Analytics,
        fixed,
        regions: vec![("analytics-job", content)],
    };
    respond(&request, view, StatusCode::OK, page)
}
