//! `[store]`: how the JobStore batches and retries its writes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::{human, Problems, Validate};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub max_batch: usize,
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Validate for StoreSettings {
    fn validate(&self, p: &mut Problems) {
        if self.max_batch == 0 {
            p.refuse("store.max_batch", "0", "must be at least 1");
        }
        p.positive("store.retry_initial", self.retry_initial);
        p.positive("store.retry_max", self.retry_max);
        p.positive("store.sweep_interval", self.sweep_interval);
        if self.retry_initial > self.retry_max {
            p.refuse(
                "store.retry_initial",
                format!("{:?}", human(self.retry_initial)),
                "must not exceed store.retry_max",
            );
        }
    }
}
