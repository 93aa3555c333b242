//! `[notifications]`: who hears about which job events, through which channels, and how storms
//! and unreachable receivers are handled.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::Secret;
use super::validate::{Problems, Validate};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationSettings {
    /// A message still undelivered this long after it was written is given up (and counted,
    /// and listed by the API as failed).
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
    /// How long a failure waits before it is sent, so that the failures of one storm (a
    /// cluster going down) go out together.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
    /// From this many failures waiting for one channel, they go out as one grouped message.
    pub storm_threshold: usize,
    /// How many jobs a grouped message lists by name (it always gives the count).
    pub storm_list: usize,
    /// How often the outbox is looked at (so a retry waits at least its backoff and at most
    /// one more look).
    #[serde(with = "humantime_serde")]
    pub check_every: Duration,
    /// A channel whose deliveries have all failed for this long is named on `/readyz`'s
    /// detail and in `jobwarden_notification_channel_failing` (readiness stays 200: the
    /// outbox keeps its messages).
    #[serde(with = "humantime_serde")]
    pub failing_after: Duration,
    /// A job runs long when it has run this many times the 95th percentile of its name's past
    /// successful runs.
    pub running_long_factor: f64,
    /// Past successful runs of a name needed before "running long" is judged at all.
    pub running_long_min_runs: usize,
    pub channels: BTreeMap<String, ChannelSettings>,
    pub rules: Vec<RuleSettings>,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        NotificationSettings {
            give_up_after: Duration::from_secs(24 * 3600),
            group_wait: Duration::from_secs(5),
            storm_threshold: 5,
            storm_list: 20,
            check_every: Duration::from_secs(1),
            failing_after: Duration::from_secs(600),
            running_long_factor: 2.0,
            running_long_min_runs: 5,
            channels: BTreeMap::new(),
            rules: Vec::new(),
        }
    }
}

/// Where messages go. (Unknown fields are refused by the kind's own fields: serde cannot deny
/// them on a struct that flattens another.)
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChannelSettings {
    #[serde(flatten)]
    pub kind: ChannelKind,
    /// The least time between two messages to this channel (a receiver's rate limit).
    #[serde(with = "humantime_serde", default)]
    pub min_interval: Duration,
    /// The longest one delivery may take.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// How many deliveries may be under way at once; never two about the same job, so each
    /// job's messages arrive in the order they were written. A channel with a
    /// `min_interval` gets one at a time whatever this says.
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Enough requests under way to hide a receiver's round trip, few enough for any receiver.
pub const DEFAULT_IN_FLIGHT: usize = 8;
/// More would only queue at the receiver.
const MAX_IN_FLIGHT: usize = 64;

fn default_in_flight() -> usize {
    DEFAULT_IN_FLIGHT
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelKind {
    /// A JSON body, signed with HMAC-SHA256 over the timestamp and the body when a secret is set.
    Webhook {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<Secret>,
    },
    /// A Slack-compatible incoming webhook (`{"text": …}`); its URL is a credential.
    Slack { url: Secret },
    /// Email over SMTP.
    Email(EmailSettings),
    /// Alerts posted to a Prometheus Alertmanager, which groups, silences and routes them.
    Alertmanager(AlertmanagerSettings),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    pub host: String,
    /// Defaults to the usual port of `tls`: 587, 465 or 25.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The sender, `jobwarden@example.com` or `Jobwarden <jobwarden@example.com>`.
    pub from: String,
    pub to: Vec<String>,
}

impl EmailSettings {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }
}

/// How an SMTP connection is protected. There is no "TLS if offered": a server that does not
/// offer STARTTLS gets nothing (no credentials, no message), so nobody in the middle can strip
/// the encryption.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (submission, port 587); refused if not offered.
    #[default]
    Starttls,
    /// TLS from the first byte (submissions, port 465).
    Tls,
    /// No encryption at all: only to a server on this machine (a local relay, tests).
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSettings {
    /// Where the Alertmanager answers (its `--web.external-url` path included, if any);
    /// alerts go to `<url>/api/v2/alerts`.
    pub url: String,
    /// A failure is a one-shot alert: it ends this long after it is sent, instead of firing
    /// until someone resolves it.
    #[serde(with = "humantime_serde", default = "default_resolve_after")]
    pub resolve_after: Duration,
    /// The `severity` label of every alert.
    #[serde(default = "default_severity")]
    pub severity: String,
    /// More labels on every alert (`team = "data"`), for routing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_resolve_after() -> Duration {
    Duration::from_secs(3600)
}

fn default_severity() -> String {
    "warning".into()
}

/// The labels jobwarden sets on an alert itself; `labels` may not override them.
pub const ALERT_LABELS: [&str; 6] = [
    "alertname",
    "job_id",
    "job_name",
    "cluster",
    "severity",
    "storm_id",
];

/// Which events of which jobs go to which channels.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    pub on: Vec<EventKind>,
    /// A job name pattern (`*` any run of characters, `?` one); jobs without a name match by
    /// id.
    #[serde(default = "any_job")]
    pub jobs: String,
    pub channels: Vec<String>,
    /// For the warnings (stuck_soon, running_long): also say when the warning no longer holds
    /// (the job finished, or Spark confirms it again).
    #[serde(default)]
    pub resolved: bool,
}

