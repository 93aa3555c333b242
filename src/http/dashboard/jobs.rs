//! The jobs page (`/`): Spark executions and queue jobs together, newest change first (or by
//! id), filtered by kind, status, cluster and name, or found by id, one keyset page at a time.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use crate::config::DEFAULT_CLUSTER;
use crate::domain::{JobStatus, QueueStatus};
use crate::store::dashboard_read::{self, JobFilter, JobRow, Kind};

use super::super::HttpState;
use super::eta::{self, Runs};
use super::layout::{between, duration, first_line, progress, status_badge, time, Nav, Page};
use super::{given, job_href, query, respond, unavailable, Dashboard, View};

const TITLE: &str = "Jobs";

#[derive(Debug, Default, Deserialize)]
pub struct JobsQuery {
    kind: Option<String>,
    status: Option<String>,
    cluster: Option<String>,
    name: Option<String>,
    /// An id, or the start of one.
    id: Option<String>,
    /// `changed` (the default) or `id`.
    sort: Option<String>,
    /// Last-change pages: the history row the page starts below.
    before: Option<String>,
    /// Id pages: the id the page starts after.
    after: Option<String>,
}

impl JobsQuery {
    fn filter(&self) -> JobFilter {
        JobFilter {
            kind: given(&self.kind).and_then(Kind::parse),
            status: given(&self.status).map(str::to_owned),
            cluster: given(&self.cluster).map(|c| (c != DEFAULT_CLUSTER).then(|| c.to_owned())),
            name: given(&self.name).map(str::to_owned),
        }
    }

    fn by_id(&self) -> bool {
        given(&self.sort) == Some("id")
    }

    /// This page's filters as a query string, with a cursor of its own.
    fn href(&self, cursor: Option<(&str, String)>) -> String {
        let (key, value) = cursor.map_or(("", None), |(k, v)| (k, Some(v)));
        let mut pairs = vec![
            ("kind", given(&self.kind)),
            ("status", given(&self.status)),
            ("cluster", given(&self.cluster)),
            ("name", given(&self.name)),
            ("sort", given(&self.sort)),
        ];
        if !key.is_empty() {
            pairs.push((key, value.as_deref()));
        }
        format!("/?{}", query(&pairs))
    }
}

pub async fn page(
    request: HttpRequest,
    state: web::Data<HttpState>,
    dashboard: web::Data<Dashboard>,
    params: web::Query<JobsQuery>,
) -> HttpResponse {
    render(request, state, dashboard, params.into_inner(), View::Page).await
}

pub async fn live(
    request: HttpRequest,
    state: web::Data<HttpState>,
    dashboard: web::Data<Dashboard>,
    params: web::Query<JobsQuery>,
) -> HttpResponse {
    render(request, state, dashboard, params.into_inner(), View::Live).await
}

/// What one listing found, and how to go on from it.
struct Listing {
    rows: Vec<(JobRow, Option<DateTime<Utc>>)>,
    pager: Markup,
}

async fn render(
    request: HttpRequest,
    state: web::Data<HttpState>,
    dashboard: web::Data<Dashboard>,
    params: JobsQuery,
    view: View,
) -> HttpResponse {
    let listing = match list(&state, &params).await {
        Ok(listing) => listing,
        Err(e) => return unavailable(&request, view, TITLE, Nav::Jobs, &e),
    };
    let needs_eta = listing.rows.iter().any(|(row, _)| match row {
        JobRow::Spark(r) => r
            .status
            .parse::<JobStatus>()
            .is_ok_and(|s| JobStatus::NON_TERMINAL.contains(&s)),
        JobRow::Queue(_) => false,
    });
    let runs = if needs_eta {
        dashboard.eta.runs(&state.db).await
    } else {
        Default::default()
    };
    let now = Utc::now();
    let table = table(&listing.rows, &runs, now);
    let page = Page {
        title: TITLE.to_owned(),
        nav: Nav::Jobs,
        fixed: (view == View::Page).then(|| filters(&params, &state.clusters)),
        regions: vec![("jobs", html! { (table) (listing.pager) })],
    };
    respond(&request, view, StatusCode::OK, page)
}

async fn list(state: &HttpState, params: &JobsQuery) -> Result<Listing, sea_orm::DbErr> {
    let db = &state.db;
    if let Some(id) = given(&params.id) {
        let rows = dashboard_read::jobs_with_id_prefix(db, id).await?;
        let pager = html! {
            p.note { "Ids starting with " code { (id) } " (at most " (dashboard_read::PAGE) "). "
                a href="/" { "All jobs" } }
        };
        return Ok(Listing {
            rows: rows.into_iter().map(|r| (r, None)).collect(),
            pager,
        });
    }
    let filter = params.filter();
    if params.by_id() {
        let after = given(&params.after);
        let (rows, next) = if filter.kind == Some(Kind::Queue) {
            let (rows, next) =
                dashboard_read::queue_jobs_by_id(db, filter.status.as_deref(), after).await?;
            (
                rows.into_iter().map(JobRow::Queue).collect::<Vec<_>>(),
                next,
            )
        } else {
            let (rows, next) = dashboard_read::executions_by_id(db, &filter, after).await?;
            (rows.into_iter().map(JobRow::Spark).collect(), next)
        };
        let pager = html! {
            nav.pager {
                @if after.is_some() { a.button.plain href=(params.href(None)) { "« First" } }
                @if let Some(next) = next { a.button.plain href=(params.href(Some(("after", next)))) { "Next »" } }
                @if filter.kind != Some(Kind::Queue) { span.note { "Spark executions by id; choose the queue kind for queue jobs." } }
            }
        };
        return Ok(Listing {
            rows: rows.into_iter().map(|r| (r, None)).collect(),
            pager,
        });
    }
    let before = given(&params.before).and_then(|b| b.parse::<i64>().ok());
    let found = dashboard_read::jobs_by_last_change(db, &filter, before).await?;
    let pager = html! {
        nav.pager {
            @if before.is_some() { a.button.plain href=(params.href(None)) { "« Newest" } }
            @if let Some(next) = found.next_before { a.button.plain href=(params.href(Some(("before", next.to_string())))) { "Older »" } }
            @if let Some(floor) = found.searched_to {
                span.note { "No more matches among the " (dashboard_read::WALK_BUDGET) " changes searched." }
                a.button.plain href=(params.href(Some(("before", floor.to_string())))) { "Search older changes »" }
            }
        }
    };
    Ok(Listing {
        rows: found
            .jobs
            .into_iter()
            .map(|(r, at)| (r, Some(at)))
            .collect(),
        pager,
    })
}

