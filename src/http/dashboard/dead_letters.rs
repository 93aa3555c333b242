//! The dead letters page (`/dead-letters`): events that could not be applied, newest first,
//! with the reason, where they came from, and the start of their key and payload — as text
//! when it is text, as hex when it is not, escaped either way.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;

use crate::store::dashboard_read::{self, DeadLetterPreview, PREVIEW_BYTES};

use super::super::HttpState;
use super::layout::{time, Nav, Page};
use super::{given, query, respond, unavailable, View};

const TITLE: &str = "Dead letters";

#[derive(Debug, Deserialize)]
pub struct DeadLettersQuery {
    before: Option<String>,
}

pub async fn page(
    request: HttpRequest,
    state: web::Data<HttpState>,
    params: web::Query<DeadLettersQuery>,
) -> HttpResponse {
    render(request, state, params.into_inner(), View::Page).await
}

pub async fn live(
    request: HttpRequest,
    state: web::Data<HttpState>,
    params: web::Query<DeadLettersQuery>,
) -> HttpResponse {
    render(request, state, params.into_inner(), View::Live).await
}

async fn render(
    request: HttpRequest,
    state: web::Data<HttpState>,
    params: DeadLettersQuery,
    view: View,
) -> HttpResponse {
    let before = given(&params.before).and_then(|b| b.parse::<i64>().ok());
    let (rows, next) = match dashboard_read::dead_letters(&state.db, before).await {
        Ok(found) => found,
        Err(e) => return unavailable(&request, view, TITLE, Nav::DeadLetters, &e),
    };
    let content = html! {
        @if rows.is_empty() {
            div.card { p.muted { "No dead letters." } }
        } @else {
            table.dead-letters {
                thead { tr { th { "Received" } th { "From" } th { "Reason" } th { "Key" } th { "Payload" } } }
                tbody { @for row in &rows { (letter(row)) } }
            }
        }
        nav.pager {
            @if before.is_some() { a.button.plain href="/dead-letters" { "« Newest" } }
            @if let Some(next) = next {
                a.button.plain href=(format!("/dead-letters?{}", query(&[("before", Some(&next.to_string()))]))) { "Older »" }
            }
        }
    };
    let page = Page {
        title: TITLE.to_owned(),
        nav: Nav::DeadLetters,
        fixed: None,
        regions: vec![("letters", content)],
    };
    respond(&request, view, StatusCode::OK, page)
}

fn letter(row: &DeadLetterPreview) -> Markup {
    html! {
        tr data-id=(row.id) {
            td.time { (time(Some(row.received_at))) }
            td {
                code { (row.source) }
                @if let Some(topic) = &row.topic { br; code { (topic) } }
                @if let (Some(p), Some(o)) = (row.partition, row.offset) { br; span.note { "partition " (p) ", offset " (o) } }
            }
            td.error { (row.error) }
            td { @match &row.key { Some(k) => (preview(k)), None => span.none { "—" } } }
            td { (preview(&row.payload)) }
        }
    }
}

/// The start of some bytes, as text when they are UTF-8 without control characters (other
/// than line breaks and tabs), otherwise as hex; it says when there is more.
fn preview(bytes: &[u8]) -> Markup {
    let limit = PREVIEW_BYTES as usize;
    let more = bytes.len() > limit;
    let shown = &bytes[..bytes.len().min(limit)];
    let text = match std::str::from_utf8(shown) {
        Ok(text) => Some(text),
        // Cut inside a character: the part before the cut is still text.
        Err(e) if more && e.error_len().is_none() => {
            std::str::from_utf8(&shown[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    }
    .filter(|t| {
        !t.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    });
    html! {
        @match text {
            Some(text) => pre.payload { (text) },
            None => { span.kind { "binary, hex" } pre.payload.hex { (hex(shown)) } },
        }
        @if more { span.note { "first " (limit) " bytes shown" } }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(if i % 16 == 0 { '\n' } else { ' ' });
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_payloads_are_shown_as_hex() {
        let html = preview(&[0x00, 0xff, 0x10, b'<']).into_string();
        assert!(html.contains("00 ff 10 3c"), "{html}");
    }

    #[test]
    fn text_payloads_are_shown_escaped() {
        let html = preview(b"{\"jobId\": \"<script>alert(1)</script>\"}").into_string();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
    }

    #[test]
    fn a_long_payload_says_only_its_start_is_shown() {
        let html = preview(&vec![b'a'; PREVIEW_BYTES as usize + 1]).into_string();
        assert!(html.contains("first 1024 bytes shown"), "{html}");
    }
}
