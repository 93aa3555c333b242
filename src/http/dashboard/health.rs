//! The health page (`/health`): the database, each Spark cluster, Kafka, the pollers, the
//! store's batches and commits, and actor restarts — what `/readyz` and `/metrics` know, for
//! people.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use prometheus::core::Collector;

use crate::config::DEFAULT_CLUSTER;
use crate::metrics::Metrics;
use crate::store::dashboard_read;

use super::super::HttpState;
use super::layout::{time, Nav, Page};
use super::{respond, View};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn page(request: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    render(request, state, View::Page).await
}

pub async fn live(request: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    render(request, state, View::Live).await
}

async fn render(request: HttpRequest, state: web::Data<HttpState>, view: View) -> HttpResponse {
    let database = match tokio::time::timeout(PROBE_TIMEOUT, state.db.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("unreachable: {e}")),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    };
    let answers = if database.is_ok() {
        tokio::time::timeout(
            PROBE_TIMEOUT,
            dashboard_read::last_answer_per_cluster(&state.db),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
    } else {
        Vec::new()
    };
    let m = &state.metrics;
    let content = html! {
        div.grid {
            (database_card(&state, &database))
            (spark_card(&state, &answers))
            (pollers_card(&state))
            (kafka_card(&state))
            (store_card(m))
            (restarts_card(m))
        }
    };
    let page = Page {
        title: "Health".to_owned(),
        nav: Nav::Health,
        fixed: None,
        regions: vec![("health", content)],
    };
    respond(&request, view, StatusCode::OK, page)
}

fn up(ok: bool, yes: &str, no: &str) -> Markup {
    html! { @if ok { span.up { "● " (yes) } } @else { span.down { "✕ " (no) } } }
}

fn database_card(state: &HttpState, database: &Result<(), String>) -> Markup {
    html! {
        div.card #database {
            h2 { "Database" }
            dl.facts {
                dt { "Answers now" } dd {
                    @match database { Ok(()) => (up(true, "up", "")), Err(e) => { (up(false, "", "down")) " " span.note { (e) } } }
                }
                dt { "Store" } dd {
                    (up(state.store.connected() && state.store_health.database_up(), "writing", "holding changes until the database is back"))
                }
                @for heart in &state.heartbeats {
                    dt { (heart.name()) } dd {
                        @match heart.judge() { Ok(d) => { (up(true, "ok", "")) @if d != "ok" { " " span.note { (d) } } }, Err(e) => { (up(false, "", "stalled")) " " span.note { (e) } } }
                    }
                }
                dt { "Instance" } dd { code { (state.instance) } }
                dt { "Share" } dd {
                    (state.metrics.buckets_held.get()) " of 64 buckets"
                    @if state.metrics.leader.get() > 0.0 { ", leader" }
                    ", " (state.metrics.live_instances.get()) " live instance(s)"
                }
            }
        }
    }
}

/// Each labelled series of a gauge or counter family, by its one label's value.
fn series(collector: &dyn Collector) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for family in collector.collect() {
        let gauge = family.get_field_type() == prometheus::proto::MetricType::GAUGE;
        for metric in family.get_metric() {
            let label = metric
                .get_label()
                .first()
                .map(|l| l.value().to_owned())
                .unwrap_or_default();
            let value = if gauge {
                metric.get_gauge().get_value()
            } else {
                metric.get_counter().get_value()
            };
            out.insert(label, value);
        }
    }
    out
}

fn spark_card(state: &HttpState, answers: &[(Option<String>, Option<DateTime<Utc>>)]) -> Markup {
    let up_by_cluster = series(&state.metrics.spark_up);
    let clusters: Vec<String> = std::iter::once(DEFAULT_CLUSTER.to_owned())
        .chain(state.clusters.iter().cloned())
        .collect();
    let last_answer = |name: &str| {
        answers
            .iter()
            .find(|(c, _)| c.as_deref().unwrap_or(DEFAULT_CLUSTER) == name)
            .and_then(|(_, at)| *at)
    };
    html! {
        div.card #spark {
            h2 { "Spark clusters" }
            table {
                thead { tr { th { "Cluster" } th { "State" } th { "Last change confirmed" } } }
                tbody {
                    @for name in &clusters {
                        tr data-cluster=(name) {
                            td { code { (name) } }
                            td { @match up_by_cluster.get(name) {
                                Some(v) => (up(*v > 0.0, "up", "down")),
                                None => span.muted { "not asked yet" },
                            } }
                            td { (time(last_answer(name))) }
                        }
                    }
                }
            }
            p.note { "Up or down as the last poll found it; the last change Spark confirmed on an unfinished job (polls that bring no news write nothing)." }
        }
    }
}

