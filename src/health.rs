//! Liveness that readiness can judge: each long-running part beats a heartbeat while it makes
//! progress, and is called stale when its last beat is older than its settings allow. An
//! actor that crash-loops, hangs or stops ticking stops beating, whatever its address says.
//! An outside dependency that a part keeps trying (Kafka's brokers) has a [`Reach`]: a loop
//! that turns while retrying is alive, not ready.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The last sign of progress of one part.
#[derive(Debug)]
pub struct Heartbeat {
    name: &'static str,
    origin: Instant,
    /// Milliseconds after `origin` of the last beat.
    last: AtomicU64,
    stale_after: Duration,
}

impl Heartbeat {
    /// A heartbeat that counts as fresh now and goes stale `stale_after` without a beat.
    pub fn new(name: &'static str, stale_after: Duration) -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            name,
            origin: Instant::now(),
            last: AtomicU64::new(0),
            stale_after,
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn beat(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn silence(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    /// `Ok` with a short note while fresh, `Err` saying for how long it has been silent.
    pub fn judge(&self) -> Result<String, String> {
        let silence = self.silence();
        if silence <= self.stale_after {
            Ok("ok".into())
        } else {
            Err(format!(
                "no progress for {} (allowed {})",
                humantime::format_duration(Duration::from_secs(silence.as_secs())),
                humantime::format_duration(self.stale_after)
            ))
        }
    }
}

/// One long-running part as readiness judges it: its heartbeat, and the outside dependency
/// its work waits on, if any.
#[derive(Debug, Clone)]
pub struct Part {
    pub heartbeat: Arc<Heartbeat>,
    pub reach: Option<Arc<Reach>>,
}

impl Part {
    pub fn new(heartbeat: Arc<Heartbeat>) -> Part {
        Part {
            heartbeat,
            reach: None,
        }
    }

    pub fn waiting_on(mut self, reach: Arc<Reach>) -> Part {
        self.reach = Some(reach);
        self
    }

    pub fn name(&self) -> &'static str {
        self.heartbeat.name()
    }

    /// Stuck first (a hung loop is the worse news), then unreachable.
    pub fn judge(&self) -> Result<String, String> {
        let alive = self.heartbeat.judge()?;
        match &self.reach {
            Some(reach) => reach.judge(),
            None => Ok(alive),
        }
    }
}

/// Whether an outside dependency answers, as its client last saw it.
#[derive(Debug)]
pub struct Reach {
    /// What is reached, as readiness names it ("brokers").
    what: &'static str,
    origin: Instant,
    /// How long the first contact may take before an unanswered start counts as unreachable
    /// (a dependency that refuses connections says so sooner, through [`Reach::lost`]).
    first_contact_within: Duration,
    state: Mutex<ReachState>,
}

#[derive(Debug, Clone)]
enum ReachState {
    NotYet,
    Up,
    Down { since: Instant, reason: String },
}

impl Reach {
    pub fn new(what: &'static str, first_contact_within: Duration) -> Arc<Reach> {
        Arc::new(Reach {
            what,
            origin: Instant::now(),
            first_contact_within,
            state: Mutex::new(ReachState::NotYet),
        })
    }

    /// The dependency answered. True when that ends an outage (not at the first contact).
    pub fn reached(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let was_down = matches!(*state, ReachState::Down { .. });
        *state = ReachState::Up;
        was_down
    }

    /// The dependency is away, for `reason`. True when that starts an outage.
    pub fn lost(&self, reason: impl Into<String>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            ReachState::Down { reason: last, .. } => {
                *last = reason.into();
                false
            }
            other => {
                *other = ReachState::Down {
                    since: Instant::now(),
                    reason: reason.into(),
                };
                true
            }
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            ReachState::Up
        )
    }

    /// `Ok` while reached (or while the first contact may still come), `Err` saying since
    /// when and why not.
    pub fn judge(&self) -> Result<String, String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match state {
            ReachState::Up => Ok("ok".into()),
            ReachState::NotYet if self.origin.elapsed() <= self.first_contact_within => {
                Ok("connecting".into())
            }
            ReachState::NotYet => Err(format!(
                "{} not reached in the {} since start",
                self.what,
                humantime::format_duration(Duration::from_secs(self.origin.elapsed().as_secs()))
            )),
            ReachState::Down { since, reason } => Err(format!(
                "{} unreachable for {}: {reason}",
                self.what,
                humantime::format_duration(Duration::from_secs(since.elapsed().as_secs()))
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_heartbeat_is_fresh() {
        let heart = Heartbeat::new("x", Duration::from_secs(60));
        assert!(heart.judge().is_ok());
    }

    #[test]
    fn a_silent_heartbeat_goes_stale_and_a_beat_makes_it_fresh() {
        let heart = Heartbeat::new("x", Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        let err = heart.judge().unwrap_err();
        assert!(err.contains("no progress for"), "{err}");
        heart.beat();
        assert!(heart.silence() < Duration::from_millis(5));
    }

    #[test]
    fn a_dependency_not_yet_reached_is_connecting_until_its_first_contact_is_late() {
        let patient = Reach::new("brokers", Duration::from_secs(60));
        assert_eq!(patient.judge(), Ok("connecting".into()));
        let late = Reach::new("brokers", Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        let err = late.judge().unwrap_err();
        assert!(err.starts_with("brokers not reached"), "{err}");
    }

    #[test]
    fn a_lost_dependency_names_its_reason_until_it_is_reached_again() {
        let reach = Reach::new("brokers", Duration::from_secs(60));
        assert!(!reach.reached(), "a first contact ends no outage");
        assert!(reach.lost("connection refused"));
        assert!(!reach.lost("timed out"), "an outage starts once");
        let err = reach.judge().unwrap_err();
        assert!(err.starts_with("brokers unreachable for"), "{err}");
        assert!(err.ends_with("timed out"), "the latest reason: {err}");
        assert!(reach.reached(), "reaching it ends the outage");
        assert_eq!(reach.judge(), Ok("ok".into()));
    }
}
