//! The dashboard: HTML pages for people (jobs, one job, health, dead letters, analytics)
//! served by the same server as the API, readable without JavaScript, kept live by a small
//! script that asks `/live/<page>` for the page's regions every few seconds.
//!
//! Live updates are short polls, not server-sent events: the server keeps nothing per open
//! tab (a tab left open for a day, or reconnecting a thousand times, costs nothing between
//! requests), an open tab never holds the server's shutdown, and an answer that would not
//! change the page is a bodiless 304 (its ETag is a hash of the regions).

mod access;
mod analytics;
mod assets;
mod charts;
mod dead_letters;
mod eta;
mod health;
mod job;
mod jobs;
mod layout;

use std::hash::{Hash, Hasher};

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};

pub use access::require_read_token;

use layout::Page;

/// What the dashboard keeps between requests: only the durations ETAs are drawn from,
/// bounded and refreshed once a minute, and the analytics pages' figures, bounded and
/// refreshed every 30 seconds.
#[derive(Default)]
pub struct Dashboard {
    eta: eta::EtaCache,
    analytics: analytics::AnalyticsCache,
}

/// The dashboard's routes; every one is a `GET` that changes nothing.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(jobs::page))
        .route("/live/", web::get().to(jobs::live))
        .route("/job", web::get().to(job::page))
        .route("/live/job", web::get().to(job::live))
        .route("/health", web::get().to(health::page))
        .route("/live/health", web::get().to(health::live))
        .route("/dead-letters", web::get().to(dead_letters::page))
        .route("/live/dead-letters", web::get().to(dead_letters::live))
        .route("/analytics", web::get().to(analytics::page))
        .route("/live/analytics", web::get().to(analytics::live))
        .route("/analytics/job", web::get().to(analytics::job_page))
        .route("/live/analytics/job", web::get().to(analytics::job_live))
        .route("/assets/dashboard.css", web::get().to(assets::css))
        .route("/assets/dashboard.js", web::get().to(assets::js));
}

/// A whole page, or only its regions for a live update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Page,
    Live,
}

/// Pages are never cached (they are live), never framed, and run only the dashboard's own
/// script: even markup that slipped through escaping could not run a script of its own.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn respond(request: &HttpRequest, view: View, status: StatusCode, page: Page) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    match view {
        View::Page => response
            .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
            .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
            .insert_header((header::X_FRAME_OPTIONS, "DENY"))
            .body(page.render().into_string()),
        View::Live => {
            let regions: Map<String, Value> = page
                .regions
                .into_iter()
                .map(|(name, markup)| (name.to_owned(), Value::String(markup.into_string())))
                .collect();
            let body = serde_json::json!({ "regions": regions }).to_string();
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (status.as_u16(), &body).hash(&mut hasher);
            let etag = format!("\"{:016x}\"", hasher.finish());
            let unchanged = request
                .headers()
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == etag);
            if unchanged && status.is_success() {
                return response
                    .status(StatusCode::NOT_MODIFIED)
                    .insert_header((header::ETAG, etag))
                    .finish();
            }
            response
                .insert_header((header::CONTENT_TYPE, "application/json"))
                .insert_header((header::ETAG, etag))
                .body(body)
        }
    }
}

/// The page for a database that did not answer: it says so, and the live script keeps asking.
fn unavailable(
    request: &HttpRequest,
    view: View,
    title: &str,
    nav: layout::Nav,
    error: &sea_orm::DbErr,
) -> HttpResponse {
    let page = Page {
        title: title.to_owned(),
        nav,
        fixed: None,
        regions: vec![(
            "main",
            maud::html! {
                div.card {
                    p.down { "The database did not answer: " (error.to_string()) }
                    p.note { "This page tries again by itself; /readyz says what else is down." }
                }
            },
        )],
    };
    respond(request, view, StatusCode::SERVICE_UNAVAILABLE, page)
}

/// A query string from its non-empty pairs, for links that keep the page's filters.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            out.append_pair(key, value);
        }
    }
    out.finish()
}

/// The link to one job's page.
fn job_href(kind: crate::store::dashboard_read::Kind, id: &str) -> String {
    format!(
        "/job?{}",
        query(&[("kind", Some(kind.as_str())), ("id", Some(id))])
    )
}

/// An optional query value, with an empty one (an untouched form field) as none.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}
