//! `GET /api/v1/analytics` and `GET /api/v1/analytics/{job_name}`: the analytics page's
//! figures as JSON (see `crate::analytics` for what each one means).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::analytics::{
    Day, Figures, JobSummary, Reason, Window, DEFAULT_DAYS, MAX_DAYS, MAX_JOB_NAMES,
};
use crate::store::analytics_read;

use super::views::ErrorBody;
use super::{error, HttpState};

/// The longest job name the API takes (the column's).
const MAX_NAME: usize = 255;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsQuery {
    /// Whole UTC days, today the last of them (1 to 90, default 7).
    #[param(minimum = 1, maximum = 90)]
    days: Option<u32>,
}

impl AnalyticsQuery {
    /// The asked window, or the 400 to answer.
    fn window(&self) -> Result<Window, Box<HttpResponse>> {
        let days = self.days.unwrap_or(DEFAULT_DAYS);
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                format!("days must be between 1 and {MAX_DAYS}"),
            )));
        }
        Ok(Window::last_days(days, Utc::now()))
    }
}

/// Runs counted by how they ended, with duration and queue-wait percentiles in seconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct FiguresView {
    /// Runs that ended (succeeded, failed or cancelled).
    pub runs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// succeeded ÷ (succeeded + failed), 0 to 1; null when none succeeded or failed.
    pub success_rate: Option<f64>,
    /// Driver start to end, nearest-rank percentiles; null without a run that started.
    pub duration_p50_seconds: Option<f64>,
    pub duration_p95_seconds: Option<f64>,
    /// From the row's creation (or the driver's submission, if earlier) to the driver's start.
    pub queue_wait_p50_seconds: Option<f64>,
    pub queue_wait_p95_seconds: Option<f64>,
}

fn seconds(d: Option<std::time::Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl From<&Figures> for FiguresView {
    fn from(f: &Figures) -> Self {
        FiguresView {
            runs: f.runs,
            succeeded: f.succeeded,
            failed: f.failed,
            cancelled: f.cancelled,
            success_rate: f.success_rate(),
            duration_p50_seconds: seconds(f.duration.p50),
            duration_p95_seconds: seconds(f.duration.p95),
            queue_wait_p50_seconds: seconds(f.queue_wait.p50),
            queue_wait_p95_seconds: seconds(f.queue_wait.p95),
        }
    }
}

/// One job name over the window.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobSummaryView {
    pub job_name: String,
    pub last_ended_at: DateTime<Utc>,
    #[serde(flatten)]
    pub figures: FiguresView,
}

impl From<&JobSummary> for JobSummaryView {
    fn from(s: &JobSummary) -> Self {
        JobSummaryView {
            job_name: s.job_name.clone(),
            last_ended_at: s.last_ended_at,
            figures: (&s.figures).into(),
        }
    }
}

/// One UTC day: the runs that ended on it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayView {
    pub date: NaiveDate,
    #[serde(flatten)]
    pub figures: FiguresView,
}

impl From<&Day> for DayView {
    fn from(d: &Day) -> Self {
        DayView {
            date: d.date,
            figures: (&d.figures).into(),
        }
    }
}

/// Failed runs whose error starts with the same line.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReasonView {
    /// The first non-blank line of the error (at most 200 characters); empty when none was
    /// recorded.
    pub reason: String,
    pub runs: u64,
    pub last_at: DateTime<Utc>,
}

impl From<&Reason> for ReasonView {
    fn from(r: &Reason) -> Self {
        ReasonView {
            reason: r.reason.clone(),
            runs: r.runs,
            last_at: r.last_at,
        }
    }
}