fn pollers_card(state: &HttpState) -> Markup {
    let busy = state.metrics.polls_in_flight.get().max(0) as usize;
    let pool = state.max_concurrent_polls;
    let outcomes = series(&state.metrics.polls);
    html! {
        div.card #pollers {
            h2 { "Pollers" }
            dl.facts {
                dt { "Busy" } dd { (busy) " of " (pool) }
                dt { "Idle" } dd { (pool.saturating_sub(busy)) }
                @for (outcome, n) in &outcomes { dt { "Polls " (outcome) } dd { (n) } }
                dt { "Ticks skipped" } dd { (state.metrics.scheduler_ticks_skipped.get()) }
                dt { "Timeouts" } dd { (state.metrics.timeouts.get()) }
            }
        }
    }
}

fn kafka_card(state: &HttpState) -> Markup {
    let events = series(&state.metrics.kafka_events);
    html! {
        div.card #kafka {
            h2 { "Kafka" }
            @if state.kafka_topic.is_some() {
                dl.facts {
                    dt { "Lag" } dd { (state.metrics.kafka_consumer_lag.get()) " messages behind, all assigned partitions together" }
                    @for (outcome, n) in &events { dt { "Events " (outcome) } dd { (n) } }
                }
                p.note { "Per-partition lag is not broken out by the listener yet; /metrics has the same total." }
            } @else {
                p.muted { "Not configured: no [kafka] section, so no status events are consumed." }
            }
        }
    }
}

/// The upper bound of the histogram bucket holding quantile `q`, if anything was observed.
fn bucket_quantile(h: &prometheus::Histogram, q: f64) -> Option<f64> {
    let family = h.collect();
    let metric = family.first()?.get_metric().first()?;
    let histogram = metric.get_histogram();
    let total = histogram.get_sample_count();
    if total == 0 {
        return None;
    }
    let rank = (total as f64 * q).ceil() as u64;
    histogram
        .get_bucket()
        .iter()
        .find(|b| b.cumulative_count() >= rank)
        .map(|b| b.upper_bound())
}

fn store_card(m: &Metrics) -> Markup {
    let batches = m.store_batch_size.get_sample_count();
    let mean_batch = (batches > 0).then(|| m.store_batch_size.get_sample_sum() / batches as f64);
    let commits = m.store_commit_seconds.get_sample_count();
    let mean_commit =
        (commits > 0).then(|| m.store_commit_seconds.get_sample_sum() / commits as f64);
    let ms = |s: f64| format!("{:.1} ms", s * 1000.0);
    html! {
        div.card #store {
            h2 { "Store" }
            dl.facts {
                dt { "Transactions" } dd { (batches) }
                dt { "Changes per batch" } dd {
                    @match mean_batch { Some(b) => { (format!("{b:.1}")) " on average" @if let Some(p) = bucket_quantile(&m.store_batch_size, 0.99) { ", 99% ≤ " (p) } }, None => span.none { "none yet" } }
                }
                dt { "Commit time" } dd {
                    @match mean_commit { Some(s) => { (ms(s)) " on average"
                        @if let Some(p) = bucket_quantile(&m.store_commit_seconds, 0.5) { ", 50% ≤ " (ms(p)) }
                        @if let Some(p) = bucket_quantile(&m.store_commit_seconds, 0.99) { ", 99% ≤ " (ms(p)) } },
                      None => span.none { "none yet" } }
                }
                dt { "Retries" } dd { (m.store_retries.get()) }
                dt { "Rows written" } dd { (m.store_rows_written.get()) }
                dt { "Stale writes refused" } dd { (m.fenced_writes.get()) }
            }
        }
    }
}

fn restarts_card(m: &Metrics) -> Markup {
    let restarts = series(&m.actor_restarts);
    html! {
        div.card #restarts {
            h2 { "Actor restarts" }
            @if restarts.values().all(|n| *n == 0.0) {
                p.up { "None since start." }
            } @else {
                dl.facts { @for (actor, n) in &restarts { dt { (actor) } dd { (n) } } }
            }
        }
    }
}
