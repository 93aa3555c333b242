//! Prometheus Alertmanager as a channel: failures become alerts posted to its
//! `/api/v2/alerts`, where the teams' own grouping, silences, inhibitions and routes take over.
//! A job's failure is a one-shot alert: it carries an `endsAt` so it stops firing by itself.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::AlertmanagerSettings;

use super::outgoing::{Delivered, Outgoing};
use super::webhook::post_json;
use super::Notification;

/// A postable alert, as Alertmanager's API v2 takes it. Its identity is its label set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

/// The `alertname` of an event, or `None` for an event that is no alert (a success, a
/// cancellation).
pub fn alertname(event: &str) -> Option<&'static str> {
    match event {
        "failed" => Some("JobwardenJobFailed"),
        "timed_out" => Some("JobwardenJobTimedOut"),
        "dead_lettered" => Some("JobwardenDeadLetter"),
        "stuck_soon" => Some("JobwardenJobStuckSoon"),
        "running_long" => Some("JobwardenJobRunningLong"),
        _ => None,
    }
}

/// The alert for a storm's jobs that were not listed one by one.
pub const STORM_ALERTNAME: &str = "JobwardenFailureStorm";

/// Posts the alerts `outgoing` stands for.
pub async fn send(
    client: &reqwest::Client,
    settings: &AlertmanagerSettings,
    timeout: Duration,
    outgoing: &Outgoing,
    now: DateTime<Utc>,
) -> Delivered {
    let alerts = alerts(settings, outgoing, now);
    if alerts.is_empty() {
        // Such rules are refused at start; this is a message written under an older config.
        return Delivered::Refused(
            "not an alert: an Alertmanager channel takes failures only (failed, timed_out, \
             dead_lettered)"
                .into(),
        );
    }
    let body = serde_json::to_vec(&alerts).unwrap_or_default();
    post_json(
        client,
        &endpoint(&settings.url),
        body,
        timeout,
        outgoing.id(),
        None,
    )
    .await
}

/// Where alerts are posted, below any path prefix the Alertmanager is served under.
pub fn endpoint(url: &str) -> String {
    format!("{}/api/v2/alerts", url.trim_end_matches('/'))
}

/// The alerts for one message: one per failure (a storm's listed jobs each get theirs, so that
/// silences, inhibitions and grouping work per job as usual), plus, when a storm holds more
/// jobs than it lists, one alert that counts the rest.
pub fn alerts(
    settings: &AlertmanagerSettings,
    outgoing: &Outgoing,
    now: DateTime<Utc>,
) -> Vec<Alert> {
    match outgoing {
        Outgoing::One(n) => alert(settings, n, now).into_iter().collect(),
        Outgoing::Storm { id, total, listed } => {
            let mut alerts: Vec<Alert> = listed
                .iter()
                .filter_map(|n| alert(settings, n, now))
                .collect();
            if *total > listed.len() {
                alerts.push(storm_alert(settings, outgoing, id, *total, listed, now));
            }
            alerts
        }
    }
}

fn alert(settings: &AlertmanagerSettings, n: &Notification, now: DateTime<Utc>) -> Option<Alert> {
    // A warning that no longer holds is its own alert sent again, ending now: Alertmanager
    // knows an alert by its labels, and an `endsAt` in the past resolves it.
    let resolving = n.event == "resolved";
    let name = if resolving {
        alertname(n.resolves.as_deref()?)?
    } else {
        alertname(&n.event)?
    };
    let mut labels = base_labels(settings, name);
    let job = &n.job;
    for (label, value) in [
        ("job_id", &job.id),
        ("job_name", &job.name),
        ("cluster", &job.cluster),
    ] {
        if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
            labels.insert(label.into(), value.clone());
        }
    }
    let headline = n.headline();
    let mut annotations = BTreeMap::from([
        ("summary".to_owned(), headline.clone()),
        (
            "description".to_owned(),
            n.reason.clone().unwrap_or(headline),
        ),
    ]);
    if let Some(driver) = &job.submission_id {
        annotations.insert("submission_id".into(), driver.clone());
    }
    Some(Alert {
        labels,
        annotations,
        starts_at: n.at,
        ends_at: if resolving {
            n.at.max(now)
        } else {
            ends_at(settings, n.at, now)
        },
    })
}

fn storm_alert(
    settings: &AlertmanagerSettings,
    outgoing: &Outgoing,
    id: &str,
    total: usize,
    listed: &[Notification],
    now: DateTime<Utc>,
) -> Alert {
    let mut labels = base_labels(settings, STORM_ALERTNAME);
    labels.insert("storm_id".into(), id.to_owned());
    // One cluster going down is the usual storm: say which, so routes by cluster catch it.
    let mut clusters = listed.iter().map(|n| n.job.cluster.as_deref());
    if let Some(Some(first)) = clusters.next() {
        if clusters.all(|c| c == Some(first)) {
            labels.insert("cluster".into(), first.to_owned());
        }
    }
    let starts_at = listed.iter().map(|n| n.at).min().unwrap_or(now);
    Alert {
        labels,
        annotations: BTreeMap::from([
            (
                "summary".to_owned(),
                format!(
                    "{total} jobs failed at about the same time ({} alerted one by one)",
                    listed.len()
                ),
            ),
            ("description".to_owned(), outgoing.text()),
        ]),
        starts_at,
        ends_at: ends_at(settings, starts_at, now),
    }
}

