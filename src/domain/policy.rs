//! The policies a job is polled and timed out by: given once at start from the settings, not
//! carried in each change.

use std::time::Duration;

/// How often a job is polled, and how far failed polls put its next poll off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPolicy {
    pub interval: Duration,
    /// Cap on the delay after consecutive failed polls.
    pub max_backoff: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutPolicy {
    /// Failed polls (or unknown-id answers) since the last good answer, for this long.
    pub stuck_timeout: Duration,
    /// Longest stay in Queued or Submitting.
    pub queued_timeout: Duration,
    /// Longest run; `None` lets long jobs run as long as Spark confirms them.
    pub max_runtime: Option<Duration>,
}

/// How long to wait before polling a job again after `failures` consecutive failed polls:
/// the usual interval after the first, then doubling, capped.
pub fn poll_backoff(failures: u32, policy: &PollPolicy) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    policy
        .interval
        .saturating_mul(1 << doublings)
        .min(policy.max_backoff.max(policy.interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: PollPolicy = PollPolicy {
        interval: Duration::from_secs(15),
        max_backoff: Duration::from_secs(300),
    };

    #[test]
    fn backoff_doubles_from_the_interval_up_to_the_cap() {
        let delays: Vec<u64> = (1..=7).map(|n| poll_backoff(n, &POLL).as_secs()).collect();
        assert_eq!(delays, vec![15, 30, 60, 120, 240, 300, 300]);
        assert_eq!(poll_backoff(u32::MAX, &POLL), POLL.max_backoff);
    }
}
