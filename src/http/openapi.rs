//! The HTTP API described as OpenAPI 3.1, from the handlers' own annotations and types, served
//! at `/api/v1/openapi.json` and printed by `jobwarden openapi`.

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{analytics_api, api, notifications, probes, views};
use crate::domain::{Ending, RetryOverrides, SubmitSpec};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "jobwarden",
        description = "Supervises Spark and enrichment batch jobs and keeps their database rows true. \
            Reads need `Authorization: Bearer <http.read_token>` when that token is set, writes \
            `Authorization: Bearer <http.api_token>` when that one is; probes and metrics are open."
    ),
    paths(
        probes::healthz,
        probes::readyz,
        probes::metrics,
        api::list_jobs,
        api::track_job,
        api::show_job,
        api::cancel_job,
        api::retry_job,
        api::show_queue_job,
        notifications::list,
        notifications::resend,
        analytics_api::overview,
        analytics_api::job,
        spec,
    ),
    components(schemas(
        views::ExecutionView,
        views::ExecutionDetail,
        views::ExecutionPage,
        views::HistoryView,
        views::AttemptView,
        views::ParentView,
        views::QueueJobView,
        views::AfterAction,
        views::Tracked,
        views::CancelTaken,
        views::RetryTaken,
        views::ErrorBody,
        views::OutboxMessageView,
        views::OutboxPage,
        views::Resent,
        views::Alive,
        views::Readiness,
        views::Share,
        api::TrackBody,
        notifications::ResendBody,
        analytics_api::AnalyticsOverview,
        analytics_api::JobAnalytics,
        analytics_api::JobSummaryView,
        analytics_api::DayView,
        analytics_api::ReasonView,
        analytics_api::FiguresView,
        SubmitSpec,
        RetryOverrides,
        Ending,
    )),
    modifiers(&BearerToken),
    tags(
        (name = "jobs", description = "Spark executions: list, show, track or submit, cancel, retry"),
        (name = "queue", description = "Transformation queue jobs, driven by Kafka events"),
        (name = "notifications", description = "The notification outbox"),
        (name = "analytics", description = "Per job name: runs, success rate, durations, queue waits, failure reasons"),
        (name = "probes", description = "Liveness, readiness and Prometheus metrics"),
    )
)]
struct ApiDoc;

/// The `bearer` scheme the operations name in their `security`.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document, with this build's version.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document as pretty-printed JSON.
pub fn document_json() -> String {
    document()
        .to_pretty_json()
        .expect("an OpenAPI document always serializes")
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "probes",
    responses((status = 200, description = "This OpenAPI 3.1 document", body = Object, content_type = "application/json"))
)]
pub async fn spec() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document_json())
}
