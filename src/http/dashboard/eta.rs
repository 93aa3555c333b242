//! ETAs: how long a job has left, from the same job name's recent successful runs (a range
//! with the median and the number of runs it rests on) and from real progress when the
//! driver UI reported some.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use entity::spark_job_executions as executions;
use maud::{html, Markup};
use sea_orm::DatabaseConnection;

use crate::domain::JobStatus;
use crate::store::dashboard_read;

use super::layout::{between, duration};

/// How long the durations are reused before they are read again: an ETA needs no fresher
/// history, and the read walks thousands of rows.
const FRESH_FOR: Duration = Duration::from_secs(60);

/// What a job name's recent successful runs took.
#[derive(Debug, Clone, PartialEq)]
pub struct Runs {
    pub count: usize,
    pub median: Duration,
    /// The middle half of the runs (all of them below four runs).
    pub low: Duration,
    pub high: Duration,
}

impl Runs {
    pub fn of(mut durations: Vec<Duration>) -> Option<Runs> {
        if durations.is_empty() {
            return None;
        }
        durations.sort();
        let n = durations.len();
        let at = |q: f64| durations[((n - 1) as f64 * q).round() as usize];
        let (low, high) = if n < 4 {
            (durations[0], durations[n - 1])
        } else {
            (at(0.25), at(0.75))
        };
        Some(Runs {
            count: n,
            median: at(0.5),
            low,
            high,
        })
    }
}

/// Each job name's recent successful runs.
type ByName = Arc<HashMap<String, Runs>>;

/// Durations per job name, read at most once a [`FRESH_FOR`]; bounded by
/// [`dashboard_read::RECENT_SUCCESSES`] runs whatever the fleet's size.
#[derive(Default)]
pub struct EtaCache {
    cached: Mutex<Option<(Instant, ByName)>>,
}

impl EtaCache {
    pub async fn runs(&self, db: &DatabaseConnection) -> ByName {
        if let Some((at, runs)) = self.cached.lock().expect("eta cache").as_ref() {
            if at.elapsed() < FRESH_FOR {
                return runs.clone();
            }
        }
        let runs: HashMap<String, Runs> = match dashboard_read::recent_successes(db).await {
            Ok(samples) => {
                let mut by_name: HashMap<String, Vec<Duration>> = HashMap::new();
                for (name, started, completed) in samples {
                    if let Some(d) = between(Some(started), Some(completed)) {
                        by_name.entry(name).or_default().push(d);
                    }
                }
                by_name
                    .into_iter()
                    .filter_map(|(name, d)| Runs::of(d).map(|r| (name, r)))
                    .collect()
            }
            Err(e) => {
                tracing::debug!(error = %e, "durations for ETAs not read; showing none this time");
                return Arc::new(HashMap::new());
            }
        };
        let runs = Arc::new(runs);
        *self.cached.lock().expect("eta cache") = Some((Instant::now(), runs.clone()));
        runs
    }
}

/// The state-based estimates (5 while submitted, 10 while running) are not progress.
fn real_progress(progress: i16) -> Option<i16> {
    (progress > 0 && progress < 100 && progress != 5 && progress != 10).then_some(progress)
}

/// The ETA of one execution, as a short text.
pub fn of(row: &executions::Model, runs: Option<&Runs>, now: DateTime<Utc>) -> Markup {
    let status = row.status.parse::<JobStatus>().ok();
    if status.is_none_or(|s| {
        matches!(
            s,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }) {
        return html! { span.none { "—" } };
    }
    let history = runs.map(|r| {
        format!(
            "median {} of {} run{}",
            duration(r.median),
            r.count,
            if r.count == 1 { "" } else { "s" }
        )
    });
    let elapsed = between(row.started_at, Some(now));
    if status != Some(JobStatus::Running) || elapsed.is_none() {
        return match runs {
            Some(r) => html! {
                span { "takes " (duration(r.low)) "–" (duration(r.high)) " once running" }
                br; span.note { (history.unwrap_or_default()) }
            },
            None => html! { span.muted { "no history yet" } },
        };
    }
    let elapsed = elapsed.unwrap_or_default();
    if let Some(p) = real_progress(row.progress) {
        let left = elapsed.mul_f64(f64::from(100 - p) / f64::from(p));
        return html! {
            span { "≈ " (duration(left)) " left" }
            br; span.note { "from progress (" (p) "%)" @if let Some(h) = &history { " · " (h) } }
        };
    }
    match runs {
        None => html! { span.muted { "no history yet" } },
        Some(r) if elapsed >= r.high => html! {
            span { "longer than usual" }
            br; span.note { (history.unwrap_or_default()) }
        },
        Some(r) => html! {
            span { (duration(r.low.saturating_sub(elapsed))) "–" (duration(r.high - elapsed)) " left" }
            br; span.note { (history.unwrap_or_default()) }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn runs_give_the_median_and_the_middle_half() {
        let runs = Runs::of(secs(&[100, 10, 40, 20, 30, 50, 60, 70, 80])).unwrap();
        assert_eq!(runs.count, 9);
        assert_eq!(runs.median, Duration::from_secs(50));
        assert_eq!(runs.low, Duration::from_secs(30));
        assert_eq!(runs.high, Duration::from_secs(70));
    }

    #[test]
    fn a_few_runs_give_their_whole_range() {
        let runs = Runs::of(secs(&[30, 10])).unwrap();
        assert_eq!(
            (runs.low, runs.high),
            (Duration::from_secs(10), Duration::from_secs(30))
        );
        assert!(Runs::of(Vec::new()).is_none());
    }

    #[test]
    fn state_based_estimates_are_not_taken_for_progress() {
        assert_eq!(real_progress(5), None);
        assert_eq!(real_progress(10), None);
        assert_eq!(real_progress(0), None);
        assert_eq!(real_progress(100), None);
        assert_eq!(real_progress(42), Some(42));
    }
}
