//! The read token (`http.read_token`): when set, the dashboard's pages, their live updates and
//! the read API (`GET /api/v1/…`) need it. Scripts present it as `Authorization: Bearer …`;
//! a browser opens any page once with `?token=…`, which answers with a cookie holding it and
//! sends the browser on to the same page without it in the address. The write token
//! (`http.api_token`) is accepted too: whoever may write may read. Probes, metrics and the
//! static assets stay open, so orchestrators and Prometheus need no token.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use maud::html;

use super::super::{error, HttpState};
use super::assets;

pub const COOKIE: &str = "jobwarden_read";
const QUERY: &str = "token";

/// Paths open without a token: probes and scrapes (orchestrators, Prometheus), the API's
/// description (it holds no data), and the static files every page, including the one asking
/// for the token, links to.
fn is_open(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/api/v1/openapi.json"
    ) || path.starts_with("/assets/")
}

/// Lets a request through, or answers it when the read token is needed and missing.
pub async fn require_read_token<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let tokens: Vec<String> = match request.app_data::<web::Data<HttpState>>() {
        Some(state) => match &state.read_token {
            None => Vec::new(),
            Some(read) => std::iter::once(read)
                .chain(state.api_token.as_ref())
                .map(|t| t.expose().to_owned())
                .collect(),
        },
        None => Vec::new(),
    };
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    if tokens.is_empty() || !reading || is_open(request.path()) {
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let valid = |presented: &str| tokens.iter().any(|t| same(t, presented));
    let page = !request.path().starts_with("/api/") && !request.path().starts_with("/live/");
    if let Some(presented) = query_token(request.query_string()) {
        if !valid(&presented) {
            return Ok(refuse(request, page, true));
        }
        if page {
            let response = HttpResponse::SeeOther()
                .insert_header((header::LOCATION, without_token(&request)))
                .insert_header((header::SET_COOKIE, cookie(&presented)))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish();
            return Ok(request.into_response(response).map_into_right_body());
        }
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let from_cookie = cookie_token(&request);
    if bearer.iter().chain(from_cookie.iter()).any(|t| valid(t)) {
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let presented = bearer.is_some() || from_cookie.is_some();
    Ok(refuse(request, page, presented))
}

fn refuse<B>(
    request: ServiceRequest,
    page: bool,
    presented: bool,
) -> ServiceResponse<EitherBody<B>> {
    let response = if page {
        token_page(request.path(), presented)
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs \"Authorization: Bearer <http.read_token>\" (or the api_token)",
        )
    };
    request.into_response(response).map_into_right_body()
}

/// A small page asking for the token; its form opens the same page with `?token=`.
fn token_page(path: &str, presented: bool) -> HttpResponse {
    let markup = html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="referrer" content="no-referrer";
                title { "Token needed · jobwarden" }
                link rel="stylesheet" href=(assets::CSS_PATH);
            }
            body {
                main {
                    h1 { "This dashboard needs its read token" }
                    @if presented {
                        p.down { "That token is not the one configured; check http.read_token." }
                    }
                    p { "Enter the value of " code { "http.read_token" } " (or of " code { "http.api_token" } "). "
                        "It is kept in a cookie for this browser session." }
                    form.filters method="get" action=(path) {
                        label { "Token" input type="password" name="token" autocomplete="current-password" required; }
                        button type="submit" { "Open" }
                    }
                }
            }
        }
    };
    HttpResponse::build(StatusCode::UNAUTHORIZED)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"jobwarden\""))
        .body(markup.into_string())
}

fn query_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == QUERY)
        .map(|(_, v)| v.into_owned())
}

fn without_token(request: &ServiceRequest) -> String {
    let rest: Vec<(String, String)> =
        url::form_urlencoded::parse(request.query_string().as_bytes())
            .filter(|(k, _)| k != QUERY)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    if rest.is_empty() {
        return request.path().to_owned();
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(rest)
        .finish();
    format!("{}?{query}", request.path())
}

/// A session cookie only this site's pages send (`SameSite=Strict`) and no script reads.
fn cookie(token: &str) -> String {
    let value: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict")
}

fn cookie_token(request: &ServiceRequest) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| {
            url::form_urlencoded::parse(format!("v={value}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
}

/// Compares without stopping at the first difference, so timing says nothing about how much
/// of a guess was right.
fn same(expected: &str, presented: &str) -> bool {
    expected.len() == presented.len()
        && expected
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same("s3cret", "s3cret"));
        assert!(!same("s3cret", "s3creT"));
        assert!(!same("s3cret", "s3cre"));
    }

    #[test]
    fn a_cookie_carries_any_token_and_reads_back_the_same() {
        let token = "a b;c=d+é";
        let set = cookie(token);
        let value = set.split(';').next().unwrap();
        let request = actix_web::test::TestRequest::get()
            .insert_header((header::COOKIE, format!("other=1; {value}")))
            .to_srv_request();
        assert_eq!(cookie_token(&request).as_deref(), Some(token));
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
    }

    #[test]
    fn the_token_leaves_the_address_and_the_rest_stays() {
        let request = actix_web::test::TestRequest::get()
            .uri("/?status=Failed&token=x&name=a%20b")
            .to_srv_request();
        assert_eq!(without_token(&request), "/?status=Failed&name=a+b");
    }
}
