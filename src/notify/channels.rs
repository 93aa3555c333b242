//! How each kind of channel is spoken to, by its settings: signed webhooks and Slack-compatible
//! incoming webhooks (`webhook`), email (`email`) and Alertmanager (`alertmanager`). Each
//! delivery says whether it arrived, should be tried again, or was refused for good.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::config::{ChannelKind, ChannelSettings};

pub use super::outgoing::{Delivered, Outgoing};
use super::webhook::{post_json, sign};

/// Sends `outgoing` to `channel`.
pub async fn deliver(
    client: &reqwest::Client,
    channel: &ChannelSettings,
    outgoing: &Outgoing,
    now: DateTime<Utc>,
) -> Delivered {
    match &channel.kind {
        ChannelKind::Webhook { url, secret } => {
            let body = serde_json::to_vec(&outgoing.webhook_body()).unwrap_or_default();
            let signature = secret.as_ref().map(|s| sign(s.expose(), now, &body));
            post_json(client, url, body, channel.timeout, outgoing.id(), signature).await
        }
        ChannelKind::Slack { url } => {
            let body = serde_json::to_vec(&json!({ "text": outgoing.text() })).unwrap_or_default();
            post_json(
                client,
                url.expose(),
                body,
                channel.timeout,
                outgoing.id(),
                None,
            )
            .await
        }
        ChannelKind::Email(email) => super::email::send(email, channel.timeout, outgoing).await,
        ChannelKind::Alertmanager(am) => {
            super::alertmanager::send(client, am, channel.timeout, outgoing, now).await
        }
    }
}
