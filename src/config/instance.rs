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
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let suffix = (nanos ^ std::process::id().rotate_left(16)) & 0xff_ffff;
        format!("{}-{}-{suffix:06x}", host_name(), std::process::id())
    }

    /// Whether the id is made up at each start (and so names this host and process).
    pub fn is_made_up(&self) -> bool {
        self.id.trim().is_empty()
    }
}

/// This machine's name, as made-up instance ids begin with it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The process id inside a made-up instance id of `host` (`host-pid-suffix`).
pub fn made_up_pid(id: &str, host: &str) -> Option<u32> {
    let rest = id.strip_prefix(host)?.strip_prefix('-')?;
    let (pid, suffix) = rest.split_once('-')?;
    (suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| pid.parse().ok())
        .flatten()
}

impl InstanceSettings {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_up_id_names_its_host_and_process() {
        let settings = InstanceSettings {
            id: String::new(),
            lease: Duration::from_secs(30),
        };
        let id = settings.resolved_id();
        assert_eq!(made_up_pid(&id, &host_name()), Some(std::process::id()));
        assert!(settings.is_made_up());
    }

    #[test]
    fn another_hosts_or_a_chosen_id_names_no_process_here() {
        assert_eq!(made_up_pid("other-host-12-abcdef", "web-1"), None);
        assert_eq!(made_up_pid("web-1-12-abcdef", "web-1"), Some(12));
        assert_eq!(made_up_pid("web-1-blue", "web-1"), None);
        assert_eq!(made_up_pid("web-1-12-notahex", "web-1"), None);
    }
}
