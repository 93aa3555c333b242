//! The two status sets jobwarden keeps (Spark executions and the transformation queue) and the
//! one rule both obey: forward only, and a finished job stays finished.

use std::fmt;
use std::str::FromStr;

/// A status set whose members sit on ordered stages; the last stage is terminal.
pub trait Lifecycle: Copy + Eq + fmt::Display {
    /// Position in the lifecycle; members sharing the last stage are the terminal ones.
    fn stage(self) -> u8;
    fn is_terminal(self) -> bool;
}

/// Status of a Spark execution row (`spark_job_executions.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStatus {
    /// A job jobwarden submits that waits for the jobs it depends on to end; it becomes
    /// Queued once they did as it asked, or Cancelled when one did not.
    Waiting,
    Queued,
    Submitting,
    Running,
    /// An attempt ended and another is due at the row's `next_attempt_at` (jobs jobwarden
    /// submits itself); the job as a whole has not ended.
    Retrying,
    Succeeded,
    Failed,
    Cancelled,
}

/// Status of a transformation queue row (`transformation_job_queue.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Waiting,
        JobStatus::Queued,
        JobStatus::Submitting,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];
    /// The statuses a job someone else submitted can have: what a mapped application table
    /// must be able to hold (jobwarden submits, and so retries, only on its own tables).
    pub const WATCHED: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Submitting,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];
    pub const NON_TERMINAL: [JobStatus; 5] = [
        JobStatus::Waiting,
        JobStatus::Queued,
        JobStatus::Submitting,
        JobStatus::Running,
        JobStatus::Retrying,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Waiting => "Waiting",
            JobStatus::Queued => "Queued",
            JobStatus::Submitting => "Submitting",
            JobStatus::Running => "Running",
            JobStatus::Retrying => "Retrying",
            JobStatus::Succeeded => "Succeeded",
            JobStatus::Failed => "Failed",
            JobStatus::Cancelled => "Cancelled",
        }
    }
}

impl Lifecycle for JobStatus {
    fn stage(self) -> u8 {
        match self {
            JobStatus::Waiting => 0,
            JobStatus::Queued => 1,
            JobStatus::Submitting => 2,
            // Between attempts: a late word of the last attempt's driver (Running) cannot move
            // it; only an ending can (a cancel). The next attempt starts by the store's hand.
            JobStatus::Running | JobStatus::Retrying => 3,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled => 4,
        }
    }

    fn is_terminal(self) -> bool {
        self.stage() == 4
    }
}

impl QueueStatus {
    pub const ALL: [QueueStatus; 5] = [
        QueueStatus::Pending,
        QueueStatus::Processing,
        QueueStatus::Completed,
        QueueStatus::Failed,
        QueueStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Pending => "Pending",
            QueueStatus::Processing => "Processing",
            QueueStatus::Completed => "Completed",
            QueueStatus::Failed => "Failed",
            QueueStatus::Cancelled => "Cancelled",
        }
    }
}

impl Lifecycle for QueueStatus {
    fn stage(self) -> u8 {
        match self {
            QueueStatus::Pending => 0,
            QueueStatus::Processing => 1,
            QueueStatus::Completed | QueueStatus::Failed | QueueStatus::Cancelled => 2,
        }
    }

    fn is_terminal(self) -> bool {
        self.stage() == 2
    }
}

/// A status name that is not a member of the set it was parsed for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {set} status {value:?} (expected one of: {expected})")]
pub struct UnknownStatus {
    pub set: &'static str,
    pub value: String,
    pub expected: String,
}

fn parse_status<S: Lifecycle>(
    set: &'static str,
    all: &[S],
    name: fn(S) -> &'static str,
    value: &str,
) -> Result<S, UnknownStatus> {
    let wanted = value.trim();
    all.iter()
        .copied()
        .find(|s| name(*s).eq_ignore_ascii_case(wanted))
        .ok_or_else(|| UnknownStatus {
            set,
            value: value.to_owned(),
            expected: all.iter().map(|s| name(*s)).collect::<Vec<_>>().join(", "),
        })
}

impl FromStr for JobStatus {
    type Err = UnknownStatus;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        parse_status("job", &Self::ALL, Self::as_str, value)
    }
}

impl FromStr for QueueStatus {
    type Err = UnknownStatus;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        parse_status("queue", &Self::ALL, Self::as_str, value)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for QueueStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the transition table says about moving from one status to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<S> {
    /// A step forward: apply it and record it.
    Advance { from: S, to: S },
    /// The same status again: nothing moves (details such as progress may still be refreshed).
    Same,
    /// Refused: applying it would rewrite history.
    Refuse(Refusal<S>),
}

/// Why an observed status was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal<S> {
    /// The job already finished; a late or duplicate signal cannot reopen or re-finish it.
    AlreadyFinished { current: S, observed: S },
    /// The observation is behind what is already known (e.g. Running back to Submitting).
    Backwards { current: S, observed: S },
}

