//! Job analytics: what a window of ended Spark runs comes to per job name (runs, success rate,
//! duration and queue-wait quantiles, failures by their first reason line) and per UTC day.
//! Pure figures from rows already read (`store::analytics_read`); the dashboard's analytics
//! page and `GET /api/v1/analytics` both show them.
//!
//! Definitions, the README's "Analytics" says the same:
//! - A run is an execution that ended (Succeeded, Failed or Cancelled) inside the window; it
//!   belongs to the UTC day it ended on.
//! - Success rate: succeeded ÷ (succeeded + failed). A cancelled run was stopped by someone,
//!   not by the job, so it counts neither way (none when no run succeeded or failed).
//! - Duration: from the driver's start (`started_at`) to the run's end (`completed_at`); a run
//!   that never started has none. A job jobwarden retried is one run: its row's `started_at`
//!   is its first driver's start, so its duration spans every attempt and the waits between.
//! - Queue wait: from the moment the job was known to be waiting (the row's `created_at`, or
//!   the driver's `submitted_at` when that is earlier: a job tracked after its submission) to
//!   its driver's start (`started_at`). It holds jobwarden's own queue (a job it submits waits
//!   for its attempt) and Spark's (a driver waiting for cores). A run that never started has
//!   none; neither has one whose times are reversed (a row written by hand).
//! - Quantiles are nearest-rank: p50 of 10 runs is the 5th shortest, p95 the 10th.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};

use crate::domain::JobStatus;

/// The window when none is asked for.
pub const DEFAULT_DAYS: u32 = 7;
/// The longest window: every figure is computed from the window's rows, read whole.
pub const MAX_DAYS: u32 = 90;
/// Job names listed at most, those with the most runs first; the rest are summed up.
pub const MAX_JOB_NAMES: usize = 50;
/// Distinct failure reasons listed at most for one job name, the most frequent first.
pub const MAX_REASONS: usize = 20;
/// A failure reason is the first non-blank line of the error, cut to this many characters.
pub const REASON_CHARS: usize = 200;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
}

impl Outcome {
    /// From a status name; none for a status that is not an ending.
    pub fn of_status(status: &str) -> Option<Outcome> {
        match status.parse::<JobStatus>().ok()? {
            JobStatus::Succeeded => Some(Outcome::Succeeded),
            JobStatus::Failed => Some(Outcome::Failed),
            JobStatus::Cancelled => Some(Outcome::Cancelled),
            _ => None,
        }
    }

    /// Every ending, as the statuses the store writes.
    pub const ALL: [(Outcome, JobStatus); 3] = [
        (Outcome::Succeeded, JobStatus::Succeeded),
        (Outcome::Failed, JobStatus::Failed),
        (Outcome::Cancelled, JobStatus::Cancelled),
    ];

    /// The lower-case name metrics label it with.
    pub fn as_label(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// One ended run, as read from `spark_job_executions`.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub job_name: Option<String>,
    pub outcome: Outcome,
    pub created_at: DateTime<Utc>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: DateTime<Utc>,
    /// The start of the error message, for failed runs only.
    pub error: Option<String>,
}

impl Run {
    /// Start to end; none when it never started.
    pub fn duration(&self) -> Option<Duration> {
        (self.completed_at - self.started_at?).to_std().ok()
    }

    /// Known to be waiting (created, or submitted if earlier) to started.
    pub fn queue_wait(&self) -> Option<Duration> {
        let waiting_since = match self.submitted_at {
            Some(submitted) => submitted.min(self.created_at),
            None => self.created_at,
        };
        (self.started_at? - waiting_since).to_std().ok()
    }
}

/// The days a window covers: `days` whole UTC days, the last of them today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub days: u32,
    /// Midnight (UTC) of the first day.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    /// The last `days` UTC days up to `now` (`days` clamped to 1..=[`MAX_DAYS`]).
    pub fn last_days(days: u32, now: DateTime<Utc>) -> Window {
        let days = days.clamp(1, MAX_DAYS);
        let first = now
            .date_naive()
            .checked_sub_days(Days::new(u64::from(days - 1)))
            .unwrap_or(NaiveDate::MIN);
        Window {
            days,
            from: Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).unwrap_or_default()),
            to: now,
        }
    }

    /// Each day of the window, oldest first.
    pub fn dates(&self) -> Vec<NaiveDate> {
        self.from
            .date_naive()
            .iter_days()
            .take(self.days as usize)
            .collect()
    }

    pub fn holds(&self, at: DateTime<Utc>) -> bool {
        at >= self.from && at <= self.to
    }
}

