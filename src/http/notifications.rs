//! `GET /api/v1/notifications`: the outbox as operators need it — what is waiting, what was
//! delivered, and what could not be (with the receiver's answer).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::views::{ErrorBody, OutboxMessageView, OutboxPage, Resent};
use super::{error, HttpState};
use crate::store::outbox;
use crate::store_api::ResendFailed;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// Only messages in this state: pending, delivered or failed.
    state: Option<String>,
    /// At most this many messages (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// The outbox: counts by state and the newest messages.
#[utoipa::path(
    get,
    path = "/api/v1/notifications",
    tag = "notifications",
    params(OutboxQuery),
    responses(
        (status = 200, description = "Counts by state and the newest messages", body = OutboxPage),
        (status = 400, description = "A query parameter is out of range", body = ErrorBody),
        (status = 401, description = "The read token is needed (`http.read_token`)", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn list(state: web::Data<HttpState>, query: web::Query<OutboxQuery>) -> HttpResponse {
    let wanted = query.state.as_deref();
    if let Some(s) = wanted {
        if ![outbox::PENDING, outbox::DELIVERED, outbox::FAILED].contains(&s) {
            return error(
                StatusCode::BAD_REQUEST,
                "state must be pending, delivered or failed",
            );
        }
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return error(StatusCode::BAD_REQUEST, "limit must be between 1 and 1000");
    }
    let answer = async {
        let counts = outbox::counts(&state.db).await?;
        let messages = outbox::list(&state.db, wanted, limit).await?;
        Ok::<_, sea_orm::DbErr>((counts, messages))
    };
    match answer.await {
        Ok((counts, messages)) => HttpResponse::Ok().json(OutboxPage {
            counts,
            messages: messages.into_iter().map(OutboxMessageView::from).collect(),
        }),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database did not answer: {e}"),
        ),
    }
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendBody {
    /// An RFC 3339 instant or a duration ago ("2h"): only messages that failed since then.
    #[schema(example = "2h")]
    since: Option<String>,
    /// Only messages of this channel.
    channel: Option<String>,
}

/// `POST /api/v1/notifications/resend`: failed messages back in the outbox, each with a
/// fresh `give_up_after` (after a receiver's secret was fixed, say).
#[utoipa::path(
    post,
    path = "/api/v1/notifications/resend",
    tag = "notifications",
    request_body(content = Option<ResendBody>, description = "No body resends every failed message"),
    responses(
        (status = 200, description = "How many failed messages are back in the outbox", body = Resent),
        (status = 400, description = "The body does not read, or `since` is neither an instant nor a duration", body = ErrorBody),
        (status = 401, description = "The API token is needed (`http.api_token`)", body = ErrorBody),
        (status = 503, description = "The store could not put the messages back", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn resend(
    state: web::Data<HttpState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if let Some(refused) = super::api::token_refusal(&state, &request) {
        return refused;
    }
    // No body resends every failed message; a body that does not read is refused, never
    // taken for none.
    let body: ResendBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResendBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
        }
    };
    let now = chrono::Utc::now();
    let since = match body
        .since
        .as_deref()
        .map(|s| ResendFailed::since_from(s, now))
    {
        Some(Err(message)) => return error(StatusCode::BAD_REQUEST, message),
        Some(Ok(at)) => Some(at),
        None => None,
    };
    let answer = state
        .store
        .resend_failed(ResendFailed {
            since,
            channel: body.channel,
            now,
        })
        .await;
    match answer {
        Ok(resent) => HttpResponse::Ok().json(Resent { resent }),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store could not put the messages back: {e}"),
        ),
    }
}