fn any_job() -> String {
    "*".into()
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Failed,
    TimedOut,
    Succeeded,
    Cancelled,
    DeadLettered,
    /// No confirmation from Spark for half of `stuck_timeout`: the job will be failed at the
    /// other half unless Spark confirms it.
    StuckSoon,
    /// Running longer than `running_long_factor` × the 95th percentile of its name's past
    /// successful runs.
    RunningLong,
    /// A warning above no longer holds (sent only by rules with `resolved = true`).
    Resolved,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Failed => "failed",
            EventKind::TimedOut => "timed_out",
            EventKind::Succeeded => "succeeded",
            EventKind::Cancelled => "cancelled",
            EventKind::DeadLettered => "dead_lettered",
            EventKind::StuckSoon => "stuck_soon",
            EventKind::RunningLong => "running_long",
            EventKind::Resolved => "resolved",
        }
    }

    /// Whether Alertmanager takes it as an alert (firing, and for warnings resolved later).
    pub fn is_alert(self) -> bool {
        self.is_failure() || matches!(self, EventKind::StuckSoon | EventKind::RunningLong)
    }

    /// Whether a burst of these is a storm worth one grouped message.
    pub fn is_failure(self) -> bool {
        Self::FAILURES.contains(&self)
    }

    /// Whether an event stored under this name is a failure (the outbox keeps names).
    pub fn names_failure(name: &str) -> bool {
        Self::FAILURES.iter().any(|kind| kind.as_str() == name)
    }

    const FAILURES: [EventKind; 3] = [
        EventKind::Failed,
        EventKind::TimedOut,
        EventKind::DeadLettered,
    ];
}

impl NotificationSettings {
    pub fn is_enabled(&self) -> bool {
        !self.rules.is_empty()
    }
}

