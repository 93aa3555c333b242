//! `[retention]`: how long finished records are kept before the leader deletes them, a bounded
//! batch at a time. Each age is a duration ("90d") or "forever".

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::validate::{Problems, Validate};

/// A record age past which it goes, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepFor(pub Option<Duration>);

impl KeepFor {
    pub const FOREVER: KeepFor = KeepFor(None);

    pub fn days(days: u64) -> KeepFor {
        KeepFor(Some(Duration::from_secs(days * 86_400)))
    }
}

impl<'de> Deserialize<'de> for KeepFor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim() == "forever" {
            return Ok(KeepFor::FOREVER);
        }
        humantime::parse_duration(text.trim())
            .map(|d| KeepFor(Some(d)))
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{text:?} is neither a duration (\"90d\", \"12h\") nor \"forever\": {e}"
                ))
            })
    }
}

impl Serialize for KeepFor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_str("forever"),
            Some(d) => s.serialize_str(&humantime::format_duration(d).to_string()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Status history rows, by the instant of their transition.
    pub history: KeepFor,
    /// Events that could not be applied, by when they arrived.
    pub dead_letters: KeepFor,
    /// Outbox messages a receiver took, by when it took them (failed ones stay listed).
    pub delivered_notifications: KeepFor,
    /// Submission attempts that ended, by when they ended (one still awaiting its driver never
    /// goes: it is what keeps a job from being submitted twice).
    pub finished_attempts: KeepFor,
    /// Finished jobs of jobwarden's own tables (never an application's mapped rows), with
    /// their history and attempts, by when they finished. Forever unless set.
    pub finished_jobs: KeepFor,
    /// Most rows one statement deletes: a batch holds its locks only that long.
    pub batch: usize,
    /// How often the leader looks for what has aged out.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// Between two batches of one table, so the store's own writes go first.
    #[serde(with = "humantime_serde")]
    pub pause: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            history: KeepFor::days(90),
            dead_letters: KeepFor::days(30),
            delivered_notifications: KeepFor::days(30),
            finished_attempts: KeepFor::days(90),
            finished_jobs: KeepFor::FOREVER,
            batch: 1_000,
            every: Duration::from_secs(600),
            pause: Duration::from_millis(50),
        }
    }
}

/// More than this per statement and one delete holds its locks for long.
const MAX_BATCH: usize = 10_000;

impl RetentionSettings {
    /// Whether anything is ever deleted.
    pub fn is_enabled(&self) -> bool {
        self.ages().iter().any(|(_, keep)| keep.0.is_some())
    }

    fn ages(&self) -> [(&'static str, KeepFor); 5] {
        [
            ("history", self.history),
            ("dead_letters", self.dead_letters),
            ("delivered_notifications", self.delivered_notifications),
            ("finished_attempts", self.finished_attempts),
            ("finished_jobs", self.finished_jobs),
        ]
    }
}

impl Validate for RetentionSettings {
    fn validate(&self, p: &mut Problems) {
        for (name, keep) in self.ages() {
            if keep.0.is_some_and(|d| d.is_zero()) {
                p.refuse(
                    &format!("retention.{name}"),
                    "\"0s\"",
                    "must be longer than zero (\"forever\" keeps everything)",
                );
            }
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            p.refuse(
                "retention.batch",
                self.batch.to_string(),
                &format!("must be between 1 and {MAX_BATCH}"),
            );
        }
        p.positive("retention.every", self.every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        keep: KeepFor,
    }

    #[test]
    fn an_age_is_a_duration_or_forever() {
        let read = |text: &str| toml::from_str::<Doc>(text).map(|d| d.keep);
        assert_eq!(read(r#"keep = "90d""#).unwrap(), KeepFor::days(90));
        assert_eq!(read(r#"keep = "forever""#).unwrap(), KeepFor::FOREVER);
        let refused = read(r#"keep = "a while""#).unwrap_err().to_string();
        assert!(refused.contains("nor \"forever\""), "{refused}");
    }

    #[test]
    fn a_zero_age_and_a_huge_batch_are_refused_naming_their_keys() {
        let settings = RetentionSettings {
            history: KeepFor(Some(Duration::ZERO)),
            batch: 1_000_000,
            ..RetentionSettings::default()
        };
        let mut problems = Problems::default();
        settings.validate(&mut problems);
        let text: Vec<String> = problems.into_vec().iter().map(|p| p.to_string()).collect();
        assert!(
            text.iter().any(|t| t.contains("retention.history")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("retention.batch")),
            "{text:?}"
        );
    }

    #[test]
    fn job_rows_are_kept_forever_unless_asked() {
        assert_eq!(RetentionSettings::default().finished_jobs, KeepFor::FOREVER);
        assert!(RetentionSettings::default().is_enabled());
    }
}
