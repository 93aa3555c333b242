//! What happens to a supervised job as a whole: its run ended.

use super::InternalEvent;
use crate::metrics::Metrics;
use crate::store::{EndedRun, HistoryLine};

/// A Spark run reached an ending status, and the batch saying so is durable: its duration is
/// observed once, by job name (bounded) and outcome. A run that never started has no duration
/// and is not observed.
pub struct JobEnded<'a> {
    pub line: &'a HistoryLine,
    pub run: &'a EndedRun,
}

impl InternalEvent for JobEnded<'_> {
    fn emit(self, m: &Metrics) {
        let (Some(ran), Some(outcome)) = (
            self.run.ran,
            crate::analytics::Outcome::of_status(&self.line.to),
        ) else {
            return;
        };
        m.job_ended(self.run.job_name.as_deref(), outcome.as_label(), ran);
    }
}
