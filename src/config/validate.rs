//! How a section reports values that parse but cannot work: each refusal names the key as it
//! is spelled in the file, the value, and the reason.

use std::fmt;
use std::time::Duration;

/// One refused value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "  {} = {}: {}", self.key, self.value, self.reason)
    }
}

/// The refusals gathered from every section.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn refuse(&mut self, key: &str, value: impl Into<String>, reason: &str) {
        self.0.push(Problem {
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        });
    }

    /// Refuses a zero duration.
    pub fn positive(&mut self, key: &str, value: Duration) {
        if value.is_zero() {
            self.refuse(key, "\"0s\"", "must be longer than zero");
        }
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

/// A section of the settings that checks its own values.
pub trait Validate {
    fn validate(&self, problems: &mut Problems);
}

/// A duration as written in the file, for messages.
pub fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
