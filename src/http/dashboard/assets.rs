//! The dashboard's stylesheet and script, compiled into the binary: nothing is fetched from
//! anywhere else, and there is no build step.

use actix_web::http::header;
use actix_web::HttpResponse;

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

/// The version in the URL lets browsers cache the files and still fetch the new ones after an
/// upgrade.
pub const CSS_PATH: &str = concat!("/assets/dashboard.css?v=", env!("CARGO_PKG_VERSION"));
pub const JS_PATH: &str = concat!("/assets/dashboard.js?v=", env!("CARGO_PKG_VERSION"));

pub async fn css() -> HttpResponse {
    asset("text/css; charset=utf-8", CSS)
}

pub async fn js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}