impl Validate for NotificationSettings {
    fn validate(&self, p: &mut Problems) {
        p.positive("notifications.give_up_after", self.give_up_after);
        p.positive("notifications.check_every", self.check_every);
        p.positive("notifications.failing_after", self.failing_after);
        if self.storm_threshold < 2 {
            p.refuse(
                "notifications.storm_threshold",
                self.storm_threshold.to_string(),
                "at least 2 (a storm of one is a single message)",
            );
        }
        if self.running_long_factor.is_nan() || self.running_long_factor < 1.0 {
            p.refuse(
                "notifications.running_long_factor",
                self.running_long_factor.to_string(),
                "at least 1 (a job is long when it runs longer than its usual runs)",
            );
        }
        if self.storm_list == 0 {
            p.refuse("notifications.storm_list", "0", "list at least one job");
        }
        for (name, channel) in &self.channels {
            let key = |field: &str| format!("notifications.channels.{name}.{field}");
            if name.is_empty() || name.len() > 64 {
                p.refuse(
                    &format!("notifications.channels.{name:?}"),
                    "(section)",
                    "a channel name is 1 to 64 characters",
                );
            }
            p.positive(&key("timeout"), channel.timeout);
            if !(1..=MAX_IN_FLIGHT).contains(&channel.in_flight) {
                p.refuse(
                    &key("in_flight"),
                    channel.in_flight.to_string(),
                    &format!("1 to {MAX_IN_FLIGHT} deliveries under way at once"),
                );
            }
            match &channel.kind {
                ChannelKind::Webhook { url, .. } => http_url(p, &key("url"), url, false),
                ChannelKind::Slack { url } => http_url(p, &key("url"), url.expose(), true),
                ChannelKind::Email(email) => email.validate(p, &key),
                ChannelKind::Alertmanager(am) => am.validate(p, &key),
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let key = |field: &str| format!("notifications.rules[{i}].{field}");
            if rule.on.is_empty() {
                p.refuse(&key("on"), "[]", "name at least one event: failed, timed_out, succeeded, cancelled, dead_lettered, stuck_soon, running_long");
            }
            if rule.on.contains(&EventKind::Resolved) {
                p.refuse(
                    &key("on"),
                    "\"resolved\"",
                    "resolved messages are asked for with resolved = true on a rule for stuck_soon or running_long",
                );
            }
            if rule.channels.is_empty() {
                p.refuse(&key("channels"), "[]", "name at least one channel");
            }
            for channel in &rule.channels {
                match self.channels.get(channel).map(|c| &c.kind) {
                    None => p.refuse(
                        &key("channels"),
                        format!("{channel:?}"),
                        "no such channel: define it as [notifications.channels.<name>]",
                    ),
                    Some(ChannelKind::Alertmanager(_)) => {
                        for event in rule.on.iter().filter(|e| !e.is_alert()) {
                            p.refuse(
                                &key("on"),
                                format!("{:?}", event.as_str()),
                                &format!(
                                    "channel {channel:?} is an Alertmanager, which takes failures and \
                                     warnings only (failed, timed_out, dead_lettered, stuck_soon, \
                                     running_long): send {} to other channels in a rule of their own",
                                    event.as_str()
                                ),
                            );
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

/// An `http(s)://` URL, or a refusal (showing the value unless it is a credential).
fn http_url(p: &mut Problems, key: &str, url: &str, secret: bool) {
    let parsed = url::Url::parse(url);
    if !parsed.is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
        let shown = if secret {
            "(secret)".to_owned()
        } else {
            format!("{url:?}")
        };
        p.refuse(key, shown, "expected an http(s):// URL");
    }
}

/// `localhost` or a loopback address: the only hosts mail may go to unencrypted.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl EmailSettings {
    fn validate(&self, p: &mut Problems, key: &dyn Fn(&str) -> String) {
        if self.host.trim().is_empty() {
            p.refuse(&key("host"), "\"\"", "name the SMTP server");
        }
        if self.port == Some(0) {
            p.refuse(&key("port"), "0", "a TCP port is 1 to 65535");
        }
        if self.tls == SmtpTls::None && !is_loopback(&self.host) {
            p.refuse(
                &key("tls"),
                "\"none\"",
                &format!(
                    "mail to {:?} would cross the network in clear: use \"starttls\" or \"tls\" \
                     (\"none\" is for a relay on this machine only)",
                    self.host
                ),
            );
        }
        match (&self.username, &self.password) {
            (Some(_), None) => p.refuse(&key("password"), "(unset)", "a username needs a password"),
            (None, Some(_)) => p.refuse(&key("username"), "(unset)", "a password needs a username"),
            _ => {}
        }
        if let Err(e) = self.from.parse::<lettre::message::Mailbox>() {
            p.refuse(
                &key("from"),
                format!("{:?}", self.from),
                &format!("not an email address ({e})"),
            );
        }
        if self.to.is_empty() {
            p.refuse(&key("to"), "[]", "name at least one recipient");
        }
        for to in &self.to {
            if let Err(e) = to.parse::<lettre::message::Mailbox>() {
                p.refuse(
                    &key("to"),
                    format!("{to:?}"),
                    &format!("not an email address ({e})"),
                );
            }
        }
    }
}

impl AlertmanagerSettings {
    fn validate(&self, p: &mut Problems, key: &dyn Fn(&str) -> String) {
        http_url(p, &key("url"), &self.url, false);
        p.positive(&key("resolve_after"), self.resolve_after);
        if self.severity.is_empty() {
            p.refuse(
                &key("severity"),
                "\"\"",
                "an empty label is no label: name a severity",
            );
        }
        for name in self.labels.keys() {
            let valid = name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if !valid || name.is_empty() || name.starts_with("__") {
                p.refuse(
                    &key("labels"),
                    format!("{name:?}"),
                    "a label name is letters, digits and _, not starting with a digit or __",
                );
            } else if ALERT_LABELS.contains(&name.as_str()) {
                p.refuse(
                    &key("labels"),
                    format!("{name:?}"),
                    "jobwarden sets this label itself",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml_text: &str) -> Vec<String> {
        let settings: NotificationSettings = toml::from_str(toml_text).unwrap();
        let mut p = Problems::default();
        settings.validate(&mut p);
        p.into_vec().iter().map(ToString::to_string).collect()
    }

    const EMAIL: &str = r#"
        [channels.mail]
        kind = "email"
        host = "smtp.example.com"
        username = "jobwarden"
        password = "hunter2-smtp"
        from = "Jobwarden <jobwarden@example.com>"
        to = ["ops@example.com"]
    "#;

    #[test]
    fn an_email_channel_defaults_to_starttls_on_the_submission_port() {
        let settings: NotificationSettings = toml::from_str(EMAIL).unwrap();
        let ChannelKind::Email(email) = &settings.channels["mail"].kind else {
            panic!("not an email channel");
        };
        assert_eq!((email.tls, email.port()), (SmtpTls::Starttls, 587));
        assert!(problems(EMAIL).is_empty(), "{:?}", problems(EMAIL));
    }

    #[test]
    fn an_smtp_password_never_shows() {
        let settings: NotificationSettings = toml::from_str(EMAIL).unwrap();
        let shown = format!("{settings:?} {}", serde_json::to_string(&settings).unwrap());
        assert!(!shown.contains("hunter2-smtp"), "{shown}");
        assert!(shown.contains(crate::config::MASK), "{shown}");
    }

    #[test]
    fn unencrypted_mail_goes_only_to_this_machine() {
        let to_network = EMAIL.replace("kind = \"email\"", "kind = \"email\"\ntls = \"none\"");
        let refused = problems(&to_network);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains("channels.mail.tls"), "{refused:?}");
        for host in ["127.0.0.1", "localhost", "::1", "[::1]"] {
            let local = to_network.replace("smtp.example.com", host);
            assert!(
                problems(&local).is_empty(),
                "{host}: {:?}",
                problems(&local)
            );
        }
    }

    #[test]
    fn email_addresses_and_credentials_are_checked_at_start() {
        let bad = EMAIL
            .replace("jobwarden@example.com>", "not an address>")
            .replace("[\"ops@example.com\"]", "[]")
            .replace("password = \"hunter2-smtp\"", "");
        let refused = problems(&bad).join("\n");
        for key in ["mail.from", "mail.to", "mail.password"] {
            assert!(refused.contains(key), "{key} in {refused}");
        }
    }

    const ALERTMANAGER: &str = r#"
        [channels.am]
        kind = "alertmanager"
        url = "http://127.0.0.1:9093"
        [channels.hook]
        kind = "webhook"
        url = "http://127.0.0.1:8000/hook"
    "#;

    #[test]
    fn an_alertmanager_channel_resolves_its_alerts_after_an_hour_by_default() {
        let settings: NotificationSettings = toml::from_str(ALERTMANAGER).unwrap();
        let ChannelKind::Alertmanager(am) = &settings.channels["am"].kind else {
            panic!("not an alertmanager channel");
        };
        assert_eq!(am.resolve_after, Duration::from_secs(3600));
        assert_eq!(am.severity, "warning");
    }

    #[test]
    fn a_rule_sending_successes_to_an_alertmanager_is_refused_with_the_way_out() {
        let text = format!(
            "{ALERTMANAGER}\n[[rules]]\non = [\"failed\", \"succeeded\"]\nchannels = [\"am\", \"hook\"]\n"
        );
        let refused = problems(&text);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].contains("rules[0].on = \"succeeded\""),
            "{refused:?}"
        );
        assert!(
            refused[0].contains("failures and warnings only"),
            "{refused:?}"
        );
        let alerts_only = text.replace(
            ", \"succeeded\"",
            ", \"timed_out\", \"dead_lettered\", \"stuck_soon\", \"running_long\"",
        );
        assert!(problems(&alerts_only).is_empty());
    }

    #[test]
    fn alert_labels_may_not_replace_jobwardens_own() {
        let text = r#"
            [channels.am]
            kind = "alertmanager"
            url = "http://127.0.0.1:9093"
            labels = { team = "data", severity = "page", "0bad" = "x" }
        "#;
        let refused = problems(text).join("\n");
        assert!(
            refused.contains("\"severity\": jobwarden sets"),
            "{refused}"
        );
        assert!(refused.contains("\"0bad\""), "{refused}");
        assert!(!refused.contains("team"), "{refused}");
    }
}
