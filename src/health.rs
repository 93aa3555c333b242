//! Liveness that readiness can judge: each long-running part beats a heartbeat while it makes
//! progress, and is called stale when its last beat is older than its settings allow. An
//! actor that crash-loops, hangs or stops ticking stops beating, whatever its address says.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
}
