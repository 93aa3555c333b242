//! The submission queue of the jobs jobwarden submits: a job's place in it (priority first,
//! first come first served within a priority, and aging so that a low priority waits a bounded
//! time), and which cluster a job leaves it for (one with a free place, the most free among
//! those it may run on, never one that is away).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How the default cluster (`[spark]`) is named where a name is needed: in a submission's
/// set of clusters and in stored sets. `check_clusters` refuses it as a cluster's name.
pub const DEFAULT_CLUSTER: &str = "default";

/// The highest priority a submission may ask for; 0 is the default and the lowest.
pub const MAX_PRIORITY: i32 = 1_000;

/// A priority as a submission gives it, or why it is refused (the message names the field).
pub fn check_priority(priority: i64) -> Result<i32, String> {
    if (0..=i64::from(MAX_PRIORITY)).contains(&priority) {
        Ok(priority as i32)
    } else {
        Err(format!(
            "priority must be a whole number from 0 (the default, lowest) to {MAX_PRIORITY}, not {priority}"
        ))
    }
}

/// A job's place in the queue, lowest first: the moment it became ready, less a head start of
/// `aging` per priority point. Within a priority that is arrival order; across priorities a
/// job is overtaken only by jobs that became ready less than `(their priority - its priority)
/// × aging` after it, so no job waits behind an endless stream of higher ones.
pub fn queue_rank(ready_at: DateTime<Utc>, priority: i32, aging: Duration) -> i64 {
    let head_start = i64::try_from(aging.as_millis())
        .unwrap_or(i64::MAX)
        .saturating_mul(i64::from(priority.max(0)));
    ready_at.timestamp_millis().saturating_sub(head_start)
}

/// One cluster a job may be placed on, as the capacity decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// `None` is the default cluster.
    pub cluster: Option<String>,
    /// Drivers jobwarden knows on it that have not ended (and submissions on their way).
    pub running: u64,
    /// `max_running` of the cluster; `None`: no limit.
    pub max_running: Option<u64>,
    /// Free cores the master reported (`cores - coresused`), when jobwarden reads it.
    pub free_cores: Option<i64>,
    /// Jobs ahead of this one in the queue that may also take a place on it.
    pub ahead: u64,
    /// The Submitter cannot reach it now.
    pub away: bool,
}

impl Room {
    fn name(&self) -> &str {
        self.cluster.as_deref().unwrap_or("default")
    }

    /// Free places, `None` for unlimited.
    fn free(&self) -> Option<u64> {
        let by_count = self.max_running.map(|m| m.saturating_sub(self.running));
        let by_cores = self
            .free_cores
            .map(|cores| if cores > 0 { u64::MAX } else { 0 });
        match (by_count, by_cores) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b.filter(|b| *b == 0)),
        }
    }

    fn takes(&self) -> bool {
        !self.away && self.free().is_none_or(|free| free > self.ahead)
    }

    fn describe(&self) -> String {
        if self.away {
            return format!("{}: away", self.name());
        }
        let cores = match self.free_cores {
            Some(c) if c <= 0 => ", no free cores",
            _ => "",
        };
        match (self.max_running, self.free()) {
            (Some(max), _) => format!(
                "{}: {} of {max} running, {} ahead{cores}",
                self.name(),
                self.running,
                self.ahead
            ),
            (None, Some(0)) => format!("{}: {} running{cores}", self.name(), self.running),
            (None, _) => format!("{}: {} running, no limit", self.name(), self.running),
        }
    }
}

/// Where a job goes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On this cluster; `detail` says why, for the history.
    On {
        cluster: Option<String>,
        detail: String,
    },
    /// Nowhere yet: every cluster it may use is full, taken by jobs ahead of it, or away.
    Full { detail: String },
}

