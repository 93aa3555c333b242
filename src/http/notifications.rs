//! `GET /api/v1/notifications`: the outbox as operators need it — what is waiting, what was
//! delivered, and what could not be (with the receiver's answer).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{error, HttpState};
use crate::store::outbox;
use crate::store_api::ResendFailed;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    state: Option<String>,
    limit: Option<u64>,
}

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
        Ok((counts, messages)) => {
            let messages: Vec<serde_json::Value> = messages
                .into_iter()
                .map(|m| {
                    let payload: serde_json::Value =
                        serde_json::from_str(&m.payload).unwrap_or_default();
                    json!({
                        "message_id": m.message_id,
                        "channel": m.channel,
                        "event": m.event,
                        "job_kind": m.job_kind,
                        "job_id": m.job_id,
                        "state": m.state,
                        "attempts": m.attempts,
                        "last_error": m.last_error,
                        "created_at": m.created_at,
                        "next_attempt_at": m.next_attempt_at,
                        "finished_at": m.finished_at,
                        "group_id": m.group_id,
                        "notification": payload,
                    })
                })
                .collect();
            HttpResponse::Ok().json(json!({ "counts": counts, "messages": messages }))
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database did not answer: {e}"),
        ),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ResendBody {
    /// An RFC 3339 instant or a duration ago ("2h"): only messages that failed since then.
    since: Option<String>,
    channel: Option<String>,
}

/// `POST /api/v1/notifications/resend`: failed messages back in the outbox, each with a
/// fresh `give_up_after` (after a receiver's secret was fixed, say).
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
        Ok(resent) => HttpResponse::Ok().json(json!({ "resent": resent })),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store could not put the messages back: {e}"),
        ),
    }
}