fn base_labels(settings: &AlertmanagerSettings, alertname: &str) -> BTreeMap<String, String> {
    let mut labels = settings.labels.clone();
    labels.insert("alertname".into(), alertname.to_owned());
    labels.insert("severity".into(), settings.severity.clone());
    labels
}

/// `resolve_after` past the later of the event and now: an alert delivered late (its
/// Alertmanager was down) still fires for the whole time instead of arriving resolved.
fn ends_at(
    settings: &AlertmanagerSettings,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let resolve_after =
        chrono::Duration::from_std(settings.resolve_after).unwrap_or(chrono::Duration::MAX);
    at.max(now)
        .checked_add_signed(resolve_after)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::JobRef;

    fn settings() -> AlertmanagerSettings {
        AlertmanagerSettings {
            url: "http://127.0.0.1:9093/".into(),
            resolve_after: Duration::from_secs(3600),
            severity: "critical".into(),
            labels: BTreeMap::from([("team".to_owned(), "data".to_owned())]),
        }
    }

    fn notification(id: &str, event: &str, at: DateTime<Utc>) -> Notification {
        Notification {
            id: id.into(),
            event: event.into(),
            job: JobRef {
                kind: Some("spark".into()),
                id: Some(format!("e-{id}")),
                name: Some("nightly-load".into()),
                cluster: Some("analytics".into()),
                submission_id: Some("driver-1".into()),
            },
            from_status: Some("Running".into()),
            to_status: Some("Failed".into()),
            reason: Some("input table missing\n\tat Main.main".into()),
            resolves: None,
            source: "spark_poll".into(),
            at,
        }
    }

    #[test]
    fn a_failure_is_one_alert_labelled_by_job_that_ends_resolve_after_it_is_sent() {
        let at = Utc::now() - chrono::Duration::minutes(10);
        let now = Utc::now();
        let one = Outgoing::One(Box::new(notification("m1", "failed", at)));
        let alerts = alerts(&settings(), &one, now);
        assert_eq!(alerts.len(), 1);
        let alert = &alerts[0];
        let labels: Vec<(&str, &str)> = alert
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("alertname", "JobwardenJobFailed"),
                ("cluster", "analytics"),
                ("job_id", "e-m1"),
                ("job_name", "nightly-load"),
                ("severity", "critical"),
                ("team", "data"),
            ]
        );
        assert_eq!(
            alert.annotations["summary"],
            "nightly-load (e-m1) failed: input table missing"
        );
        assert_eq!(
            alert.annotations["description"],
            "input table missing\n\tat Main.main"
        );
        assert_eq!(alert.starts_at, at);
        assert_eq!(alert.ends_at, now + chrono::Duration::hours(1));
    }

    #[test]
    fn successes_and_cancellations_are_no_alerts() {
        for event in ["succeeded", "cancelled"] {
            let one = Outgoing::One(Box::new(notification("m1", event, Utc::now())));
            assert!(alerts(&settings(), &one, Utc::now()).is_empty(), "{event}");
        }
    }

    #[test]
    fn a_storm_is_an_alert_per_listed_job_and_one_counting_the_rest() {
        let now = Utc::now();
        let storm = Outgoing::Storm {
            id: "g1".into(),
            total: 5,
            listed: vec![
                notification("m1", "failed", now),
                notification("m2", "timed_out", now),
            ],
        };
        let alerts = alerts(&settings(), &storm, now);
        let names: Vec<&str> = alerts
            .iter()
            .map(|a| a.labels["alertname"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "JobwardenJobFailed",
                "JobwardenJobTimedOut",
                "JobwardenFailureStorm"
            ]
        );
        let rest = &alerts[2];
        assert_eq!(rest.labels["storm_id"], "g1");
        assert_eq!(
            rest.labels["cluster"], "analytics",
            "the storm's one cluster"
        );
        assert!(
            rest.annotations["summary"].starts_with("5 jobs failed"),
            "{:?}",
            rest.annotations
        );
        assert!(rest.annotations["description"].contains("…and 3 more"));
    }

    #[test]
    fn a_storm_listing_every_job_needs_no_counting_alert() {
        let now = Utc::now();
        let storm = Outgoing::Storm {
            id: "g1".into(),
            total: 1,
            listed: vec![notification("m1", "failed", now)],
        };
        assert_eq!(alerts(&settings(), &storm, now).len(), 1);
    }

    #[test]
    fn alerts_go_below_the_alertmanagers_path_prefix() {
        assert_eq!(endpoint("http://am:9093/"), "http://am:9093/api/v2/alerts");
        assert_eq!(
            endpoint("https://ops.example.com/alertmanager"),
            "https://ops.example.com/alertmanager/api/v2/alerts"
        );
    }
}
