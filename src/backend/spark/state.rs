//! Spark's `driverState` values and what each means for a job's status.

use std::fmt;

use crate::domain::JobStatus;

/// The driver states a Spark standalone master reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverState {
    Submitted,
    Running,
    Relaunching,
    Finished,
    Failed,
    Killed,
    Error,
    /// The master is recovering and does not know yet; says nothing about the job.
    Unknown,
}

impl DriverState {
    pub const ALL: [DriverState; 8] = [
        DriverState::Submitted,
        DriverState::Running,
        DriverState::Relaunching,
        DriverState::Finished,
        DriverState::Failed,
        DriverState::Killed,
        DriverState::Error,
        DriverState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DriverState::Submitted => "SUBMITTED",
            DriverState::Running => "RUNNING",
            DriverState::Relaunching => "RELAUNCHING",
            DriverState::Finished => "FINISHED",
            DriverState::Failed => "FAILED",
            DriverState::Killed => "KILLED",
            DriverState::Error => "ERROR",
            DriverState::Unknown => "UNKNOWN",
        }
    }

    /// Parses Spark's spelling (any case); `None` for a state this version does not know.
    pub fn parse(raw: &str) -> Option<DriverState> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(raw.trim()))
    }

    /// The job status this state proves; `None` when it proves nothing (UNKNOWN).
    pub fn job_status(self) -> Option<JobStatus> {
        match self {
            DriverState::Submitted => Some(JobStatus::Submitting),
            DriverState::Running | DriverState::Relaunching => Some(JobStatus::Running),
            DriverState::Finished => Some(JobStatus::Succeeded),
            DriverState::Failed | DriverState::Error => Some(JobStatus::Failed),
            DriverState::Killed => Some(JobStatus::Cancelled),
            DriverState::Unknown => None,
        }
    }

    /// A progress figure when Spark gives no real one: rises with the lifecycle, never reaches
    /// 100 before success.
    pub fn estimated_progress(self) -> Option<u8> {
        match self {
            DriverState::Submitted => Some(5),
            DriverState::Running | DriverState::Relaunching => Some(10),
            DriverState::Finished => Some(100),
            _ => None,
        }
    }
}

impl fmt::Display for DriverState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The line of a driver's stderr that says why it failed: the innermost `Caused by:` if there
/// is one (the outer exception is usually Spark's reflection wrapper), else the
/// `Exception in thread` line, else the last line mentioning an exception or error.
pub fn failure_line(stderr: &str) -> Option<&str> {
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("Caused by:"))
        .or_else(|| {
            lines
                .iter()
                .rev()
                .find(|l| l.starts_with("Exception in thread"))
        })
        .or_else(|| {
            lines.iter().rev().find(|l| {
                !l.starts_with("at ") && (l.contains("Exception") || l.contains("Error:"))
            })
        })
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_maps_as_documented() {
        use DriverState::*;
        let expected = [
            (Submitted, Some(JobStatus::Submitting)),
            (Running, Some(JobStatus::Running)),
            (Relaunching, Some(JobStatus::Running)),
            (Finished, Some(JobStatus::Succeeded)),
            (Failed, Some(JobStatus::Failed)),
            (Error, Some(JobStatus::Failed)),
            (Killed, Some(JobStatus::Cancelled)),
            (Unknown, None),
        ];
        for (state, status) in expected {
            assert_eq!(state.job_status(), status, "{state}");
        }
    }

    #[test]
    fn states_parse_in_any_case_and_unknown_names_are_none() {
        for s in DriverState::ALL {
            assert_eq!(DriverState::parse(&s.as_str().to_lowercase()), Some(s));
        }
        assert_eq!(DriverState::parse("EXPLODED"), None);
    }

    #[test]
    fn estimated_progress_rises_with_the_lifecycle() {
        let submitted = DriverState::Submitted.estimated_progress().unwrap();
        let running = DriverState::Running.estimated_progress().unwrap();
        assert!(submitted < running && running < 100);
        assert_eq!(DriverState::Finished.estimated_progress(), Some(100));
    }

    #[test]
    fn failure_line_prefers_the_innermost_cause() {
        let stderr = include_str!("../../../tests/fixtures/worker-driver-stderr-FAILED.txt");
        assert_eq!(
            failure_line(stderr),
            Some("Caused by: java.lang.IllegalStateException: input table missing: s3://bucket/x")
        );
    }

    #[test]
    fn failure_line_falls_back_to_the_thread_exception() {
        let stderr = "INFO starting\nException in thread \"main\" java.lang.OutOfMemoryError: Java heap space\n\tat X.main(X.java:1)\n";
        assert_eq!(
            failure_line(stderr),
            Some("Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space")
        );
        assert_eq!(failure_line("all good\n"), None);
    }
}