/// Every job name's runs over the window.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsOverview {
    pub days: u32,
    /// Midnight UTC of the window's first day.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The job names with the most runs (at most 50), the most first.
    pub jobs: Vec<JobSummaryView>,
    /// Job names past those 50, and their runs.
    pub other_names: u64,
    pub other_runs: u64,
    /// Runs of executions without a job name.
    pub unnamed_runs: u64,
    /// Every run of the window by the day it ended, oldest day first (empty days included).
    pub per_day: Vec<DayView>,
    /// Only the latest 200,000 runs of the window were read.
    pub truncated: bool,
}

/// One job name's runs over the window, day by day, and its failures by reason.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobAnalytics {
    pub days: u32,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub summary: JobSummaryView,
    /// Oldest day first, empty days included.
    pub per_day: Vec<DayView>,
    /// The 20 most frequent first lines of failed runs' errors, the most frequent first.
    pub failure_reasons: Vec<ReasonView>,
    /// Failed runs whose reason is not among `failure_reasons`.
    pub other_reason_runs: u64,
    pub truncated: bool,
}

fn database_error(e: sea_orm::DbErr) -> HttpResponse {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the database did not answer: {e}"),
    )
}

/// Every job name's runs, success rate, durations and queue waits over the last `days` days.
#[utoipa::path(
    get,
    path = "/api/v1/analytics",
    tag = "analytics",
    params(AnalyticsQuery),
    responses(
        (status = 200, description = "Each job name's figures (the 50 with the most runs) and every run by day", body = AnalyticsOverview),
        (status = 400, description = "days out of range", body = ErrorBody),
        (status = 401, description = "The read token is needed (`http.read_token`)", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn overview(
    state: web::Data<HttpState>,
    query: web::Query<AnalyticsQuery>,
) -> HttpResponse {
    let window = match query.window() {
        Ok(w) => w,
        Err(refusal) => return *refusal,
    };
    match analytics_read::overview(&state.db, window).await {
        Ok(o) => HttpResponse::Ok().json(AnalyticsOverview {
            days: o.window.days,
            from: o.window.from,
            to: o.window.to,
            jobs: o.jobs.iter().map(JobSummaryView::from).collect(),
            other_names: o.other_names,
            other_runs: o.other_runs,
            unnamed_runs: o.unnamed_runs,
            per_day: o.days.iter().map(DayView::from).collect(),
            truncated: o.truncated,
        }),
        Err(e) => database_error(e),
    }
}

/// One job name's runs day by day (counts, duration and queue-wait percentiles) and its
/// failures grouped by the first line of their error.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/{job_name}",
    tag = "analytics",
    params(
        ("job_name" = String, Path, description = "The job name (percent-encoded)"),
        AnalyticsQuery,
    ),
    responses(
        (status = 200, description = "The job name's figures over the window", body = JobAnalytics),
        (status = 400, description = "days out of range, or an unusable name", body = ErrorBody),
        (status = 401, description = "The read token is needed (`http.read_token`)", body = ErrorBody),
        (status = 404, description = "No run of this name ended in the window", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn job(
    state: web::Data<HttpState>,
    path: web::Path<String>,
    query: web::Query<AnalyticsQuery>,
) -> HttpResponse {
    let name = path.into_inner();
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("job_name must be 1 to {MAX_NAME} printable characters"),
        );
    }
    let window = match query.window() {
        Ok(w) => w,
        Err(refusal) => return *refusal,
    };
    match analytics_read::job_detail(&state.db, window, &name).await {
        Ok(Some(d)) => HttpResponse::Ok().json(JobAnalytics {
            days: d.window.days,
            from: d.window.from,
            to: d.window.to,
            summary: (&d.summary).into(),
            per_day: d.days.iter().map(DayView::from).collect(),
            failure_reasons: d.reasons.iter().map(ReasonView::from).collect(),
            other_reason_runs: d.other_reason_runs,
            truncated: d.truncated,
        }),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!(
                "no run of {name:?} ended in the last {} day(s); GET /api/v1/analytics lists the \
                 {MAX_JOB_NAMES} names with the most runs",
                window.days
            ),
        ),
        Err(e) => database_error(e),
    }
}
