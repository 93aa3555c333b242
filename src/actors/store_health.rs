//! The store's health as readiness and the logs need it: whether the database takes writes
//! (and why not), whether the store makes progress, and whether the database refuses every
//! change it is given, by cause, logged once a minute per cause instead of once per change.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::events::Edge;
use crate::health::Heartbeat;

/// How often one cause of refusals, or one outage, is logged again while it lasts.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Shared by the store's writers and readiness.
#[derive(Debug)]
pub struct StoreHealth {
    database: Edge,
    /// Why the database takes no write while it does not: unreachable, read-only, disk full.
    outage: Mutex<Option<Outage>>,
    pub(super) largest_batch: AtomicUsize,
    /// Beats at every commit, and every second while nothing is pending.
    pub heartbeat: Arc<Heartbeat>,
    /// Readiness fails once every change has been refused for this long.
    refusing_after: Duration,
    refusals: Mutex<Refusals>,
}

#[derive(Debug, Clone)]
struct Outage {
    reason: String,
    since: Instant,
    logged: Instant,
}

#[derive(Debug, Default)]
struct Refusals {
    /// The first refusal since the database last accepted a change.
    since: Option<Instant>,
    last: Option<(&'static str, String)>,
    /// Per cause: when it was last logged, and how many went unlogged since.
    logged: HashMap<&'static str, (Instant, u64)>,
}

impl StoreHealth {
    pub fn new(heartbeat: Arc<Heartbeat>, refusing_after: Duration) -> StoreHealth {
        StoreHealth {
            database: Edge::default(),
            outage: Mutex::new(None),
            largest_batch: AtomicUsize::new(0),
            heartbeat,
            refusing_after,
            refusals: Mutex::new(Refusals::default()),
        }
    }

    pub fn database_up(&self) -> bool {
        self.database.is_up()
    }

    /// The database took a transaction: true when that ends an outage.
    pub(super) fn database_back(&self) -> bool {
        *lock(&self.outage) = None;
        self.database.set(true)
    }

    /// A transaction could not be written for `reason` and is held. Returns whether to log
    /// it: at the start of the outage and once a minute while it lasts.
    pub(super) fn database_away(&self, reason: &str) -> (bool, Duration) {
        self.database.set(false);
        let mut outage = lock(&self.outage);
        let now = Instant::now();
        match outage.as_mut() {
            None => {
                *outage = Some(Outage {
                    reason: reason.to_owned(),
                    since: now,
                    logged: now,
                });
                (true, Duration::ZERO)
            }
            Some(o) => {
                o.reason = reason.to_owned();
                let again = o.logged.elapsed() >= LOG_EVERY;
                if again {
                    o.logged = now;
                }
                (again, o.since.elapsed())
            }
        }
    }

    /// The database refused one change (not an outage). `Some(n)` when this one is to be
    /// logged, with `n` refusals of the same cause left unlogged since the last line.
    pub(super) fn refused(&self, cause: &'static str, error: &str) -> Option<u64> {
        let mut refusals = lock(&self.refusals);
        refusals.since.get_or_insert_with(Instant::now);
        refusals.last = Some((cause, error.to_owned()));
        let now = Instant::now();
        match refusals.logged.get_mut(cause) {
            Some((at, unlogged)) if at.elapsed() < LOG_EVERY => {
                *unlogged += 1;
                None
            }
            Some((at, unlogged)) => {
                *at = now;
                Some(std::mem::take(unlogged))
            }
            None => {
                refusals.logged.insert(cause, (now, 0));
                Some(0)
            }
        }
    }

    /// The database accepted a change: it is not refusing everything.
    pub(super) fn accepted(&self) {
        let mut refusals = lock(&self.refusals);
        refusals.since = None;
    }

    /// What readiness says of the store (besides whether its actor runs).
    pub fn judge(&self) -> Result<String, String> {
        if let Some(outage) = lock(&self.outage).clone() {
            return Err(format!(
                "holding changes for {}: {}",
                seconds(outage.since.elapsed()),
                outage.reason
            ));
        }
        if !self.database.is_up() {
            return Err("holding changes until the database is back".into());
        }
        let refusals = lock(&self.refusals);
        if let (Some(since), Some((cause, error))) = (refusals.since, &refusals.last) {
            if since.elapsed() >= self.refusing_after {
                return Err(format!(
                    "every change refused for {} ({cause}): {error}",
                    seconds(since.elapsed())
                ));
            }
        }
        drop(refusals);
        self.heartbeat.judge()
    }
}

fn seconds(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(refusing_after: Duration) -> StoreHealth {
        StoreHealth::new(
            Heartbeat::new("job_store", Duration::from_secs(60)),
            refusing_after,
        )
    }

    #[test]
    fn refusals_of_one_cause_are_logged_once_until_a_minute_passes() {
        let h = health(Duration::from_secs(60));
        assert_eq!(h.refused("decode", "mismatched types"), Some(0));
        assert_eq!(h.refused("decode", "mismatched types"), None);
        assert_eq!(h.refused("decode", "mismatched types"), None);
        assert_eq!(
            h.refused("constraint", "duplicate key"),
            Some(0),
            "another cause is news"
        );
    }

    #[test]
    fn a_store_refusing_everything_for_longer_than_the_setting_is_not_ready() {
        let h = health(Duration::ZERO);
        assert!(h.judge().is_ok());
        h.refused(
            "decode",
            "mismatched types; Rust type f64 is not compatible with INT8",
        );
        let err = h.judge().unwrap_err();
        assert!(err.starts_with("every change refused for"), "{err}");
        assert!(err.contains("(decode): mismatched types"), "{err}");
        h.accepted();
        assert!(h.judge().is_ok(), "one accepted change ends it");
    }

    #[test]
    fn refusals_shorter_than_the_setting_keep_the_store_ready() {
        let h = health(Duration::from_secs(600));
        h.refused("decode", "mismatched types");
        assert!(h.judge().is_ok());
    }

    #[test]
    fn an_outage_names_its_reason_until_the_database_is_back() {
        let h = health(Duration::from_secs(60));
        assert!(h.database_away("the database is read-only").0);
        assert!(
            !h.database_away("the database is read-only").0,
            "once a minute"
        );
        let err = h.judge().unwrap_err();
        assert!(err.contains("the database is read-only"), "{err}");
        assert!(h.database_back());
        assert!(h.judge().is_ok());
    }
}
