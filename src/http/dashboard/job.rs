//! One job's page (`/job?kind=spark&id=…`): what it is, why it failed (reason and log tail),
//! what Spark last said and when it was last asked, the attempts of a job jobwarden submits
//! (and when the next one is due, or that a cancel waits for Spark), and its whole timeline.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use entity::{
    job_status_history as history, spark_job_attempts as attempts,
    spark_job_executions as executions, transformation_job_queue as queue,
};
use maud::{html, Markup};
use serde::Deserialize;

use crate::config::DEFAULT_CLUSTER;
use crate::domain::{JobStatus, SubmitSpec};
use crate::store::dashboard_read::{self, Kind, MAX_ATTEMPTS_SHOWN};
use crate::store::read;

use super::super::HttpState;
use super::eta;
use super::layout::{between, duration, progress, status_badge, time, Nav, Page};
use super::{given, respond, unavailable, Dashboard, View};

/// A job's history is short, but a page must stay bounded whatever a table holds.
const MAX_TIMELINE: usize = 1_000;

#[derive(Debug, Deserialize)]
pub struct JobQuery {
    kind: Option<String>,
    id: Option<String>,
}

pub async fn page(
    request: HttpRequest,
    state: web::Data<HttpState>,
    dashboard: web::Data<Dashboard>,
    params: web::Query<JobQuery>,
) -> HttpResponse {
    render(request, state, dashboard, params.into_inner(), View::Page).await
}

pub async fn live(
    request: HttpRequest,
    state: web::Data<HttpState>,
    dashboard: web::Data<Dashboard>,
    params: web::Query<JobQuery>,
) -> HttpResponse {
    render(request, state, dashboard, params.into_inner(), View::Live).await
}

async fn render(
    request: HttpRequest,
    state: web::Data<HttpState>,
    dashboard: web::Data<Dashboard>,
    params: JobQuery,
    view: View,
) -> HttpResponse {
    let kind = given(&params.kind)
        .and_then(Kind::parse)
        .unwrap_or(Kind::Spark);
    let Some(id) = given(&params.id).map(str::to_owned) else {
        return missing(
            &request,
            view,
            "Give a job id: /job?kind=spark&id=… (or kind=queue).",
        );
    };
    let found = match kind {
        Kind::Spark => match read::execution_with_history(&state.db, &id).await {
            Ok(Some((row, history))) => {
                // Drawn into the `job` region, whose hash is the live ETag: an attempt that
                // begins, is submitted or ends changes the page a live tab is sent.
                let tried = match dashboard_read::latest_attempts(&state.db, &id).await {
                    Ok(tried) => tried,
                    Err(e) => return unavailable(&request, view, "Job", Nav::Jobs, &e),
                };
                let runs = dashboard.eta.runs(&state.db).await;
                let runs = row.job_name.as_ref().and_then(|n| runs.get(n)).cloned();
                Some((
                    format!("Spark execution {id}"),
                    spark(&row, runs.as_ref(), &history, &tried),
                ))
            }
            Ok(None) => None,
            Err(e) => return unavailable(&request, view, "Job", Nav::Jobs, &e),
        },
        Kind::Queue => match read::queue_job_with_history(&state.db, &id).await {
            Ok(Some((row, history))) => Some((format!("Queue job {id}"), queued(&row, &history))),
            Ok(None) => None,
            Err(e) => return unavailable(&request, view, "Job", Nav::Jobs, &e),
        },
    };
    let Some((title, content)) = found else {
        let what = match kind {
            Kind::Spark => "Spark execution",
            Kind::Queue => "queue job",
        };
        return missing(
            &request,
            view,
            &format!("There is no {what} with id {id:?}."),
        );
    };
    let page = Page {
        title,
        nav: Nav::Jobs,
        fixed: None,
        regions: vec![("job", content)],
    };
    respond(&request, view, StatusCode::OK, page)
}

fn missing(request: &HttpRequest, view: View, message: &str) -> HttpResponse {
    let page = Page {
        title: "Job not found".to_owned(),
        nav: Nav::Jobs,
        fixed: None,
        regions: vec![(
            "job",
            html! { div.card { p { (message) } p { a href="/" { "All jobs" } } } },
        )],
    };
    respond(request, view, StatusCode::NOT_FOUND, page)
}