/// The 50th and 95th percentiles of some durations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quantiles {
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
}

impl Quantiles {
    pub fn of(mut values: Vec<Duration>) -> Quantiles {
        values.sort_unstable();
        Quantiles {
            p50: nearest_rank(&values, 0.50),
            p95: nearest_rank(&values, 0.95),
        }
    }
}

/// The smallest value with at least `q` of the values at or below it.
fn nearest_rank(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Runs counted by outcome, with their duration and queue-wait quantiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub runs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub duration: Quantiles,
    pub queue_wait: Quantiles,
}

impl Figures {
    fn of<'a>(runs: impl IntoIterator<Item = &'a Run>) -> Figures {
        let mut figures = Figures::default();
        let (mut durations, mut waits) = (Vec::new(), Vec::new());
        for run in runs {
            figures.runs += 1;
            match run.outcome {
                Outcome::Succeeded => figures.succeeded += 1,
                Outcome::Failed => figures.failed += 1,
                Outcome::Cancelled => figures.cancelled += 1,
            }
            durations.extend(run.duration());
            waits.extend(run.queue_wait());
        }
        figures.duration = Quantiles::of(durations);
        figures.queue_wait = Quantiles::of(waits);
        figures
    }

    /// Succeeded ÷ (succeeded + failed), from 0 to 1.
    pub fn success_rate(&self) -> Option<f64> {
        let decided = self.succeeded + self.failed;
        (decided > 0).then(|| self.succeeded as f64 / decided as f64)
    }
}

/// One job name over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub job_name: String,
    pub figures: Figures,
    pub last_ended_at: DateTime<Utc>,
}

/// One UTC day.
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    pub date: NaiveDate,
    pub figures: Figures,
}

/// Failed runs that gave the same first line.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    /// The first line of the error; empty when the run recorded none.
    pub reason: String,
    pub runs: u64,
    pub last_at: DateTime<Utc>,
}

/// Every job name's window, for the overview.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub window: Window,
    /// At most [`MAX_JOB_NAMES`], the most runs first (then by name).
    pub jobs: Vec<JobSummary>,
    /// Names left out of `jobs`, and their runs.
    pub other_names: u64,
    pub other_runs: u64,
    /// Runs of executions with no job name (not in `jobs`, but in `days`).
    pub unnamed_runs: u64,
    /// Every run of the window by day, names and no names together.
    pub days: Vec<Day>,
    /// The read stopped at its cap: only the latest runs of the window are counted.
    pub truncated: bool,
}

/// One job name's window, day by day, with its failures.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDetail {
    pub window: Window,
    pub summary: JobSummary,
    pub days: Vec<Day>,
    /// At most [`MAX_REASONS`], the most frequent first.
    pub reasons: Vec<Reason>,
    /// Failed runs whose reason is not among `reasons`.
    pub other_reason_runs: u64,
    pub truncated: bool,
}

fn by_day(window: &Window, runs: &[&Run]) -> Vec<Day> {
    let mut per_day: BTreeMap<NaiveDate, Vec<&Run>> = window
        .dates()
        .into_iter()
        .map(|d| (d, Vec::new()))
        .collect();
    for run in runs {
        if let Some(day) = per_day.get_mut(&run.completed_at.date_naive()) {
            day.push(run);
        }
    }
    per_day
        .into_iter()
        .map(|(date, runs)| Day {
            date,
            figures: Figures::of(runs.iter().copied()),
        })
        .collect()
}

fn summary(job_name: &str, runs: &[&Run]) -> Option<JobSummary> {
    let last_ended_at = runs.iter().map(|r| r.completed_at).max()?;
    Some(JobSummary {
        job_name: job_name.to_owned(),
        figures: Figures::of(runs.iter().copied()),
        last_ended_at,
    })
}

/// Every job name's figures over `window`, from the runs read for it.
pub fn overview(window: Window, runs: &[Run], truncated: bool) -> Overview {
    let runs: Vec<&Run> = runs
        .iter()
        .filter(|r| window.holds(r.completed_at))
        .collect();
    let mut named: HashMap<&str, Vec<&Run>> = HashMap::new();
    let mut unnamed_runs = 0;
    for run in &runs {
        match &run.job_name {
            Some(name) => named.entry(name.as_str()).or_default().push(run),
            None => unnamed_runs += 1,
        }
    }
    let mut names: Vec<(&str, Vec<&Run>)> = named.into_iter().collect();
    names.sort_by(|(a, ra), (b, rb)| rb.len().cmp(&ra.len()).then_with(|| a.cmp(b)));
    let shown = names.len().min(MAX_JOB_NAMES);
    let rest = &names[shown..];
    Overview {
        window,
        jobs: names[..shown]
            .iter()
            .filter_map(|(name, runs)| summary(name, runs))
            .collect(),
        other_names: rest.len() as u64,
        other_runs: rest.iter().map(|(_, r)| r.len() as u64).sum(),
        unnamed_runs,
        days: by_day(&window, &runs),
        truncated,
    }
}