/// Picks the cluster with the most free places among those that take the job now (an
/// unlimited one counts as the most); ties go to the fewest running, then to the order given.
pub fn place(rooms: &[Room]) -> Placement {
    let best = rooms
        .iter()
        .filter(|r| r.takes())
        .min_by_key(|r| (std::cmp::Reverse(r.free().unwrap_or(u64::MAX)), r.running));
    let others = |chosen: Option<&Room>| {
        rooms
            .iter()
            .filter(|r| Some(*r) != chosen)
            .map(Room::describe)
            .collect::<Vec<_>>()
            .join("; ")
    };
    match best {
        Some(room) => {
            let rest = others(Some(room));
            Placement::On {
                cluster: room.cluster.clone(),
                detail: if rest.is_empty() {
                    format!("placed on {}", room.describe())
                } else {
                    format!("placed on {} (also allowed: {rest})", room.describe())
                },
            }
        }
        None => Placement::Full {
            detail: format!("waiting for capacity: {}", others(None)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn room(name: &str, running: u64, max: Option<u64>) -> Room {
        Room {
            cluster: Some(name.into()),
            running,
            max_running: max,
            free_cores: None,
            ahead: 0,
            away: false,
        }
    }

    #[test]
    fn priorities_outside_zero_to_the_maximum_are_refused_naming_the_field() {
        assert_eq!(check_priority(0), Ok(0));
        assert_eq!(check_priority(1_000), Ok(1_000));
        for bad in [-1, 1_001, i64::MAX] {
            let message = check_priority(bad).unwrap_err();
            assert!(message.starts_with("priority must be"), "{message}");
            assert!(message.contains(&bad.to_string()), "{message}");
        }
    }

    #[test]
    fn the_queue_is_by_priority_then_arrival_and_aging_bounds_the_wait() {
        let aging = Duration::from_secs(60);
        // Same priority: arrival order.
        assert!(queue_rank(at(0), 5, aging) < queue_rank(at(1), 5, aging));
        // A higher priority arriving later goes first...
        assert!(queue_rank(at(100), 2, aging) < queue_rank(at(0), 0, aging));
        // ...but not once the low one has waited longer than the difference times aging.
        assert!(queue_rank(at(0), 0, aging) < queue_rank(at(121), 2, aging));
    }

    #[test]
    fn the_job_goes_to_the_allowed_cluster_with_the_most_free_places() {
        let rooms = [
            room("a", 3, Some(4)),
            room("b", 1, Some(4)),
            room("c", 0, Some(2)),
        ];
        let Placement::On { cluster, detail } = place(&rooms) else {
            panic!("not placed")
        };
        assert_eq!(cluster.as_deref(), Some("b"));
        assert!(
            detail.starts_with("placed on b: 1 of 4 running"),
            "{detail}"
        );
        assert!(detail.contains("a: 3 of 4 running"), "{detail}");
    }

    #[test]
    fn a_cluster_that_is_away_is_never_chosen() {
        let mut away = room("a", 0, None);
        away.away = true;
        let rooms = [away.clone(), room("b", 9, Some(10))];
        let Placement::On { cluster, detail } = place(&rooms) else {
            panic!("not placed")
        };
        assert_eq!(cluster.as_deref(), Some("b"));
        assert!(detail.contains("a: away"), "{detail}");
        assert!(matches!(place(&[away]), Placement::Full { .. }));
    }

    #[test]
    fn a_job_waits_while_the_free_places_are_owed_to_jobs_ahead_of_it() {
        let mut full = room("a", 2, Some(4));
        full.ahead = 2;
        let Placement::Full { detail } = place(std::slice::from_ref(&full)) else {
            panic!("placed past the queue")
        };
        assert!(detail.contains("a: 2 of 4 running, 2 ahead"), "{detail}");
        full.ahead = 1;
        assert!(matches!(place(&[full]), Placement::On { .. }));
    }

    #[test]
    fn no_free_cores_on_the_master_keeps_a_job_off_an_unlimited_cluster() {
        let mut busy = room("a", 3, None);
        busy.free_cores = Some(0);
        assert!(matches!(place(&[busy.clone()]), Placement::Full { .. }));
        busy.free_cores = Some(4);
        assert!(matches!(place(&[busy]), Placement::On { .. }));
    }

    #[test]
    fn an_unlimited_cluster_counts_as_the_most_free() {
        let rooms = [room("a", 0, Some(100)), room("b", 50, None)];
        let Placement::On { cluster, .. } = place(&rooms) else {
            panic!("not placed")
        };
        assert_eq!(cluster.as_deref(), Some("b"));
    }
}