fn spark(
    row: &executions::Model,
    runs: Option<&eta::Runs>,
    history: &[history::Model],
    (tried, all_attempts): &(Vec<attempts::Model>, u64),
) -> Markup {
    let now = Utc::now();
    let took = between(row.started_at, row.completed_at.or(Some(now)));
    let status = row.status.parse::<JobStatus>().ok();
    // A status this build does not know is shown as it is, and taken as unfinished.
    let finished = status.is_some_and(|s| !JobStatus::NON_TERMINAL.contains(&s));
    let spec = row.submit_spec.as_deref().map(SubmitSpec::from_json);
    html! {
        @if status == Some(JobStatus::Retrying) {
            p #next-attempt {
                "Between attempts: attempt " (row.attempt.max(0) + 1) " "
                @match row.next_attempt_at {
                    Some(at) => { "due at " (time(Some(at))) }
                    // No time is "at once" to the submitter (and an operator's retry is due now).
                    None => "due now",
                }
                @if row.next_attempt_at.is_none_or(|at| at <= now) { " (submitted at the next check for due jobs)" }
            }
        }
        @if let (Some(at), false) = (row.cancel_requested_at, finished) {
            p #cancel-requested {
                "Cancel requested at " (time(Some(at))) "; ends once Spark reports the driver KILLED."
            }
        }
        div.grid {
            div.card {
                dl.facts {
                    dt { "Status" } dd { (status_badge(&row.status)) }
                    dt { "Progress" } dd { (progress(row.progress)) }
                    dt { "Name" } dd { @match &row.job_name { Some(n) => (n), None => span.none { "—" } } }
                    dt { "Cluster" } dd { (row.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER)) }
                    @match &spec {
                        Some(Ok(spec)) => {
                            dt { "Main class" } dd.id { code { (spec.main_class) } }
                            dt { "App resource" } dd.id { code { (spec.app_resource) } }
                        }
                        // Written by an application, so possibly wrong: the page says why.
                        Some(Err(e)) => { dt { "Submit spec" } dd { span.down { "unreadable: " (e.to_string()) } } }
                        None => {}
                    }
                    dt { "Submission" } dd.id { @match &row.submission_id { Some(s) => code { (s) }, None => span.none { "none yet" } } }
                    dt { "Spark state (raw)" } dd { @match &row.spark_state { Some(s) => code { (s) }, None => span.none { "not answered yet" } } }
                    dt { "Submitted" } dd { (time(row.submitted_at)) }
                    dt { "Started" } dd { (time(row.started_at)) }
                    dt { "Completed" } dd { (time(row.completed_at)) }
                    dt { "Duration" } dd {
                        @match took { Some(d) => { (duration(d)) @if row.completed_at.is_none() { span.note { " so far" } } }, None => span.none { "—" } }
                    }
                    dt { "ETA" } dd { (eta::of(row, runs, now)) }
                    dt { "Status changed" } dd { (time(row.status_changed_at)) }
                }
            }
            div.card {
                h2 { "Last poll" }
                dl.facts {
                    dt { "Last poll that changed the row" } dd { (time(row.last_polled_at)) }
                    dt { "Last confirmed by Spark" } dd { (time(row.last_confirmed_at)) }
                    dt { "Next poll" } dd { (time(row.next_poll_at)) }
                    dt { "Failed polls in a row" } dd { (row.consecutive_poll_failures) }
                    dt { "Failing since" } dd { (time(row.failing_since)) }
                    dt { "Last poll error" } dd {
                        @match &row.last_poll_error { Some(e) => pre.payload { (e) }, None => span.none { "none" } }
                    }
                }
            }
        }
        @if let Some(reason) = &row.error_message {
            h2 { "Failure reason and log tail" }
            pre.log #failure { (reason) }
        }
        @if !tried.is_empty() { (attempt_table(tried, *all_attempts, now)) }
        (timeline(history))
    }
}

