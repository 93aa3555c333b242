//! How one observation of an execution (or a failure to observe it) changes that execution's
//! row: status by the transition table, progress that never falls, timestamps that are set
//! once, the poll schedule (backoff after failed polls), the relaunch note, and the timeout
//! verdicts. Each change says which history line, if any, it calls for. The rules take half the
//! file; the other half is their table tests, kept beside them.

use chrono::{DateTime, Utc};

use super::policy::{poll_backoff, PollPolicy};
use super::status::{judge, JobStatus, Lifecycle, Refusal, Verdict};

/// The part of an execution row that observations may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionState {
    pub status: JobStatus,
    /// The backend's own word for the state, kept for operators.
    pub raw_state: Option<String>,
    pub progress: u8,
    pub created_at: DateTime<Utc>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub last_polled_at: Option<DateTime<Utc>>,
    pub last_confirmed_at: Option<DateTime<Utc>>,
    /// Not polled before this instant (set after failed polls); `None`: at the next cycle.
    pub next_poll_at: Option<DateTime<Utc>>,
    pub consecutive_poll_failures: u32,
    pub last_poll_error: Option<String>,
    /// The first failed poll of the current run of failures: what the stuck rule counts from.
    pub failing_since: Option<DateTime<Utc>>,
}

impl ExecutionState {
    /// A freshly registered execution.
    pub fn queued(created_at: DateTime<Utc>) -> Self {
        ExecutionState {
            status: JobStatus::Queued,
            raw_state: None,
            progress: 0,
            created_at,
            submitted_at: None,
            started_at: None,
            completed_at: None,
            status_changed_at: Some(created_at),
            error_message: None,
            last_polled_at: None,
            last_confirmed_at: None,
            next_poll_at: None,
            consecutive_poll_failures: 0,
            last_poll_error: None,
            failing_since: None,
        }
    }
}

/// The parts of an execution row that decide whether an answer is news, as a poll page read
/// them. A poll whose answer is no news against them changes nothing the store would write,
/// so the poller need not trouble the store with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub status: JobStatus,
    pub raw_state: Option<String>,
    pub progress: u8,
    /// The last good answer ended every failed poll before it (none since), so a good answer
    /// has no failures to end.
    pub confirmed: bool,
}

impl Seen {
    /// Whether applying `obs` to a row that looks like this would change it or note it in
    /// its history. Decided by the very rule the store applies ([`ExecutionState::observe`]),
    /// on a state holding only what that rule reads, so the two cannot drift apart.
    pub fn is_news(&self, obs: &Observation) -> bool {
        if obs.relaunching || !obs.successors.is_empty() {
            return true;
        }
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        let mut state = ExecutionState {
            status: self.status,
            raw_state: self.raw_state.clone(),
            progress: self.progress,
            last_confirmed_at: self.confirmed.then_some(epoch),
            consecutive_poll_failures: u32::from(!self.confirmed),
            ..ExecutionState::queued(epoch)
        };
        let before = state.clone();
        let effect = state.observe(obs);
        state != before || effect.history.is_some()
    }
}

/// What a backend said about an execution, already mapped onto jobwarden's statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// `None` when the answer carries no status information (e.g. a master recovering).
    pub status: Option<JobStatus>,
    /// The backend's own word for the state, kept for operators.
    pub raw_state: Option<String>,
    /// Completion estimate 0–100, if the backend gave one.
    pub progress: Option<u8>,
    /// Why the job failed, when known.
    pub message: Option<String>,
    /// The backend is starting the job again after losing it (a relaunched driver).
    pub relaunching: bool,
    /// While relaunching: the backend ids that may be the relaunched job (the store follows
    /// one only if exactly one of them is not already another row's).
    pub successors: Vec<String>,
    pub at: DateTime<Utc>,
}

/// What applying a change did to the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The status moved forward.
    Transitioned { from: JobStatus, to: JobStatus },
    /// The status stayed; details such as progress or poll times may have been refreshed.
    Refreshed,
    /// The status was refused by the transition table; nothing but poll bookkeeping changed.
    Refused(Refusal<JobStatus>),
}

