//! Notifications: which committed events go to which channels (pure rules), the message every
//! channel is built from, what goes out and how a delivery ends (`outgoing`), how each channel
//! is spoken to (`channels` dispatching to `webhook`, `email`, `alertmanager`), and how each
//! channel has fared lately (`standing`).

pub mod alertmanager;
pub mod channels;
pub mod email;
pub mod outgoing;
pub mod standing;
pub mod webhook;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{EventKind, NotificationSettings};

/// The rules of `[notifications]`, ready to match.
#[derive(Debug, Clone, Default)]
pub struct NotifyRules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    on: Vec<EventKind>,
    jobs: String,
    channels: Vec<String>,
    resolved: bool,
}

impl NotifyRules {
    pub fn from_settings(settings: &NotificationSettings) -> Self {
        NotifyRules {
            rules: settings
                .rules
                .iter()
                .map(|r| Rule {
                    on: r.on.clone(),
                    jobs: r.jobs.clone(),
                    channels: r.channels.clone(),
                    resolved: r.resolved,
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule asks for this event, whatever the job.
    pub fn wants(&self, event: EventKind) -> bool {
        self.rules.iter().any(|r| r.on.contains(&event))
    }

    /// The channels that hear when this warning about a job of this name no longer holds.
    pub fn resolved_channels(&self, warning: EventKind, job_name: &str) -> BTreeSet<&str> {
        self.rules
            .iter()
            .filter(|r| r.resolved && r.on.contains(&warning) && glob_match(&r.jobs, job_name))
            .flat_map(|r| r.channels.iter().map(String::as_str))
            .collect()
    }

    /// The channels an event about a job of this name goes to, each once.
    pub fn channels_for(&self, event: EventKind, job_name: &str) -> BTreeSet<&str> {
        self.rules
            .iter()
            .filter(|r| r.on.contains(&event) && glob_match(&r.jobs, job_name))
            .flat_map(|r| r.channels.iter().map(String::as_str))
            .collect()
    }
}

/// `*` matches any run of characters, `?` one; everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and how much of the text it has taken: backtracking to it is
    // enough, so matching stays linear in practice.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// What every channel's message is made from; stored in the outbox as JSON, so a retry sends
/// exactly what the first attempt did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable across retries and channels: receivers deduplicate on it.
    pub id: String,
    pub event: String,
    pub job: JobRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_status: Option<String>,
    /// For `resolved`: the warning that no longer holds (`stuck_soon`, `running_long`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolves: Option<String>,
    /// Why (a failure reason, the timeout rule, a dead letter's error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What brought the change: spark_poll, kafka_event, timeout_sweep, api, application.
    pub source: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    /// `spark` or `queue`; absent for a dead letter that names no job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submission_id: Option<String>,
}

impl Notification {
    /// One line a person reads first: "nightly-load (e42) Failed: input table missing".
    pub fn headline(&self) -> String {
        let who = match (&self.job.name, &self.job.id) {
            (Some(name), Some(id)) if name != id => format!("{name} ({id})"),
            (Some(name), _) => name.clone(),
            (None, Some(id)) => id.clone(),
            (None, None) => "an event".into(),
        };
        let what = match self.event.as_str() {
            "failed" => "failed".to_owned(),
            "timed_out" => "timed out".to_owned(),
            "succeeded" => "succeeded".to_owned(),
            "cancelled" => "was cancelled".to_owned(),
            "dead_lettered" => "could not be applied (dead-lettered)".to_owned(),
            "stuck_soon" => "is not confirmed by Spark and will time out soon".to_owned(),
            "running_long" => "is running longer than usual".to_owned(),
            "resolved" => "is fine again".to_owned(),
            other => other.to_owned(),
        };
        match &self.reason {
            Some(reason) => format!("{who} {what}: {}", first_line(reason)),
            None => format!("{who} {what}"),
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// A new message id: random, so two instances never hand out the same one.
pub fn new_message_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleSettings;

    #[test]
    fn patterns_match_names_as_operators_write_them() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("nightly-*", "nightly-load"));
        assert!(glob_match("*-load", "nightly-load"));
        assert!(glob_match("n?ghtly*", "nightly"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("nightly-*", "hourly-load"));
        assert!(!glob_match("a*b*c", "a-x-b-y"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "x"));
    }

    #[test]
    fn an_event_goes_to_every_channel_of_every_matching_rule_once() {
        let settings = NotificationSettings {
            rules: vec![
                RuleSettings {
                    on: vec![EventKind::Failed, EventKind::TimedOut],
                    jobs: "*".into(),
                    channels: vec!["ops".into()],
                    resolved: false,
                },
                RuleSettings {
                    on: vec![EventKind::Failed, EventKind::Succeeded],
                    jobs: "nightly-*".into(),
                    channels: vec!["team".into(), "ops".into()],
                    resolved: false,
                },
            ],
            ..NotificationSettings::default()
        };
        let rules = NotifyRules::from_settings(&settings);
        let failed: Vec<&str> = rules
            .channels_for(EventKind::Failed, "nightly-load")
            .into_iter()
            .collect();
        assert_eq!(failed, ["ops", "team"]);
        let succeeded: Vec<&str> = rules
            .channels_for(EventKind::Succeeded, "hourly")
            .into_iter()
            .collect();
        assert!(succeeded.is_empty());
    }

    #[test]
    fn a_headline_names_the_job_and_the_first_line_of_the_reason() {
        let n = Notification {
            id: "m1".into(),
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
            reason: Some("input table missing\n\tat Main.main".into()),
            resolves: None,
            source: "spark_poll".into(),
            at: Utc::now(),
        };
        assert_eq!(
            n.headline(),
            "nightly-load (e42) failed: input table missing"
        );
    }
}