/// One job name's figures over `window`; none when no run of it ended there.
pub fn job_detail(
    window: Window,
    job_name: &str,
    runs: &[Run],
    truncated: bool,
) -> Option<JobDetail> {
    let runs: Vec<&Run> = runs
        .iter()
        .filter(|r| window.holds(r.completed_at) && r.job_name.as_deref() == Some(job_name))
        .collect();
    let summary = summary(job_name, &runs)?;
    let mut reasons: HashMap<String, Reason> = HashMap::new();
    for run in runs.iter().filter(|r| r.outcome == Outcome::Failed) {
        let line = first_line(run.error.as_deref().unwrap_or(""), REASON_CHARS);
        let reason = reasons.entry(line.clone()).or_insert(Reason {
            reason: line,
            runs: 0,
            last_at: run.completed_at,
        });
        reason.runs += 1;
        reason.last_at = reason.last_at.max(run.completed_at);
    }
    let mut reasons: Vec<Reason> = reasons.into_values().collect();
    reasons.sort_by(|a, b| {
        b.runs
            .cmp(&a.runs)
            .then_with(|| b.last_at.cmp(&a.last_at))
            .then_with(|| a.reason.cmp(&b.reason))
    });
    let other_reason_runs = reasons.iter().skip(MAX_REASONS).map(|r| r.runs).sum();
    reasons.truncate(MAX_REASONS);
    Some(JobDetail {
        window,
        days: by_day(&window, &runs),
        summary,
        reasons,
        other_reason_runs,
        truncated,
    })
}