/// One line of a job's history: a transition, or an event worth noting while the status stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// `None` for the line that registers the job.
    pub from: Option<JobStatus>,
    pub to: JobStatus,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// What a change did, and the history line it calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub applied: Applied,
    pub history: Option<HistoryEntry>,
}

impl Effect {
    fn quiet(applied: Applied) -> Effect {
        Effect {
            applied,
            history: None,
        }
    }
}

/// The most a non-succeeded job can show: 100 means "done" and only success is done.
const MAX_UNFINISHED_PROGRESS: u8 = 99;

impl ExecutionState {
    /// The history line that registers a job.
    pub fn registered(&self, detail: Option<String>) -> HistoryEntry {
        HistoryEntry {
            from: None,
            to: self.status,
            detail,
            at: self.created_at,
        }
    }

    /// Applies one answer from the backend.
    pub fn observe(&mut self, obs: &Observation) -> Effect {
        let relaunch_begins =
            obs.relaunching && self.raw_state != obs.raw_state && !self.status.is_terminal();
        let applied = self.apply_observation(obs);
        let history = match &applied {
            Applied::Transitioned { from, to } => Some(HistoryEntry {
                from: Some(*from),
                to: *to,
                detail: describe(obs),
                at: obs.at,
            }),
            // Worth a line although the status stays Running.
            Applied::Refreshed if relaunch_begins => Some(HistoryEntry {
                from: Some(self.status),
                to: self.status,
                detail: Some(format!(
                    "{}: the driver is being relaunched (its worker was lost)",
                    obs.raw_state.as_deref().unwrap_or("relaunching")
                )),
                at: obs.at,
            }),
            _ => None,
        };
        Effect { applied, history }
    }

    /// Applies an answer. An answer that brings no news (same status, same raw state, no
    /// more progress, no failures to end) changes nothing at all, not even the poll times: the
    /// row is then not rewritten, so steady-state writes grow with what happens, not with
    /// jobs × polls. `last_polled_at` and `last_confirmed_at` are therefore the last answer
    /// that changed something; the stuck rule counts from `failing_since` instead.
    fn apply_observation(&mut self, obs: &Observation) -> Applied {
        if self.status.is_terminal() {
            // A finished row is history: not even the raw state or poll bookkeeping moves.
            return match obs.status {
                Some(observed) if observed != self.status => {
                    Applied::Refused(Refusal::AlreadyFinished {
                        current: self.status,
                        observed,
                    })
                }
                _ => Applied::Refreshed,
            };
        }
        let raw_changed = obs.raw_state.is_some() && obs.raw_state != self.raw_state;
        if raw_changed {
            self.raw_state.clone_from(&obs.raw_state);
        }
        let Some(observed) = obs.status else {
            // The backend answered but knows nothing (a master recovering). Not a failure to
            // reach it, and not a confirmation that the job is alive either.
            if raw_changed {
                self.last_polled_at = Some(obs.at);
            }
            return Applied::Refreshed;
        };
        let ends_failures = self.consecutive_poll_failures > 0 || self.last_confirmed_at.is_none();
        let progress = self.progress;
        let applied = match judge(self.status, observed) {
            Verdict::Same => {
                self.raise_progress(obs.progress);
                Applied::Refreshed
            }
            Verdict::Refuse(refusal) => Applied::Refused(refusal),
            Verdict::Advance { from, to } => {
                self.advance(to, obs.at, obs.message.as_deref());
                self.raise_progress(obs.progress);
                Applied::Transitioned { from, to }
            }
        };
        let news = raw_changed
            || ends_failures
            || self.progress != progress
            || matches!(applied, Applied::Transitioned { .. });
        if news {
            self.last_polled_at = Some(obs.at);
            self.confirmed(obs.at);
        }
        applied
    }

    /// A good answer: the poll schedule is back to normal.
    fn confirmed(&mut self, at: DateTime<Utc>) {
        self.last_confirmed_at = Some(at);
        self.consecutive_poll_failures = 0;
        self.last_poll_error = None;
        self.next_poll_at = None;
        self.failing_since = None;
    }

