//! The job API: list and show Spark executions, track or submit a new one, cancel or retry
//! one, show a queue job.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use crate::domain::{JobStatus, SubmitSpec};
use crate::store::{actions_read, read};
use crate::store_api::{OpError, Source, StoreError, TrackRequest, WriteOp, WriteOutcome};

use super::views::{ExecutionDetail, ExecutionPage, ExecutionView, QueueJobView, WithHistory};
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
    match detail(&state, &id).await {
        Ok(Some(detail)) => HttpResponse::Ok().json(detail),
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
    /// A driver already submitted (by spark-submit or anyone else), for jobwarden to follow.
    submission_id: Option<String>,
    /// Or what jobwarden is to submit itself (and retry, as its policy says).
    submit: Option<SubmitSpec>,
    job_name: Option<String>,
    /// A `[spark.clusters.<name>]`; none is the default cluster.
    cluster: Option<String>,
}

/// Writes (track, cancel, retry) need `Authorization: Bearer <http.api_token>` when a token
/// is configured: the 401 to answer when the request lacks it.
pub(super) fn token_refusal(state: &HttpState, request: &HttpRequest) -> Option<HttpResponse> {
    let token = state.api_token.as_ref()?;
    let presented = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    (presented != Some(token.expose())).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs \"Authorization: Bearer <http.api_token>\"",
        )
    })
}

/// The execution with its history and attempts, as `GET /api/v1/jobs/{id}` shows it.
async fn detail(
    state: &HttpState,
    execution_id: &str,
) -> Result<Option<ExecutionDetail>, sea_orm::DbErr> {
    let Some((job, history)) = read::execution_with_history(&state.db, execution_id).await? else {
        return Ok(None);
    };
    let attempts = actions_read::attempts_of(&state.db, execution_id).await?;
    Ok(Some(ExecutionDetail::new(job, history, attempts)))
}

/// `POST /api/v1/jobs`: register a Spark submission (`submission_id`), or a job for jobwarden
/// to submit (`submit`), through the JobStore like every write.
pub async fn track_job(
    state: web::Data<HttpState>,
    request: HttpRequest,
    body: web::Json<TrackBody>,
) -> HttpResponse {
    if let Some(denied) = token_refusal(&state, &request) {
        return denied;
    }
    let body = body.into_inner();
    if let Err(message) = check_id("execution_id", &body.execution_id) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    match (&body.submission_id, &body.submit) {
        (Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "give either submission_id (a driver already submitted, for jobwarden to follow) or submit (a spec for jobwarden to submit), not both",
            )
        }
        (None, None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "give submission_id (a driver already submitted, for jobwarden to follow) or submit (a spec for jobwarden to submit: app_resource, main_class, …)",
            )
        }
        (Some(id), None) => {
            if let Err(message) = check_id("submission_id", id) {
                return error(StatusCode::BAD_REQUEST, message);
            }
        }
        (None, Some(spec)) => {
            if let Err(e) = spec.check() {
                return error(StatusCode::BAD_REQUEST, e.to_string());
            }
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
    if body.submit.is_some() {
        // Accepted, such a job would wait in Queued for ever: say so while someone listens.
        if let Some(gate) = &state.submit_gate {
            if let Some(message) = gate.refusal(cluster.as_deref()).await {
                return error(StatusCode::CONFLICT, message);
            }
        }
    }
    let execution_id = body.execution_id.trim().to_owned();
    let op = WriteOp::Track(TrackRequest {
        execution_id: execution_id.clone(),
        submission_id: body.submission_id.map(|s| s.trim().to_owned()),
        spec: body.submit,
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
            match detail(&state, &execution_id).await {
                Ok(Some(detail)) => HttpResponse::build(status).json(detail),
                _ => HttpResponse::build(status).json(json!({ "execution_id": execution_id })),
            }
        }
        Ok(other) => unexpected(other),
        Err(StoreError::Refused(OpError::Duplicate { execution_id })) => error(
            StatusCode::CONFLICT,
            format!("execution {execution_id:?} is already tracked"),
        ),
        Err(e) => refused(e, "not registered"),
    }
}

/// The execution an action on one job (cancel, retry) is about, once the caller may act.
fn action_target(
    state: &HttpState,
    request: &HttpRequest,
    path: web::Path<String>,
) -> Result<String, Box<HttpResponse>> {
    if let Some(denied) = token_refusal(state, request) {
        return Err(Box::new(denied));
    }
    let id = path.into_inner();
    check_id("execution_id", &id)
        .map_err(|message| Box::new(error(StatusCode::BAD_REQUEST, message)))?;
    Ok(id)
}

/// `POST /api/v1/jobs/{execution_id}/cancel`: a job no driver runs for ends at once
/// (`ended: true`); otherwise its driver is killed and the job ends Cancelled once Spark
/// reports it KILLED (`ended: false`).
pub async fn cancel_job(
    state: web::Data<HttpState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let id = match action_target(&state, &request, path) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let op = WriteOp::Cancel {
        execution_id: id.clone(),
        at: Utc::now(),
    };
    match state.store.write(op).await {
        Ok(WriteOutcome::CancelTaken {
            ended,
            submission_id,
        }) => {
            with_detail(
                &state,
                &id,
                StatusCode::OK,
                json!({ "ended": ended, "submission_id": submission_id }),
            )
            .await
        }
        Ok(other) => unexpected(other),
        Err(e) => refused(e, "not cancelled"),
    }
}

/// `POST /api/v1/jobs/{execution_id}/retry`: one more attempt of a finished job jobwarden
/// submitted, due now.
pub async fn retry_job(
    state: web::Data<HttpState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let id = match action_target(&state, &request, path) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let op = WriteOp::Retry {
        execution_id: id.clone(),
        at: Utc::now(),
    };
    match state.store.write(op).await {
        Ok(WriteOutcome::RetryTaken { attempt }) => {
            with_detail(
                &state,
                &id,
                StatusCode::ACCEPTED,
                json!({ "attempt": attempt }),
            )
            .await
        }
        Ok(other) => unexpected(other),
        Err(e) => refused(e, "not retried"),
    }
}

/// `head` (an object) with the job, its history and attempts beside it: the answer of
/// `GET /api/v1/jobs/{id}` plus what the action did. The action is durable by now, so a failed
/// read leaves the job out rather than turning the answer into an error.
async fn with_detail(
    state: &HttpState,
    execution_id: &str,
    status: StatusCode,
    mut head: serde_json::Value,
) -> HttpResponse {
    if let Ok(Some(detail)) = detail(state, execution_id).await {
        if let (Some(head), Ok(serde_json::Value::Object(rest))) =
            (head.as_object_mut(), serde_json::to_value(detail))
        {
            head.extend(rest);
        }
    }
    HttpResponse::build(status).json(head)
}

fn unexpected(outcome: WriteOutcome) -> HttpResponse {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("unexpected outcome {outcome:?}"),
    )
}

/// A write the store did not make: the job's state forbids it (409), no such job (404), or the
/// store could not answer (503).
fn refused(e: StoreError, what: &str) -> HttpResponse {
    match e {
        StoreError::Refused(OpError::UnknownExecution { execution_id }) => error(
            StatusCode::NOT_FOUND,
            format!("no execution {execution_id:?}"),
        ),
        StoreError::Refused(
            refusal @ (OpError::NotNow(_)
            | OpError::ApplicationRows { .. }
            | OpError::Duplicate { .. }
            | OpError::CorruptRow { .. }),
        ) => error(StatusCode::CONFLICT, refusal.to_string()),
        e => error(StatusCode::SERVICE_UNAVAILABLE, format!("{what}: {e}")),
    }
}
