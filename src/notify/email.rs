//! Email over SMTP: one message per delivery, the headline as its subject, the text for people
//! and the webhook's JSON for scripts in its body, the message id in its headers; an SMTP
//! answer is judged as a refusal of the message or a reason to try later.

use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{EmailSettings, SmtpTls};

use super::outgoing::{Delivered, Outgoing, ID_HEADER};

/// The message id, the same on every retry (the header webhooks carry too).
#[derive(Debug, Clone)]
struct MessageIdHeader(String);

impl Header for MessageIdHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str(ID_HEADER)
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(MessageIdHeader(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// Sends `outgoing` as one email to every recipient of `settings`.
pub async fn send(settings: &EmailSettings, timeout: Duration, outgoing: &Outgoing) -> Delivered {
    let message = match compose(settings, outgoing) {
        Ok(message) => message,
        // Addresses are checked at start, so only a message lettre cannot build lands here.
        Err(e) => return Delivered::Refused(format!("could not build the email: {e}")),
    };
    let transport = match transport(settings, timeout) {
        Ok(transport) => transport,
        Err(e) => return Delivered::Later(format!("could not set up SMTP: {e}")),
    };
    match tokio::time::timeout(timeout, transport.send(message)).await {
        Err(_) => Delivered::Later(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
        Ok(Ok(_)) => Delivered::Yes,
        Ok(Err(e)) => judge(&e),
    }
}

/// The email for `outgoing`: what a person reads first as the subject, the whole text, then
/// the webhook body for scripts that read mail.
pub fn compose(settings: &EmailSettings, outgoing: &Outgoing) -> Result<Message, ComposeError> {
    let text = outgoing.text();
    let headline = text.lines().next().unwrap_or_default();
    // A storm's first line introduces its list; as a subject it stands alone.
    let subject = match outgoing {
        Outgoing::One(_) => headline,
        Outgoing::Storm { .. } => headline.strip_suffix(':').unwrap_or(headline),
    };
    // The headline has the reason's first line; a stack trace is worth reading whole.
    let details = match outgoing {
        Outgoing::One(n) => n
            .reason
            .as_deref()
            .filter(|r| r.lines().nth(1).is_some())
            .map(|r| format!("\n\n{r}"))
            .unwrap_or_default(),
        Outgoing::Storm { .. } => String::new(),
    };
    let json = serde_json::to_string_pretty(&outgoing.webhook_body()).unwrap_or_default();
    let id = outgoing.id();
    let body = format!(
        "{text}{details}\n\n-- \nMessage id: {id} (the same on every retry; {ID_HEADER} header)\n\
         For machines, the webhook body:\n{json}\n"
    );
    let mut builder = Message::builder()
        .from(settings.from.parse::<Mailbox>()?)
        .subject(subject)
        // Mail systems deduplicate on Message-ID: a retry carries the one the first try had.
        .message_id(Some(format!("<{id}@jobwarden>")))
        .header(MessageIdHeader(id.to_owned()))
        .header(ContentType::TEXT_PLAIN);
    for to in &settings.to {
        builder = builder.to(to.parse::<Mailbox>()?);
    }
    Ok(builder.body(body)?)
}

/// Why an email could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("not an email address: {0}")]
    Address(#[from] lettre::address::AddressError),
    #[error(transparent)]
    Message(#[from] lettre::error::Error),
}

fn transport(
    settings: &EmailSettings,
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, SmtpError> {
    let builder = match settings.tls {
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)?,
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)?,
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host),
    };
    let mut builder = builder.port(settings.port()).timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
    }
    Ok(builder.build())
}

/// SMTP codes that reject the login rather than the message: a channel problem, fixed by its
/// operator, not a reason to drop every message sent meanwhile.
const AUTH_CODES: [u16; 4] = [530, 534, 535, 538];

/// A permanent (5xx) answer refuses the message for good, with the server's words; a
/// transient (4xx) answer, a connection or TLS failure or a rejected login is for later.
fn judge(e: &SmtpError) -> Delivered {
    let Some(code) = e.status().map(u16::from) else {
        return Delivered::Later(format!("SMTP: {e}"));
    };
    // The server's own words ("5.1.1 <ops@example.com>: mailbox unavailable").
    let words = std::error::Error::source(e).map_or_else(String::new, ToString::to_string);
    let answer = format!("SMTP {code}: {words}");
    if e.is_permanent() && !AUTH_CODES.contains(&code) {
        Delivered::Refused(answer)
    } else {
        Delivered::Later(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{JobRef, Notification};

    fn settings() -> EmailSettings {
        EmailSettings {
            host: "127.0.0.1".into(),
            port: Some(2525),
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "Jobwarden <jobwarden@example.com>".into(),
            to: vec!["ops@example.com".into(), "data@example.com".into()],
        }
    }

    fn failed(id: &str) -> Notification {
        Notification {
            id: id.into(),
            event: "failed".into(),
            job: JobRef {
                kind: Some("spark".into()),
                id: Some("e42".into()),
                name: Some("nightly-load".into()),
                cluster: None,
                submission_id: None,
            },
            from_status: Some("Running".into()),
            to_status: Some("Failed".into()),
            reason: Some("input table missing".into()),
            resolves: None,
            source: "spark_poll".into(),
            at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_reason_of_several_lines_is_in_the_body_whole() {
        let mut n = failed("m1");
        n.reason = Some("input table missing\n    at Main.main(Main.java:3)".into());
        let message = compose(&settings(), &Outgoing::One(Box::new(n))).unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(
            text.contains("Subject: nightly-load (e42) failed: input table missing\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\n\r\ninput table missing\r\n    at Main.main(Main.java:3)\r\n"),
            "{text}"
        );
    }

    #[test]
    fn a_storm_email_is_subjected_by_its_first_line_without_the_colon() {
        let storm = Outgoing::Storm {
            id: "g1".into(),
            total: 7,
            listed: vec![failed("m1")],
        };
        let message = compose(&settings(), &storm).unwrap();
        let headers = message.headers().to_string();
        assert!(
            headers.contains("Subject: 7 jobs failed at about the same time\r\n"),
            "{headers}"
        );
        assert!(headers.contains("Message-ID: <g1@jobwarden>"), "{headers}");
        assert!(headers.contains("Jobwarden-Message-Id: g1"), "{headers}");
    }
}