    /// Moves to `to` by an authority other than the backend's status answer (a timeout, an
    /// operator).
    pub fn force_finish(
        &mut self,
        to: JobStatus,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<(JobStatus, JobStatus), Refusal<JobStatus>> {
        match judge(self.status, to) {
            Verdict::Advance { from, to } => {
                self.advance(to, at, Some(message));
                Ok((from, to))
            }
            Verdict::Same => Err(Refusal::AlreadyFinished {
                current: self.status,
                observed: to,
            }),
            Verdict::Refuse(refusal) => Err(refusal),
        }
    }

    /// Fails the job at once for `message` (something that makes it impossible to go on).
    pub fn fail_now(&mut self, at: DateTime<Utc>, message: &str) -> Effect {
        match self.force_finish(JobStatus::Failed, at, message) {
            Ok((from, to)) => Effect {
                applied: Applied::Transitioned { from, to },
                history: Some(HistoryEntry {
                    from: Some(from),
                    to,
                    detail: Some(message.to_owned()),
                    at,
                }),
            },
            Err(refusal) => Effect::quiet(Applied::Refused(refusal)),
        }
    }

    /// Counts a poll that got no usable answer and puts the next poll off by the policy's
    /// backoff. The status never moves because of this: not reaching the backend says nothing
    /// about the job.
    /// The backend itself could not answer (unreachable, timing out, failing, a master that is
    /// not the alive one): nothing is known about the job, so this never counts toward the
    /// stuck rule; the poll is retried with the same backoff, and the error is kept.
    pub fn backend_away(&mut self, at: DateTime<Utc>, error: &str, policy: &PollPolicy) -> Effect {
        if self.status.is_terminal() {
            return Effect::quiet(Applied::Refreshed);
        }
        self.last_polled_at = Some(at);
        // A run of answers without this job is interrupted: its clock starts again once the
        // backend answers again.
        self.failing_since = None;
        self.consecutive_poll_failures = self.consecutive_poll_failures.saturating_add(1);
        self.last_poll_error = Some(error.to_owned());
        let delay = poll_backoff(self.consecutive_poll_failures, policy);
        self.next_poll_at = chrono::Duration::from_std(delay).ok().map(|d| at + d);
        Effect::quiet(Applied::Refreshed)
    }

    /// The backend answered, but with nothing usable about this job (it does not know the id,
    /// or the answer is garbage): the stuck rule's clock runs from the first such poll.
    pub fn poll_failed(&mut self, at: DateTime<Utc>, error: &str, policy: &PollPolicy) -> Effect {
        if self.status.is_terminal() {
            return Effect::quiet(Applied::Refreshed);
        }
        self.last_polled_at = Some(at);
        self.failing_since.get_or_insert(at);
        self.consecutive_poll_failures = self.consecutive_poll_failures.saturating_add(1);
        self.last_poll_error = Some(error.to_owned());
        let delay = poll_backoff(self.consecutive_poll_failures, policy);
        self.next_poll_at = chrono::Duration::from_std(delay).ok().map(|d| at + d);
        Effect::quiet(Applied::Refreshed)
    }

    /// The job was given a (new) backend id: poll it at the next cycle.
    pub fn resubmitted(&mut self) {
        self.next_poll_at = None;
    }

    fn advance(&mut self, to: JobStatus, at: DateTime<Utc>, message: Option<&str>) {
        self.status = to;
        self.status_changed_at = Some(at);
        if to.stage() >= JobStatus::Submitting.stage() {
            self.submitted_at.get_or_insert(at);
        }
        if matches!(to, JobStatus::Running | JobStatus::Succeeded) {
            self.started_at.get_or_insert(at);
        }
        if to.is_terminal() {
            self.completed_at.get_or_insert(at);
            // Nothing left to poll.
            self.next_poll_at = None;
        }
        if to == JobStatus::Succeeded {
            self.progress = 100;
        }
        if matches!(to, JobStatus::Failed | JobStatus::Cancelled) {
            if let Some(message) = message.filter(|m| !m.trim().is_empty()) {
                self.error_message = Some(message.to_owned());
            }
        }
    }

    fn raise_progress(&mut self, reported: Option<u8>) {
        if self.status == JobStatus::Succeeded {
            return;
        }
        if let Some(reported) = reported {
            self.progress = self.progress.max(reported.min(MAX_UNFINISHED_PROGRESS));
        }
    }
}

fn describe(obs: &Observation) -> Option<String> {
    match (&obs.raw_state, &obs.message) {
        (Some(state), Some(msg)) => Some(format!("{state}: {msg}")),
        (Some(state), None) => Some(state.clone()),
        (None, Some(msg)) => Some(msg.clone()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const POLL: PollPolicy = PollPolicy {
        interval: std::time::Duration::from_secs(15),
        max_backoff: std::time::Duration::from_secs(300),
    };

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn saw(status: JobStatus, at: i64) -> Observation {
        Observation {
            status: Some(status),
            raw_state: Some(status.as_str().to_uppercase()),
            progress: None,
            message: None,
            relaunching: false,
            successors: Vec::new(),
            at: t(at),
        }
    }

    fn finished_job() -> ExecutionState {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&saw(JobStatus::Running, 1));
        job.observe(&saw(JobStatus::Succeeded, 2));
        job
    }

    fn seen_of(job: &ExecutionState) -> Seen {
        Seen {
            status: job.status,
            raw_state: job.raw_state.clone(),
            progress: job.progress,
            confirmed: job.consecutive_poll_failures == 0 && job.last_confirmed_at.is_some(),
        }
    }

    /// Whatever a row and an answer look like, a poll that `Seen` calls no news changes
    /// nothing when the store applies it to the whole row.
    #[test]
    fn an_answer_seen_as_no_news_changes_nothing_in_the_row() {
        let running = {
            let mut job = ExecutionState::queued(t(0));
            job.observe(&saw(JobStatus::Running, 1));
            job
        };
        let failing = {
            let mut job = running.clone();
            job.poll_failed(t(2), "unknown id", &POLL);
            job
        };
        let mut with_progress = running.clone();
        with_progress.progress = 40;
        let rows = [
            ExecutionState::queued(t(0)),
            running,
            failing,
            with_progress,
            finished_job(),
        ];
        let progress = |p: Option<u8>| Observation {
            progress: p,
            ..saw(JobStatus::Running, 5)
        };
        let answers = [
            saw(JobStatus::Running, 5),
            saw(JobStatus::Succeeded, 5),
            saw(JobStatus::Queued, 5),
            progress(Some(10)),
            progress(Some(40)),
            progress(Some(60)),
            Observation {
                raw_state: Some("RUNNING (worker page; master forgot it)".into()),
                ..saw(JobStatus::Running, 5)
            },
            Observation {
                relaunching: true,
                raw_state: Some("RELAUNCHING".into()),
                ..saw(JobStatus::Running, 5)
            },
        ];
        let mut quiet = 0;
        for row in &rows {
            for answer in &answers {
                let mut applied = row.clone();
                let effect = applied.observe(answer);
                let changed = applied != *row || effect.history.is_some();
                let news = seen_of(row).is_news(answer);
                // News that changes nothing only costs a write; the reverse would lose one.
                assert!(news || !changed, "row {row:?}, answer {answer:?}");
                if !answer.relaunching {
                    assert_eq!(news, changed, "row {row:?}, answer {answer:?}");
                }
                quiet += usize::from(!news);
            }
        }
        assert!(quiet >= 5, "the table must hold answers that are no news");
    }

    #[test]
    fn a_relaunch_is_always_news() {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&saw(JobStatus::Running, 1));
        let answer = Observation {
            relaunching: true,
            successors: vec!["driver-2".into()],
            ..saw(JobStatus::Running, 2)
        };
        assert!(seen_of(&job).is_news(&answer));
    }

    #[test]
    fn late_running_observation_never_reopens_a_finished_job() {
        let mut job = finished_job();
        let before = job.clone();
        let applied = job.observe(&saw(JobStatus::Running, 3)).applied;
        assert!(matches!(
            applied,
            Applied::Refused(Refusal::AlreadyFinished { .. })
        ));
        assert_eq!(job.status, before.status);
        assert_eq!(job.completed_at, before.completed_at);
        assert_eq!(job.raw_state, before.raw_state);
    }

    #[test]
    fn duplicate_terminal_observation_changes_nothing() {
        let mut job = finished_job();
        let before = job.clone();
        assert_eq!(
            job.observe(&saw(JobStatus::Succeeded, 9)).applied,
            Applied::Refreshed
        );
        assert_eq!(job, before);
    }

    #[test]
    fn an_answer_without_news_changes_nothing_so_the_row_is_not_rewritten() {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&saw(JobStatus::Running, 1));
        let before = job.clone();
        let effect = job.observe(&saw(JobStatus::Running, 2));
        assert_eq!(effect.applied, Applied::Refreshed);
        assert_eq!(effect.history, None);
        assert_eq!(job, before, "not even the poll times move");
        // More progress is news.
        job.observe(&Observation {
            progress: Some(40),
            ..saw(JobStatus::Running, 3)
        });
        assert_eq!(job.progress, 40);
        assert_eq!(job.last_polled_at, Some(t(3)));
    }