/// Each submission jobwarden made of the job, first first. Reasons are shown whole, as the
/// timeline shows its details: a `<details>` a reader opened would close again on the next
/// live update (regions are swapped whole, and a running attempt's duration changes them).
fn attempt_table(tried: &[attempts::Model], all: u64, now: DateTime<Utc>) -> Markup {
    html! {
        h2 { "Attempts" }
        @if (tried.len() as u64) < all {
            p.note { "The latest " (MAX_ATTEMPTS_SHOWN) " of " (all) " attempts." }
        }
        table.attempts {
            thead { tr {
                th { "Attempt" } th { "State" } th { "Outcome" } th { "Driver" } th { "Submitted" }
                th { "Started" } th { "Ended" } th { "Duration" } th { "Reason" }
            } }
            tbody {
                @for a in tried {
                    @let ended = a.ended_at.is_some();
                    tr data-attempt=(a.attempt) {
                        td.num { (a.attempt) }
                        td { (a.state) }
                        td { @match &a.outcome { Some(o) => (outcome_badge(o)), None => span.none { "—" } } }
                        td.id { @match &a.submission_id { Some(s) => code { (s) }, None => span.none { "none yet" } } }
                        td.time { (time(a.submitted_at)) }
                        td.time { (time(a.started_at)) }
                        td.time { (time(a.ended_at)) }
                        td.num {
                            @match between(a.started_at, a.ended_at.or(Some(now))) {
                                Some(d) => { (duration(d)) @if !ended { span.note { " so far" } } },
                                None => span.none { "—" },
                            }
                        }
                        td { @if let Some(r) = &a.reason { pre.payload { (r) } } }
                    }
                }
            }
        }
    }
}

/// An attempt's outcome on the colour of the job status it corresponds to.
fn outcome_badge(outcome: &str) -> Markup {
    let class = match outcome {
        "succeeded" => "st st-ok",
        "failed" | "error" | "lost_worker" | "timed_out" | "rejected" => "st st-failed",
        "cancelled" => "st st-cancelled",
        _ => "st",
    };
    html! { span class=(class) { (outcome.replace('_', " ")) } }
}

fn queued(row: &queue::Model, history: &[history::Model]) -> Markup {
    let fields = row
        .generated_fields
        .as_ref()
        .map(|f| serde_json::to_string_pretty(f).unwrap_or_else(|_| f.to_string()));
    html! {
        div.card {
            dl.facts {
                dt { "Status" } dd { (status_badge(&row.status)) }
                dt { "Received" } dd { (time(Some(row.created_at))) }
                dt { "Completed" } dd { (time(row.completed_at)) }
                dt { "Last event" } dd { (time(row.last_event_at)) @if let Some(id) = &row.last_event_id { " · id " code { (id) } } }
                dt { "From" } dd {
                    @match (&row.last_topic, row.last_partition, row.last_offset) {
                        (Some(t), Some(p), Some(o)) => { code { (t) } " partition " (p) ", offset " (o) },
                        _ => span.none { "—" },
                    }
                }
            }
        }
        @if let Some(reason) = &row.error_message {
            h2 { "Failure reason" }
            pre.log #failure { (reason) }
        }
        @if let Some(fields) = fields {
            h2 { "Generated fields" }
            pre.log { (fields) }
        }
        (timeline(history))
    }
}

fn timeline(history: &[history::Model]) -> Markup {
    let shown = &history[history.len().saturating_sub(MAX_TIMELINE)..];
    html! {
        h2 { "Timeline" }
        @if shown.len() < history.len() {
            p.note { "The latest " (MAX_TIMELINE) " of " (history.len()) " transitions." }
        }
        table.timeline {
            thead { tr { th { "When" } th { "From → to" } th { "Source" } th { "Detail" } } }
            tbody {
                @for h in shown {
                    tr {
                        td.time { (time(Some(h.at))) }
                        td {
                            @match &h.from_status { Some(f) => (status_badge(f)), None => span.muted { "(new)" } }
                            " → " (status_badge(&h.to_status))
                        }
                        td { code { (h.source) } }
                        td { @if let Some(d) = &h.detail { pre.payload { (d) } } }
                    }
                }
            }
        }
    }
}