/// The first non-blank line of `text`, trimmed and cut to `max` characters (with `…`).
pub fn first_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut out: String = line.chars().take(max).collect();
    if line.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32, hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, hour, minute, second)
            .unwrap()
    }

    fn run(name: &str, outcome: Outcome, ended: DateTime<Utc>, ran_secs: i64) -> Run {
        let started = ended - chrono::Duration::seconds(ran_secs);
        Run {
            job_name: Some(name.into()),
            outcome,
            created_at: started - chrono::Duration::seconds(30),
            submitted_at: Some(started - chrono::Duration::seconds(10)),
            started_at: Some(started),
            completed_at: ended,
            error: None,
        }
    }

    fn secs(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let q = Quantiles::of(secs(&[100, 10, 90, 20, 80, 30, 70, 40, 60, 50]));
        assert_eq!(q.p50, Some(Duration::from_secs(50)));
        assert_eq!(q.p95, Some(Duration::from_secs(100)));
        let one = Quantiles::of(secs(&[7]));
        assert_eq!(
            (one.p50, one.p95),
            (Some(secs(&[7])[0]), Some(secs(&[7])[0]))
        );
        assert_eq!(Quantiles::of(Vec::new()), Quantiles::default());
    }

    #[test]
    fn a_window_is_whole_utc_days_ending_today() {
        let now = at(10, 15, 0, 0);
        let window = Window::last_days(7, now);
        assert_eq!(window.from, at(4, 0, 0, 0));
        assert_eq!(window.dates().len(), 7);
        assert_eq!(window.dates().last(), Some(&now.date_naive()));
        assert!(!window.holds(at(3, 23, 59, 59)));
        assert_eq!(Window::last_days(0, now).days, 1);
        assert_eq!(Window::last_days(10_000, now).days, MAX_DAYS);
    }

    #[test]
    fn success_rate_leaves_cancelled_runs_out() {
        let ended = at(10, 12, 0, 0);
        let runs = [
            run("a", Outcome::Succeeded, ended, 10),
            run("a", Outcome::Succeeded, ended, 10),
            run("a", Outcome::Succeeded, ended, 10),
            run("a", Outcome::Failed, ended, 10),
            run("a", Outcome::Cancelled, ended, 10),
        ];
        let figures = Figures::of(&runs);
        assert_eq!(
            (
                figures.runs,
                figures.succeeded,
                figures.failed,
                figures.cancelled
            ),
            (5, 3, 1, 1)
        );
        assert_eq!(figures.success_rate(), Some(0.75));
        let cancelled = [run("a", Outcome::Cancelled, ended, 1)];
        assert_eq!(Figures::of(&cancelled).success_rate(), None);
    }

    #[test]
    fn queue_wait_runs_from_the_earlier_of_creation_and_submission_to_the_start() {
        let ended = at(10, 12, 0, 0);
        let mut r = run("a", Outcome::Succeeded, ended, 60);
        assert_eq!(r.queue_wait(), Some(Duration::from_secs(30)));
        // Tracked after its submission: the submission is when it began to wait.
        r.created_at = r.started_at.unwrap() + chrono::Duration::seconds(5);
        assert_eq!(r.queue_wait(), Some(Duration::from_secs(10)));
        r.submitted_at = None;
        assert_eq!(r.queue_wait(), None, "reversed times give none");
        r.started_at = None;
        assert_eq!((r.queue_wait(), r.duration()), (None, None));
    }

    #[test]
    fn the_overview_lists_the_busiest_names_and_sums_up_the_rest() {
        let now = at(10, 23, 0, 0);
        let mut runs = Vec::new();
        for i in 0..(MAX_JOB_NAMES + 2) {
            for _ in 0..=(i % 3) {
                runs.push(run(
                    &format!("job-{i:03}"),
                    Outcome::Succeeded,
                    at(10, 1, 0, 0),
                    5,
                ));
            }
        }
        let mut unnamed = run("x", Outcome::Failed, at(9, 1, 0, 0), 5);
        unnamed.job_name = None;
        runs.push(unnamed);
        runs.push(run("too-old", Outcome::Failed, at(1, 1, 0, 0), 5));
        let overview = overview(Window::last_days(7, now), &runs, false);
        assert_eq!(overview.jobs.len(), MAX_JOB_NAMES);
        assert_eq!(overview.jobs[0].job_name, "job-002");
        assert_eq!(overview.jobs[0].figures.runs, 3);
        assert_eq!(overview.other_names, 2);
        assert_eq!(overview.unnamed_runs, 1);
        let total: u64 = overview.days.iter().map(|d| d.figures.runs).sum();
        assert_eq!(
            total as usize,
            runs.len() - 1,
            "every run in the window, by day"
        );
    }

    #[test]
    fn failures_are_grouped_by_their_first_line() {
        let now = at(10, 23, 0, 0);
        let failed = |error: &str, hour| Run {
            error: Some(error.into()),
            ..run("etl", Outcome::Failed, at(10, hour, 0, 0), 5)
        };
        let runs = [
            failed("\n  input table missing\n at Foo.scala:12", 1),
            failed("input table missing\n at Bar.scala:9", 2),
            failed("OutOfMemoryError", 3),
            run("etl", Outcome::Succeeded, at(10, 4, 0, 0), 5),
        ];
        let detail = job_detail(Window::last_days(7, now), "etl", &runs, false).unwrap();
        assert_eq!(detail.reasons.len(), 2);
        assert_eq!(detail.reasons[0].reason, "input table missing");
        assert_eq!(detail.reasons[0].runs, 2);
        assert_eq!(detail.reasons[0].last_at, at(10, 2, 0, 0));
        assert_eq!(detail.reasons[1].reason, "OutOfMemoryError");
        assert!(job_detail(Window::last_days(7, now), "nope", &runs, false).is_none());
    }

    #[test]
    fn days_hold_their_own_runs_and_empty_days_stay() {
        let now = at(10, 23, 0, 0);
        let runs = [
            run("etl", Outcome::Succeeded, at(8, 1, 0, 0), 10),
            run("etl", Outcome::Succeeded, at(8, 2, 0, 0), 30),
            run("etl", Outcome::Failed, at(10, 2, 0, 0), 50),
        ];
        let detail = job_detail(Window::last_days(3, now), "etl", &runs, false).unwrap();
        let days: Vec<(u32, u64, Option<Duration>)> = detail
            .days
            .iter()
            .map(|d| {
                use chrono::Datelike;
                (d.date.day(), d.figures.runs, d.figures.duration.p95)
            })
            .collect();
        assert_eq!(
            days,
            [
                (8, 2, Some(Duration::from_secs(30))),
                (9, 0, None),
                (10, 1, Some(Duration::from_secs(50)))
            ]
        );
    }

    #[test]
    fn a_reason_is_cut_to_its_limit() {
        assert_eq!(first_line("abcdef", 3), "abc…");
        assert_eq!(first_line("  \n\n", 3), "");
    }
}
