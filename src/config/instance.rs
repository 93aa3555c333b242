//! `[instance]`: who this instance is among several on one database, and how long its claim on
//! a share of the work lasts without renewal.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::{human, Problems, Validate};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSettings {
    /// Empty: host name, process id and a random suffix, new at every start.
    #[serde(default)]
    pub id: String,
    /// How long a lease holds without renewal; renewed every third of it. An instance that
    /// dies leaves its share to the others after at most this long.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

impl InstanceSettings {
    /// The configured id, or one made up for this process.
    pub fn resolved_id(&self) -> String {
        if !self.id.trim().is_empty() {
            return self.id.trim().to_owned();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let suffix = (nanos ^ std::process::id().rotate_left(16)) & 0xff_ffff;
        format!("{host}-{}-{suffix:06x}", std::process::id())
    }

    /// How often leases are renewed.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }
}

impl Validate for InstanceSettings {
    fn validate(&self, p: &mut Problems) {
        if self.lease < Duration::from_secs(1) {
            p.refuse(
                "instance.lease",
                format!("{:?}", human(self.lease)),
                "must be at least 1s",
            );
        }
        if self.id.len() > 128 {
            p.refuse(
                "instance.id",
                format!("{:?}", self.id),
                "must be at most 128 characters",
            );
        }
    }
}