fn filters(params: &JobsQuery, clusters: &[String]) -> Markup {
    let kind = given(&params.kind).unwrap_or("");
    let status = given(&params.status).unwrap_or("");
    let cluster = given(&params.cluster).unwrap_or("");
    let mut statuses: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    for s in QueueStatus::ALL {
        if !statuses.contains(&s.as_str()) {
            statuses.push(s.as_str());
        }
    }
    let option = |value: &str, label: &str, chosen: &str| {
        html! { option value=(value) selected[value == chosen] { (label) } }
    };
    html! {
        form.filters method="get" action="/" {
            label { "Kind"
                select name="kind" {
                    (option("", "Spark and queue", kind))
                    (option("spark", "Spark executions", kind))
                    (option("queue", "Queue jobs", kind))
                }
            }
            label { "Status"
                select name="status" {
                    (option("", "any", status))
                    @for s in &statuses { (option(s, s, status)) }
                }
            }
            label { "Cluster"
                select name="cluster" {
                    (option("", "any", cluster))
                    (option(DEFAULT_CLUSTER, DEFAULT_CLUSTER, cluster))
                    @for c in clusters { (option(c, c, cluster)) }
                }
            }
            label { "Name contains" input type="search" name="name" value=[given(&params.name)]; }
            label { "Sort"
                select name="sort" {
                    (option("", "last change", given(&params.sort).unwrap_or("")))
                    (option("id", "id", given(&params.sort).unwrap_or("")))
                }
            }
            button type="submit" { "Filter" }
            label { "Id (or its start)" input type="search" name="id" value=[given(&params.id)]; }
            button type="submit" { "Find" }
            a.button.plain href="/" { "Clear" }
        }
    }
}

fn table(
    rows: &[(JobRow, Option<DateTime<Utc>>)],
    runs: &HashMap<String, Runs>,
    now: DateTime<Utc>,
) -> Markup {
    html! {
        @if rows.is_empty() {
            div.card { p.muted { "No jobs match." } }
        } @else {
            table.jobs {
                thead { tr {
                    th { "Job" } th { "Status" } th { "Progress" } th { "Started" }
                    th { "Duration" } th { "ETA" } th { "Last change" } th { "Last error" }
                } }
                tbody {
                    @for (row, changed) in rows { (job_row(row, *changed, runs, now)) }
                }
            }
        }
    }
}

fn job_row(
    row: &JobRow,
    changed: Option<DateTime<Utc>>,
    runs: &HashMap<String, Runs>,
    now: DateTime<Utc>,
) -> Markup {
    match row {
        JobRow::Spark(r) => {
            let finished = r.completed_at.is_some();
            let took = between(r.started_at, r.completed_at.or(Some(now)));
            let error = r
                .error_message
                .as_deref()
                .map(|e| first_line(e, 160))
                .or_else(|| {
                    r.last_poll_error
                        .as_deref()
                        .map(|e| format!("last poll: {}", first_line(e, 140)))
                });
            let eta = eta::of(r, r.job_name.as_ref().and_then(|n| runs.get(n)), now);
            html! {
                tr data-id=(r.execution_id) data-kind="spark" {
                    td.id {
                        a href=(job_href(Kind::Spark, &r.execution_id)) { (r.execution_id) }
                        br; span.kind { "spark" @if let Some(c) = &r.cluster { " · " (c) } }
                        @if let Some(name) = &r.job_name { " " span.name { (name) } }
                    }
                    td.status { (status_badge(&r.status)) }
                    td { (progress(r.progress)) }
                    td.time { (time(r.started_at)) }
                    td.num {
                        @match took { Some(d) => { (duration(d)) @if !finished { span.note { " so far" } } }, None => { span.none { "—" } } }
                    }
                    td.eta { (eta) }
                    td.time { (time(changed.or(r.status_changed_at))) }
                    td.error { @if let Some(e) = error { (e) } }
                }
            }
        }
        JobRow::Queue(q) => {
            let took = between(Some(q.created_at), q.completed_at);
            html! {
                tr data-id=(q.job_id) data-kind="queue" {
                    td.id {
                        a href=(job_href(Kind::Queue, &q.job_id)) { (q.job_id) }
                        br; span.kind { "queue" }
                    }
                    td.status { (status_badge(&q.status)) }
                    td { span.none { "—" } }
                    td.time { (time(Some(q.created_at))) }
                    td.num { @match took { Some(d) => (duration(d)), None => span.none { "—" } } }
                    td.eta { span.none { "—" } }
                    td.time { (time(changed.or(q.last_event_at))) }
                    td.error { @if let Some(e) = &q.error_message { (first_line(e, 160)) } }
                }
            }
        }
    }
}
