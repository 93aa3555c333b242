//! `/healthz`, `/readyz` and `/metrics`.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::{Map, Value};

use crate::store::read;

use super::views::{Alive, Readiness, Share};
use super::HttpState;

/// The process answers: nothing more.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "probes",
    responses((status = 200, description = "The process serves", body = Alive))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Alive {
        status: "ok".into(),
    })
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// 200 only when the database answers and every part has shown progress recently (its
/// heartbeat); otherwise 503 naming what is not.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    responses(
        (status = 200, description = "Every part is ready", body = Readiness),
        (status = 503, description = "Some part is not: `not_ready` names it, `checks` says why", body = Readiness),
    )
)]
pub async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let mut checks = Map::new();
    let mut not_ready = Vec::new();
    let mut check = |name: &str, result: Result<String, String>| match result {
        Ok(detail) => {
            checks.insert(name.into(), Value::String(detail));
        }
        Err(problem) => {
            checks.insert(name.into(), Value::String(problem));
            not_ready.push(name.to_owned());
        }
    };
    let database = match tokio::time::timeout(PROBE_TIMEOUT, state.db.ping()).await {
        Ok(Ok(())) => Ok("ok".to_owned()),
        Ok(Err(e)) => Err(format!("unreachable: {e}")),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    };
    check("database", database);
    check(
        "job_store",
        if !state.store.connected() {
            Err("not running".into())
        } else {
            state.store_health.judge()
        },
    );
    for heart in &state.heartbeats {
        check(heart.name(), heart.judge());
    }
    if state.kafka_topic.is_none() {
        check("kafka_listener", Ok("not configured".into()));
    }
    // Detail, never a 503: an instance waiting for its share (others hold every bucket
    // until their leases move) is healthy, and says so.
    let buckets = state.metrics.buckets_held.get();
    checks.insert(
        "share".into(),
        Value::String(if buckets > 0.0 {
            format!("{buckets} of 64 buckets")
        } else {
            format!(
                "no share of the work yet ({} instances live)",
                state.metrics.live_instances.get()
            )
        }),
    );
    // Detail, never a 503: the outbox keeps what a failing channel could not take.
    if let Some(standing) = &state.notifications {
        checks.insert("notifications".into(), Value::String(standing.describe()));
    }
    let ready = not_ready.is_empty();
    let body = Readiness {
        ready,
        instance: state.instance.clone(),
        share: Share {
            buckets: state.metrics.buckets_held.get(),
            leader: state.metrics.leader.get() > 0.0,
            live_instances: state.metrics.live_instances.get(),
        },
        checks,
        not_ready,
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE).json(body)
    }
}

/// Prometheus text format; the per-status job gauge and the submission queue's depth are read
/// from the database at scrape time.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "probes",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"))
)]
pub async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    if let Ok(Ok(counts)) =
        tokio::time::timeout(PROBE_TIMEOUT, read::count_by_status(&state.db)).await
    {
        state.metrics.jobs.reset();
        for (status, n) in counts {
            state
                .metrics
                .jobs
                .with_label_values(&[status.as_str()])
                .set(n as f64);
        }
    }
    if let Ok(Ok(depth)) = tokio::time::timeout(
        PROBE_TIMEOUT,
        read::submission_queue(&state.db, chrono::Utc::now()),
    )
    .await
    {
        state.metrics.submission_queue.reset();
        for (cluster, priority, n) in depth {
            state
                .metrics
                .submission_queue
                .with_label_values(&[cluster.as_str(), priority.to_string().as_str()])
                .set(n as f64);
        }
    }
    if let Some(standing) = &state.notifications {
        for (channel, failing) in standing.each() {
            state
                .metrics
                .notification_channel_failing
                .with_label_values(&[channel.as_str()])
                .set(if failing { 1.0 } else { 0.0 });
        }
    }
    if let Some(topic) = &state.kafka_topic {
        let up = state
            .heartbeats
            .iter()
            .filter_map(|part| part.reach.as_ref())
            .all(|reach| reach.is_up());
        state
            .metrics
            .kafka_brokers_up
            .with_label_values(&[topic.as_str()])
            .set(if up { 1.0 } else { 0.0 });
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
