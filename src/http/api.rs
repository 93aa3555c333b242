//! The job API: list and show Spark executions, track a new one, show a queue job.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::domain::JobStatus;
use crate::store::read;
use crate::store_api::{OpError, Source, StoreError, TrackRequest, WriteOp, WriteOutcome};

use super::views::{ExecutionPage, ExecutionView, QueueJobView, WithHistory};
use super::{error, HttpState};

const MAX_ID: usize = 191;
const MAX_LIMIT: u64 = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<u64>,
    cursor: Option<String>,
}

/// Why an id is unusable, as a 400's message.
fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.trim().is_empty() || id.len() > MAX_ID || id.chars().any(char::is_control) {
        return Err(format!("{what} must be 1 to {MAX_ID} printable characters"));
    }
    Ok(())
}

fn database_error(e: sea_orm::DbErr) -> HttpResponse {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the database did not answer: {e}"),
    )
}

/// `GET /api/v1/jobs?status=&limit=&cursor=`: pages ordered by execution id; pass
/// `next_cursor` back as `cursor` for the next page.
pub async fn list_jobs(state: web::Data<HttpState>, query: web::Query<ListQuery>) -> HttpResponse {
    let status = match query.status.as_deref().map(str::parse::<JobStatus>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIMIT}"),
        );
    }
    if let Some(cursor) = &query.cursor {
        if let Err(message) = check_id("cursor", cursor) {
            return error(StatusCode::BAD_REQUEST, message);
        }
    }
    match read::page_executions(&state.db, status, query.cursor.as_deref(), limit).await {
        Ok(jobs) => {
            let next_cursor = (jobs.len() as u64 == limit)
                .then(|| jobs.last().map(|j| j.execution_id.clone()))
                .flatten();
            HttpResponse::Ok().json(ExecutionPage {
                jobs: jobs.into_iter().map(ExecutionView::from).collect(),
                next_cursor,
            })
        }
        Err(e) => database_error(e),
    }
}

/// `GET /api/v1/jobs/{execution_id}`: the row and its history.
pub async fn show_job(state: web::Data<HttpState>, path: web::Path<String>) -> HttpResponse {
    let id = path.into_inner();
    if let Err(message) = check_id("execution_id", &id) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    match read::execution_with_history(&state.db, &id).await {
        Ok(Some((job, history))) => {
            HttpResponse::Ok().json(WithHistory::<ExecutionView>::new(job, history))
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no execution {id:?}")),
        Err(e) => database_error(e),
    }
}

/// `GET /api/v1/queue/{job_id}`: a transformation queue row and its history.
pub async fn show_queue_job(state: web::Data<HttpState>, path: web::Path<String>) -> HttpResponse {
    let id = path.into_inner();
    if let Err(message) = check_id("job_id", &id) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    match read::queue_job_with_history(&state.db, &id).await {
        Ok(Some((job, history))) => {
            HttpResponse::Ok().json(WithHistory::<QueueJobView>::new(job, history))
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no queue job {id:?}")),
        Err(e) => database_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackBody {
    execution_id: String,
    submission_id: String,
    job_name: Option<String>,
    /// A `[spark.clusters.<name>]`; none is the default cluster.
    cluster: Option<String>,
}

/// `POST /api/v1/jobs`: register a Spark submission, through the JobStore like every write.
pub async fn track_job(
    state: web::Data<HttpState>,
    request: HttpRequest,
    body: web::Json<TrackBody>,
) -> HttpResponse {
    if let Some(token) = &state.api_token {
        let presented = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token.expose()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs \"Authorization: Bearer <http.api_token>\"",
            );
        }
    }
    let body = body.into_inner();
    for (what, id) in [
        ("execution_id", &body.execution_id),
        ("submission_id", &body.submission_id),
    ] {
        if let Err(message) = check_id(what, id) {
            return error(StatusCode::BAD_REQUEST, message);
        }
    }
    if body.job_name.as_ref().is_some_and(|n| n.len() > 255) {
        return error(
            StatusCode::BAD_REQUEST,
            "job_name must be at most 255 characters",
        );
    }
    let cluster = body.cluster.map(|c| c.trim().to_owned());
    if let Some(name) = &cluster {
        if !state.clusters.contains(name) {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "no Spark cluster named {name:?}: configured are {}; leave cluster out for the default one",
                    if state.clusters.is_empty() {
                        "none besides the default".to_owned()
                    } else {
                        state.clusters.join(", ")
                    }
                ),
            );
        }
    }
    let op = WriteOp::Track(TrackRequest {
        execution_id: body.execution_id.trim().to_owned(),
        submission_id: Some(body.submission_id.trim().to_owned()),
        job_name: body.job_name,
        cluster,
        source: Source::Api,
    });
    let answer = state.store.write(op).await;
    match answer {
        Ok(WriteOutcome::Tracked { created }) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            match read::execution_with_history(&state.db, body.execution_id.trim()).await {
                Ok(Some((job, history))) => {
                    HttpResponse::build(status)
                        .json(WithHistory::<ExecutionView>::new(job, history))
                }
                _ => HttpResponse::build(status).json(json!({ "execution_id": body.execution_id })),
            }
        }
        Ok(other) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected outcome {other:?}"),
        ),
        Err(StoreError::Refused(OpError::Duplicate { execution_id })) => error(
            StatusCode::CONFLICT,
            format!("execution {execution_id:?} is already tracked"),
        ),
        Err(StoreError::Refused(refusal @ OpError::ApplicationRows { .. })) => {
            error(StatusCode::CONFLICT, refusal.to_string())
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not registered: {e}"),
        ),
    }
}