    #[test]
    fn a_good_answer_after_failures_is_news_and_ends_the_failure_run() {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&saw(JobStatus::Running, 1));
        job.poll_failed(t(2), "timeout", &POLL);
        job.poll_failed(t(20), "timeout", &POLL);
        assert_eq!(
            job.failing_since,
            Some(t(2)),
            "the run began at the first failure"
        );
        job.observe(&saw(JobStatus::Running, 40));
        assert_eq!(job.failing_since, None);
        assert_eq!(job.consecutive_poll_failures, 0);
        assert_eq!(job.last_confirmed_at, Some(t(40)));
    }

    #[test]
    fn failed_job_is_not_turned_into_success_by_a_later_signal() {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&Observation {
            message: Some("boom".into()),
            ..saw(JobStatus::Failed, 1)
        });
        job.observe(&saw(JobStatus::Succeeded, 2));
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.error_message.as_deref(), Some("boom"));
        assert_eq!(job.progress, 0);
    }

    #[test]
    fn timestamps_are_set_once_on_first_entry() {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&saw(JobStatus::Submitting, 1));
        job.observe(&saw(JobStatus::Running, 2));
        job.observe(&saw(JobStatus::Running, 3));
        job.observe(&saw(JobStatus::Succeeded, 4));
        assert_eq!(job.submitted_at, Some(t(1)));
        assert_eq!(job.started_at, Some(t(2)));
        assert_eq!(job.completed_at, Some(t(4)));
        assert_eq!(job.status_changed_at, Some(t(4)));
    }

    #[test]
    fn skipping_straight_to_success_fills_the_earlier_timestamps() {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&saw(JobStatus::Succeeded, 5));
        assert_eq!(job.submitted_at, Some(t(5)));
        assert_eq!(job.started_at, Some(t(5)));
        assert_eq!(job.completed_at, Some(t(5)));
    }

    #[test]
    fn a_job_that_never_ran_gets_no_start_time() {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&saw(JobStatus::Failed, 5));
        assert_eq!(job.started_at, None);
        assert_eq!(job.completed_at, Some(t(5)));
    }

    #[test]
    fn progress_never_decreases() {
        let mut job = ExecutionState::queued(t(0));
        for (reported, expected) in [(40, 40), (10, 40), (70, 70), (0, 70)] {
            job.observe(&Observation {
                progress: Some(reported),
                ..saw(JobStatus::Running, 1)
            });
            assert_eq!(job.progress, expected);
        }
    }

    #[test]
    fn progress_reaches_100_only_on_success() {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&Observation {
            progress: Some(100),
            ..saw(JobStatus::Running, 1)
        });
        assert_eq!(job.progress, 99);
        job.observe(&saw(JobStatus::Succeeded, 2));
        assert_eq!(job.progress, 100);

        let mut failed = ExecutionState::queued(t(0));
        failed.observe(&Observation {
            progress: Some(100),
            ..saw(JobStatus::Failed, 1)
        });
        assert_eq!(failed.progress, 99);
    }

    #[test]
    fn unknown_state_neither_changes_status_nor_confirms_nor_fails() {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&saw(JobStatus::Running, 1));
        job.poll_failed(t(2), "refused", &POLL);
        let applied = job
            .observe(&Observation {
                status: None,
                raw_state: Some("UNKNOWN".into()),
                progress: None,
                message: None,
                relaunching: false,
                successors: Vec::new(),
                at: t(3),
            })
            .applied;
        assert_eq!(applied, Applied::Refreshed);
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.raw_state.as_deref(), Some("UNKNOWN"));
        assert_eq!(job.consecutive_poll_failures, 1);
        assert_eq!(job.last_confirmed_at, Some(t(1)));
        assert_eq!(job.last_polled_at, Some(t(3)));
    }

    #[test]
    fn poll_failures_are_counted_and_never_change_status() {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&saw(JobStatus::Running, 1));
        for i in 0..5 {
            job.poll_failed(t(2 + i), "refused", &POLL);
        }
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.consecutive_poll_failures, 5);
        assert_eq!(job.last_confirmed_at, Some(t(1)));
        job.observe(&saw(JobStatus::Running, 10));
        assert_eq!(job.consecutive_poll_failures, 0);
    }

    #[test]
    fn backwards_observation_is_refused_and_keeps_status() {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&saw(JobStatus::Running, 1));
        let applied = job.observe(&saw(JobStatus::Submitting, 2)).applied;
        assert!(matches!(
            applied,
            Applied::Refused(Refusal::Backwards { .. })
        ));
        assert_eq!(job.status, JobStatus::Running);
    }

    #[test]
    fn forced_finish_records_the_reason_and_refuses_finished_jobs() {
        let mut job = ExecutionState::queued(t(0));
        assert_eq!(
            job.force_finish(JobStatus::Failed, t(1), "timed out"),
            Ok((JobStatus::Queued, JobStatus::Failed))
        );
        assert_eq!(job.error_message.as_deref(), Some("timed out"));
        assert!(job.force_finish(JobStatus::Failed, t(2), "again").is_err());
        assert_eq!(job.error_message.as_deref(), Some("timed out"));
    }

    #[test]
    fn failed_polls_back_off_and_a_good_answer_resets_the_schedule() {
        let mut job = ExecutionState::queued(t(0));
        job.observe(&saw(JobStatus::Running, 1));
        job.poll_failed(t(100), "connection refused", &POLL);
        assert_eq!(job.next_poll_at, Some(t(115)));
        job.poll_failed(t(115), "connection refused", &POLL);
        assert_eq!(job.next_poll_at, Some(t(145)));
        assert_eq!(job.last_poll_error.as_deref(), Some("connection refused"));
        job.observe(&saw(JobStatus::Running, 150));
        assert_eq!(job.next_poll_at, None);
        assert_eq!(job.last_poll_error, None);
        assert_eq!(job.consecutive_poll_failures, 0);
    }

    #[test]
    fn finished_job_ignores_failed_polls_and_is_never_scheduled_again() {
        let mut job = finished_job();
        let before = job.clone();
        job.poll_failed(t(10), "timeout", &POLL);
        assert_eq!(job, before);
        assert_eq!(job.next_poll_at, None);
    }

    #[test]
    fn relaunch_is_noted_once_while_the_status_stays() {
        let relaunching = |at| Observation {
            raw_state: Some("RELAUNCHING".into()),
            relaunching: true,
            successors: Vec::new(),
            ..saw(JobStatus::Running, at)
        };
        let mut job = ExecutionState::queued(t(0));
        job.observe(&saw(JobStatus::Running, 1));
        let first = job.observe(&relaunching(2));
        assert_eq!(first.applied, Applied::Refreshed);
        let note = first.history.expect("a history line for the relaunch");
        assert_eq!(
            (note.from, note.to),
            (Some(JobStatus::Running), JobStatus::Running)
        );
        assert!(note.detail.unwrap().starts_with("RELAUNCHING"));
        assert_eq!(job.observe(&relaunching(3)).history, None);
    }

    #[test]
    fn transitions_call_for_a_history_line_with_the_backend_word() {
        let mut job = ExecutionState::queued(t(0));
        let effect = job.observe(&Observation {
            message: Some("boom".into()),
            ..saw(JobStatus::Failed, 1)
        });
        let line = effect.history.unwrap();
        assert_eq!(line.from, Some(JobStatus::Queued));
        assert_eq!(line.to, JobStatus::Failed);
        assert_eq!(line.detail.as_deref(), Some("FAILED: boom"));
        assert_eq!(job.observe(&saw(JobStatus::Failed, 2)).history, None);
    }
}
