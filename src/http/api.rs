//! The job API: list and show Spark executions, track or submit a new one, cancel or retry
//! one, show a queue job.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;

use crate::domain::{JobStatus, SubmitSpec};
use crate::store::{actions_read, read};
use crate::store_api::{
    OpError, OrderingAsked, Source, StoreError, TrackRequest, WriteOp, WriteOutcome,
};

use super::views::{
    AfterAction, CancelTaken, ErrorBody, ExecutionDetail, ExecutionPage, ExecutionView,
    QueueJobView, RetryTaken, Tracked, WithHistory,
};
use super::{error, HttpState};

const MAX_ID: usize = 191;
const MAX_LIMIT: u64 = 1_000;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only executions in this status (Queued, Submitted, Running, …).
    status: Option<String>,
    /// At most this many executions (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// The `next_cursor` of the page before.
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
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of executions, ordered by execution id", body = ExecutionPage),
        (status = 400, description = "An unknown status, a limit out of range or an unusable cursor", body = ErrorBody),
        (status = 401, description = "The read token is needed (`http.read_token`)", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{execution_id}",
    tag = "jobs",
    params(("execution_id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "The execution, its history and its attempts", body = ExecutionDetail),
        (status = 400, description = "An unusable id", body = ErrorBody),
        (status = 401, description = "The read token is needed (`http.read_token`)", body = ErrorBody),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/queue/{job_id}",
    tag = "queue",
    params(("job_id" = String, Path, description = "The queue job's id")),
    responses(
        (status = 200, description = "The queue job and its history", body = WithHistory<QueueJobView>),
        (status = 400, description = "An unusable id", body = ErrorBody),
        (status = 401, description = "The read token is needed (`http.read_token`)", body = ErrorBody),
        (status = 404, description = "No such queue job", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackBody {
    /// The execution's id (1 to 191 printable characters).
    execution_id: String,
    /// A driver already submitted (by spark-submit or anyone else), for jobwarden to follow.
    submission_id: Option<String>,
    /// Or what jobwarden is to submit itself (and retry, as its policy says).
    submit: Option<SubmitSpec>,
    job_name: Option<String>,
    /// A `[spark.clusters.<name>]`; none is the default cluster.
    cluster: Option<String>,
    /// With `submit`: jobs (execution ids) it waits for; it runs only if every one succeeds,
    /// and ends Cancelled, naming the parent, if one fails or is cancelled.
    #[serde(default)]
    after: Vec<String>,
    /// With `submit`: jobs it waits for whatever their outcome.
    #[serde(default)]
    after_any: Vec<String>,
    /// With `submit`: its priority in the submission queue, 0 (default, lowest) to 1000.
    #[schema(minimum = 0, maximum = 1000)]
    priority: Option<i64>,
    /// With `submit`, instead of `cluster`: the clusters it may be placed on (`default` is
    /// `[spark]`); it goes to the one with the most free capacity that is not away.
    clusters: Option<Vec<String>>,
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
    let parents = actions_read::parents_of(&state.db, execution_id).await?;
    Ok(Some(ExecutionDetail::new(job, history, attempts, parents)))
}

/// `POST /api/v1/jobs`: register a Spark submission (`submission_id`), or a job for jobwarden
/// to submit (`submit`), through the JobStore like every write.
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "jobs",
    request_body = TrackBody,
    responses(
        (status = 201, description = "Tracked from now on", body = Tracked),
        (status = 200, description = "Known already without a driver (from an event, say): it follows this submission now", body = Tracked),
        (status = 400, description = "The body is not usable (an unknown parent, a job waiting for itself, a priority out of range, an unknown cluster…); the message names the field", body = ErrorBody),
        (status = 401, description = "The API token is needed (`http.api_token`)", body = ErrorBody),
        (status = 409, description = "Tracked already with another submission, or the cluster takes no submissions", body = ErrorBody),
        (status = 503, description = "The store could not take the change", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
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
    let asked = OrderingAsked {
        after: body.after,
        after_any: body.after_any,
        priority: body.priority,
        clusters: body.clusters,
    };
    let request = TrackRequest {
        job_name: body.job_name,
        cluster,
        ..TrackRequest::new(
            execution_id.clone(),
            body.submission_id.map(|s| s.trim().to_owned()),
            body.submit,
            Source::Api,
        )
    };
    let request = match request.ordered(asked, |name| state.clusters.iter().any(|c| c == name)) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let op = WriteOp::Track(request);
    let answer = state.store.write(op).await;
    match answer {
        Ok(WriteOutcome::Tracked { created }) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let after = detail(&state, &execution_id).await.ok().flatten().into();
            HttpResponse::build(status).json(Tracked {
                execution_id,
                after,
            })
        }
        Ok(other) => unexpected(other),
        Err(StoreError::Refused(OpError::Duplicate { execution_id })) => error(
            StatusCode::CONFLICT,
            format!("execution {execution_id:?} is already tracked"),
        ),
        Err(StoreError::Refused(OpError::Dependency(message))) => {
            error(StatusCode::BAD_REQUEST, message)
        }
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
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{execution_id}/cancel",
    tag = "jobs",
    params(("execution_id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "Cancelled, or its driver is being killed", body = CancelTaken),
        (status = 400, description = "An unusable id", body = ErrorBody),
        (status = 401, description = "The API token is needed (`http.api_token`)", body = ErrorBody),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 409, description = "Its state forbids it (it has ended, say)", body = ErrorBody),
        (status = 503, description = "The store could not take the change", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
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
        }) => HttpResponse::Ok().json(CancelTaken {
            ended,
            submission_id,
            after: after_action(&state, &id).await,
        }),
        Ok(other) => unexpected(other),
        Err(e) => refused(e, "not cancelled"),
    }
}

/// `POST /api/v1/jobs/{execution_id}/retry`: one more attempt of a finished job jobwarden
/// submitted, due now.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{execution_id}/retry",
    tag = "jobs",
    params(("execution_id" = String, Path, description = "The execution's id")),
    responses(
        (status = 202, description = "One more attempt, due now", body = RetryTaken),
        (status = 400, description = "An unusable id", body = ErrorBody),
        (status = 401, description = "The API token is needed (`http.api_token`)", body = ErrorBody),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 409, description = "Its state forbids it (it has not ended, or jobwarden did not submit it)", body = ErrorBody),
        (status = 503, description = "The store could not take the change", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
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
        Ok(WriteOutcome::RetryTaken { attempt }) => HttpResponse::Accepted().json(RetryTaken {
            attempt,
            after: after_action(&state, &id).await,
        }),
        Ok(other) => unexpected(other),
        Err(e) => refused(e, "not retried"),
    }
}

/// The job, its history and attempts after an action. The action is durable by now, so a
/// failed read leaves the job out rather than turning the answer into an error.
async fn after_action(state: &HttpState, execution_id: &str) -> AfterAction {
    detail(state, execution_id).await.ok().flatten().into()
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
