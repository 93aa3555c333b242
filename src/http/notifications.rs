//! `GET /api/v1/notifications`: the outbox as operators need it — what is waiting, what was
//! delivered, and what could not be (with the receiver's answer).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{error, HttpState};
use crate::store::outbox;

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
