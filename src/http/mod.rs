//! The HTTP server: health, readiness, Prometheus metrics and the job API, on one address.

mod analytics_api;
mod api;
mod dashboard;
mod notifications;
mod openapi;
mod probes;
mod views;

pub use openapi::document_json as openapi_json;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use sea_orm::DatabaseConnection;
use serde_json::json;

use crate::actors::StoreHealth;
use crate::config::Secret;
use crate::health::Part;
use crate::metrics::Metrics;
use crate::store_api::StoreHandle;

/// What the handlers need; cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    pub db: DatabaseConnection,
    pub store: StoreHandle,
    pub store_health: Arc<StoreHealth>,
    /// The parts other than the store (whose check also needs the database's state, in
    /// `store_health`): the scheduler and, when configured, the listener with its brokers.
    pub heartbeats: Vec<Part>,
    /// The consumed topic, when `[kafka]` is configured.
    pub kafka_topic: Option<String>,
    /// How each notification channel has fared, when notifications are on (on every
    /// instance; only the leader delivers, so only its standing changes).
    pub notifications: Option<Arc<crate::notify::standing::ChannelStanding>>,
    pub metrics: Arc<Metrics>,
    pub api_token: Option<Secret>,
    /// This instance's id among those sharing the database.
    pub instance: String,
    /// The named Spark clusters a job may be tracked on (besides the default one).
    pub clusters: Vec<String>,
    /// Required on the dashboard and the read API when set (see `dashboard::access`).
    pub read_token: Option<Secret>,
    /// The poller pool's size, for the dashboard's busy/idle figure.
    pub max_concurrent_polls: usize,
    /// Refuses submissions to a cluster whose REST submission server is off; none where
    /// jobwarden does not submit (mapped tables), or in tests that do not ask Spark.
    pub submit_gate: Option<Arc<crate::backend::rest_off::SubmitGate>>,
}

/// A JSON error body with a message that says what to do.
pub(crate) fn error(
    status: actix_web::http::StatusCode,
    message: impl Into<String>,
) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.into() }))
}

/// Starts the server on an already bound socket, on the current system; returns its address
/// and a handle to stop it.
pub fn start(
    socket: std::net::TcpListener,
    state: HttpState,
) -> std::io::Result<(SocketAddr, actix_web::dev::ServerHandle)> {
    let data = web::Data::new(state);
    let dashboard = web::Data::new(dashboard::Dashboard::default());
    let server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(
                dashboard::require_read_token,
            ))
            .app_data(data.clone())
            .app_data(dashboard.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(64 * 1024)
                    .error_handler(|err, _| {
                        let message = format!("invalid JSON body: {err}");
                        actix_web::error::InternalError::from_response(
                            err,
                            error(actix_web::http::StatusCode::BAD_REQUEST, message),
                        )
                        .into()
                    }),
            )
            .app_data(web::QueryConfig::default().error_handler(|err, _| {
                let message = format!("invalid query: {err}");
                actix_web::error::InternalError::from_response(
                    err,
                    error(actix_web::http::StatusCode::BAD_REQUEST, message),
                )
                .into()
            }))
            .route("/healthz", web::get().to(probes::healthz))
            .route("/readyz", web::get().to(probes::readyz))
            .route("/metrics", web::get().to(probes::metrics))
            .route("/api/v1/openapi.json", web::get().to(openapi::spec))
            .route("/api/v1/jobs", web::get().to(api::list_jobs))
            .route("/api/v1/jobs", web::post().to(api::track_job))
            .route("/api/v1/jobs/{execution_id}", web::get().to(api::show_job))
            .route(
                "/api/v1/jobs/{execution_id}/cancel",
                web::post().to(api::cancel_job),
            )
            .route(
                "/api/v1/jobs/{execution_id}/retry",
                web::post().to(api::retry_job),
            )
            .route("/api/v1/queue/{job_id}", web::get().to(api::show_queue_job))
            .route("/api/v1/analytics", web::get().to(analytics_api::overview))
            .route(
                "/api/v1/analytics/{job_name}",
                web::get().to(analytics_api::job),
            )
            .configure(dashboard::routes)
            .route("/api/v1/notifications", web::get().to(notifications::list))
            .route(
                "/api/v1/notifications/resend",
                web::post().to(notifications::resend),
            )
            .default_service(web::to(|| async {
                error(
                    actix_web::http::StatusCode::NOT_FOUND,
                    "no such endpoint; see the README's Operating section",
                )
            }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(socket)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("bound to no address"))?;
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok((addr, handle))
}