impl<S: Lifecycle> fmt::Display for Refusal<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::AlreadyFinished { current, observed } => {
                write!(f, "job already finished as {current}; ignored {observed}")
            }
            Refusal::Backwards { current, observed } => {
                write!(f, "{observed} would step back from {current}; ignored")
            }
        }
    }
}

/// The transition table: forward moves only, terminal statuses are sticky.
pub fn judge<S: Lifecycle>(current: S, observed: S) -> Verdict<S> {
    if current == observed {
        return Verdict::Same;
    }
    if current.is_terminal() {
        return Verdict::Refuse(Refusal::AlreadyFinished { current, observed });
    }
    if observed.stage() <= current.stage() {
        return Verdict::Refuse(Refusal::Backwards { current, observed });
    }
    Verdict::Advance {
        from: current,
        to: observed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_terminal_job_status_refuses_every_other_status() {
        for current in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for observed in JobStatus::ALL.into_iter().filter(|s| *s != current) {
                assert_eq!(
                    judge(current, observed),
                    Verdict::Refuse(Refusal::AlreadyFinished { current, observed }),
                    "{current} -> {observed}"
                );
            }
        }
    }

    #[test]
    fn same_status_is_never_a_transition() {
        for s in JobStatus::ALL {
            assert_eq!(judge(s, s), Verdict::Same);
        }
        for s in QueueStatus::ALL {
            assert_eq!(judge(s, s), Verdict::Same);
        }
    }

    #[test]
    fn job_statuses_only_move_forward() {
        use JobStatus::*;
        let allowed = [
            // Its parents ended as it asked, or one did not (the store moves it; no backend
            // reports Waiting or sees the job before it is Queued).
            (Waiting, Queued),
            (Waiting, Cancelled),
            (Waiting, Submitting),
            (Waiting, Running),
            (Waiting, Retrying),
            (Waiting, Succeeded),
            (Waiting, Failed),
            (Queued, Submitting),
            (Queued, Running),
            (Queued, Succeeded),
            (Queued, Failed),
            (Queued, Cancelled),
            // No backend reports Retrying (the store sets it between attempts), but the
            // table stays plain: it is a stage after the queue.
            (Queued, Retrying),
            (Submitting, Retrying),
            (Submitting, Running),
            (Submitting, Succeeded),
            (Submitting, Failed),
            (Submitting, Cancelled),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
            (Retrying, Succeeded),
            (Retrying, Failed),
            (Retrying, Cancelled),
        ];
        for current in JobStatus::ALL {
            for observed in JobStatus::ALL {
                let verdict = judge(current, observed);
                if allowed.contains(&(current, observed)) {
                    assert_eq!(
                        verdict,
                        Verdict::Advance {
                            from: current,
                            to: observed
                        }
                    );
                } else {
                    assert!(
                        !matches!(verdict, Verdict::Advance { .. }),
                        "{current} -> {observed} must not advance"
                    );
                }
            }
        }
    }

    #[test]
    fn running_never_returns_to_submitting_queued_or_waiting() {
        use JobStatus::*;
        for observed in [Waiting, Queued, Submitting] {
            assert_eq!(
                judge(Running, observed),
                Verdict::Refuse(Refusal::Backwards {
                    current: Running,
                    observed
                })
            );
        }
    }

    #[test]
    fn queue_statuses_only_move_forward_and_finish_once() {
        use QueueStatus::*;
        assert!(matches!(
            judge(Pending, Processing),
            Verdict::Advance { .. }
        ));
        assert!(matches!(judge(Pending, Completed), Verdict::Advance { .. }));
        assert!(matches!(judge(Processing, Failed), Verdict::Advance { .. }));
        assert!(matches!(
            judge(Processing, Pending),
            Verdict::Refuse(Refusal::Backwards { .. })
        ));
        for current in [Completed, Failed, Cancelled] {
            for observed in QueueStatus::ALL.into_iter().filter(|s| *s != current) {
                assert!(matches!(
                    judge(current, observed),
                    Verdict::Refuse(Refusal::AlreadyFinished { .. })
                ));
            }
        }
    }

    #[test]
    fn status_names_parse_case_insensitively_and_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().to_uppercase().parse::<JobStatus>(), Ok(s));
            assert_eq!(s.to_string().parse::<JobStatus>(), Ok(s));
        }
        for s in QueueStatus::ALL {
            assert_eq!(s.as_str().to_lowercase().parse::<QueueStatus>(), Ok(s));
        }
    }

    #[test]
    fn unknown_status_error_names_the_value_and_the_choices() {
        let err = "Exploded".parse::<JobStatus>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"Exploded\""), "{text}");
        assert!(text.contains("Queued, Submitting, Running"), "{text}");
    }
}
