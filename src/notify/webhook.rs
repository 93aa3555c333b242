//! Signed JSON over HTTP: how the webhook and Slack channels are spoken to, and how
//! Alertmanager's posts travel. A 2xx is delivered; a refusal of the message itself is for
//! good; anything else is the channel's fault for now.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};

use super::outgoing::{Delivered, ID_HEADER, SIGNATURE_HEADER};

/// `t=…,v1=…` for a body sent at `at`.
pub fn sign(secret: &str, at: DateTime<Utc>, body: &[u8]) -> String {
    let t = at.timestamp();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// POSTs a JSON body; a 4xx (but 408 and 429) is a refusal, any other failure is for later.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    timeout: Duration,
    id: &str,
    signature: Option<String>,
) -> Delivered {
    let mut request = client
        .post(url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header(ID_HEADER, id);
    if let Some(signature) = signature {
        request = request.header(SIGNATURE_HEADER, signature);
    }
    match request.body(body).send().await {
        Err(e) if e.is_timeout() => Delivered::Later(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
        Err(e) => Delivered::Later(format!(
            "could not reach the receiver: {}",
            crate::error_text::with_causes(&e)
        )),
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                return Delivered::Yes;
            }
            let excerpt = excerpt(response).await;
            let message = format!("HTTP {}: {excerpt}", status.as_u16());
            if refuses_the_message(status.as_u16()) {
                Delivered::Refused(message)
            } else {
                Delivered::Later(message)
            }
        }
    }
}

/// Whether an HTTP answer refuses this message itself (sending it again cannot help), rather
/// than the channel failing for now: a wrong or just-rotated secret (401, 403, 407), a timeout
/// (408) or a rate limit (429) is the channel's fault and is retried until `give_up_after`.
pub fn refuses_the_message(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 401 | 403 | 407 | 408 | 429)
}

async fn excerpt(response: reqwest::Response) -> String {
    let body = tokio::time::timeout(Duration::from_secs(2), response.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    if text.trim().is_empty() {
        "(empty body)".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_signature_is_hmac_sha256_over_the_timestamp_and_the_body() {
        let at = Utc.timestamp_opt(1_764_000_000, 0).unwrap();
        let signed = sign("It's a Secret to Everybody", at, b"Hello, World!");
        // Computed independently: printf '1764000000.Hello, World!' | openssl dgst -sha256 -hmac "It's a Secret to Everybody"
        assert_eq!(
            signed,
            "t=1764000000,v1=e400107e54677b310c6fd8e101689566324146ff5ab3fffb9bad45981c224e38"
        );
    }

    #[test]
    fn a_wrong_secret_a_timeout_or_a_rate_limit_is_retried_and_a_bad_message_is_not() {
        for status in [401, 403, 407, 408, 429, 500, 503] {
            assert!(!refuses_the_message(status), "{status} is retried");
        }
        for status in [400, 404, 410, 413, 422] {
            assert!(refuses_the_message(status), "{status} refuses the message");
        }
    }
}
