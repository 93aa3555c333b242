//! What goes out to a channel in one request, and how a delivery ended: the vocabulary every
//! channel shares (webhook, Slack, email, Alertmanager).

use serde_json::json;

use super::Notification;

/// The header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "Jobwarden-Signature";
/// The header carrying the message id (the same on every retry).
pub const ID_HEADER: &str = "Jobwarden-Message-Id";

/// What goes out in one request.
#[derive(Debug, Clone)]
pub enum Outgoing {
    One(Box<Notification>),
    /// Many failures at once (a cluster went down): one message with the count and the first
    /// few, under an id of its own.
    Storm {
        id: String,
        total: usize,
        listed: Vec<Notification>,
    },
}

impl Outgoing {
    pub fn id(&self) -> &str {
        match self {
            Outgoing::One(n) => &n.id,
            Outgoing::Storm { id, .. } => id,
        }
    }

    /// The generic webhook body.
    pub fn webhook_body(&self) -> serde_json::Value {
        match self {
            Outgoing::One(n) => serde_json::to_value(n.as_ref()).unwrap_or_default(),
            Outgoing::Storm { id, total, listed } => json!({
                "id": id,
                "event": "storm",
                "count": total,
                "listed": listed.len(),
                "jobs": listed,
            }),
        }
    }

    /// What a person reads in chat or a subject line.
    pub fn text(&self) -> String {
        match self {
            Outgoing::One(n) => n.headline(),
            Outgoing::Storm { total, listed, .. } => {
                let mut text = format!("{total} jobs failed at about the same time:");
                for n in listed {
                    text.push_str("\n• ");
                    text.push_str(&n.headline());
                }
                if *total > listed.len() {
                    text.push_str(&format!("\n…and {} more", total - listed.len()));
                }
                text
            }
        }
    }
}

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Yes,
    /// Not this time: timeout, refused connection, 5xx, 429.
    Later(String),
    /// The receiver refused the message itself (4xx): sending it again would not help.
    Refused(String),
}
