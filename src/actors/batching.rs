//! Which pending changes form the store's next batch when batches are written side by side:
//! each job's changes still commit in the order they arrived, and a change that looks beyond
//! its own job is written with no other batch in flight.

use std::collections::{HashSet, VecDeque};

use crate::store_api::Scope;

/// A pending change that can say what it must be ordered against.
pub(super) trait Scoped {
    fn scope(&self) -> Scope<'_>;
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Execution(String),
    Queue(String),
}

impl Key {
    fn of(scope: Scope<'_>) -> Option<Key> {
        match scope {
            Scope::Execution(id) => Some(Key::Execution(id.to_owned())),
            Scope::Queue(id) => Some(Key::Queue(id.to_owned())),
            Scope::Everything => None,
        }
    }
}

/// A batch handed out: its changes in arrival order, and what it holds until it is done.
pub(super) struct Batch<T> {
    pub(super) items: Vec<T>,
    held: Held,
}

impl<T> Batch<T> {
    pub(super) fn take_held(&mut self) -> Held {
        std::mem::take(&mut self.held)
    }
}

/// The jobs a batch in flight holds (no other batch may carry a change of theirs), or all of
/// them.
#[derive(Default)]
pub(super) struct Held {
    jobs: Vec<Key>,
    everything: bool,
}

/// The changes waiting to be written and the batches being written.
pub(super) struct Batches<T> {
    pending: VecDeque<T>,
    in_flight: usize,
    most_in_flight: usize,
    busy: HashSet<Key>,
    everything_busy: bool,
}

impl<T> Default for Batches<T> {
    fn default() -> Self {
        Batches {
            pending: VecDeque::new(),
            in_flight: 0,
            most_in_flight: 0,
            busy: HashSet::new(),
            everything_busy: false,
        }
    }
}

/// How far past the changes it cannot take a second batch looks for ones it can, in batches:
/// bounds the work of forming a batch behind a long run of changes to busy jobs.
const LOOK_AHEAD: usize = 4;

impl<T: Scoped> Batches<T> {
    pub(super) fn push(&mut self, item: T) {
        self.pending.push_back(item);
    }

    pub(super) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Most batches that were in flight at once.
    pub(super) fn most_in_flight(&self) -> usize {
        self.most_in_flight
    }

    /// Nothing waits and nothing is being written.
    pub(super) fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.in_flight == 0
    }

    /// The next batch of at most `max_batch` changes, if fewer than `concurrency` batches are
    /// in flight and some pending change may be written now. With nothing in flight that is
    /// simply the oldest `max_batch` changes. Beside a batch in flight, a change of a job that
    /// batch holds waits, and so does every later change of that job; a change that looks
    /// beyond its job waits for the batches in flight to finish, and so does everything after
    /// it.
    pub(super) fn next(&mut self, max_batch: usize, concurrency: usize) -> Option<Batch<T>> {
        if self.everything_busy || self.in_flight >= concurrency || self.pending.is_empty() {
            return None;
        }
        let alone = self.in_flight == 0;
        let look_at = if alone {
            max_batch
        } else {
            max_batch.saturating_mul(LOOK_AHEAD)
        };
        let mut items = Vec::new();
        let mut held = Held::default();
        let mut skipped = Vec::new();
        let mut waiting: HashSet<Key> = HashSet::new();
        let mut looked = 0;
        while items.len() < max_batch && looked < look_at {
            let Some(item) = self.pending.pop_front() else {
                break;
            };
            looked += 1;
            match Key::of(item.scope()) {
                None if alone => {
                    held.everything = true;
                    items.push(item);
                }
                None => {
                    self.pending.push_front(item);
                    break;
                }
                Some(key) if self.busy.contains(&key) || waiting.contains(&key) => {
                    waiting.insert(key);
                    skipped.push(item);
                }
                Some(key) => {
                    held.jobs.push(key);
                    items.push(item);
                }
            }
        }
        for item in skipped.into_iter().rev() {
            self.pending.push_front(item);
        }
        if items.is_empty() {
            return None;
        }
        self.in_flight += 1;
        self.most_in_flight = self.most_in_flight.max(self.in_flight);
        self.everything_busy = held.everything;
        self.busy.extend(held.jobs.iter().cloned());
        Some(Batch { items, held })
    }

    /// A batch handed out by `next` is written (or given up): its jobs are free again.
    pub(super) fn done(&mut self, held: Held) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if held.everything {
            self.everything_busy = false;
        }
        for key in &held.jobs {
            self.busy.remove(key);
        }
    }

    /// After a restart nothing is in flight any more (what was is answered as lost); the
    /// pending changes stay, in order.
    pub(super) fn forget_in_flight(&mut self) {
        self.in_flight = 0;
        self.busy.clear();
        self.everything_busy = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Change(Scope<'static>);

    impl Scoped for Change {
        fn scope(&self) -> Scope<'_> {
            self.0
        }
    }

    fn ids(batch: &Batch<Change>) -> Vec<String> {
        batch
            .items
            .iter()
            .map(|c| match c.0 {
                Scope::Execution(id) => id.to_owned(),
                Scope::Queue(id) => format!("q:{id}"),
                Scope::Everything => "*".to_owned(),
            })
            .collect()
    }

    fn queue(changes: &[Scope<'static>]) -> Batches<Change> {
        let mut batches = Batches::default();
        for &scope in changes {
            batches.push(Change(scope));
        }
        batches
    }

    #[test]
    fn with_nothing_in_flight_a_batch_is_the_oldest_changes_in_order() {
        let mut b = queue(&[
            Scope::Execution("a"),
            Scope::Everything,
            Scope::Execution("a"),
            Scope::Queue("b"),
        ]);
        let batch = b.next(3, 2).expect("a batch");
        assert_eq!(ids(&batch), ["a", "*", "a"]);
        assert_eq!(b.pending(), 1);
    }

    #[test]
    fn a_second_batch_leaves_the_jobs_of_the_first_and_their_later_changes() {
        let mut b = queue(&[Scope::Execution("a"), Scope::Execution("b")]);
        let _first = b.next(1, 2).expect("first");
        b.push(Change(Scope::Execution("a")));
        b.push(Change(Scope::Execution("c")));
        b.push(Change(Scope::Execution("a")));
        let second = b.next(10, 2).expect("second");
        assert_eq!(ids(&second), ["b", "c"]);
        assert_eq!(b.pending(), 2, "both changes of a still wait");
    }

    #[test]
    fn a_job_waiting_behind_a_busy_one_keeps_its_order_within_the_scan() {
        let mut b = queue(&[Scope::Execution("a")]);
        let first = b.next(10, 2).expect("first");
        b.push(Change(Scope::Execution("a")));
        b.push(Change(Scope::Execution("x")));
        let second = b.next(10, 2).expect("second");
        assert_eq!(ids(&second), ["x"]);
        let mut first = first;
        b.done(first.take_held());
        let third = b.next(10, 2).expect("third");
        assert_eq!(ids(&third), ["a"]);
    }

    #[test]
    fn an_execution_and_a_queue_job_of_the_same_id_are_different_jobs() {
        let mut b = queue(&[Scope::Execution("a"), Scope::Queue("a")]);
        let _first = b.next(1, 2).expect("first");
        let second = b.next(1, 2).expect("second");
        assert_eq!(ids(&second), ["q:a"]);
    }

    #[test]
    fn a_change_beyond_its_job_waits_for_the_batches_in_flight_and_holds_up_what_follows() {
        let mut b = queue(&[Scope::Execution("a")]);
        let mut first = b.next(10, 2).expect("first");
        b.push(Change(Scope::Everything));
        b.push(Change(Scope::Execution("b")));
        assert!(b.next(10, 2).is_none(), "nothing passes the wide change");
        b.done(first.take_held());
        let mut wide = b.next(10, 2).expect("the wide change, now alone");
        assert_eq!(ids(&wide), ["*", "b"]);
        b.push(Change(Scope::Execution("c")));
        assert!(b.next(10, 2).is_none(), "nothing beside a wide batch");
        b.done(wide.take_held());
        assert!(b.next(10, 2).is_some());
    }

    #[test]
    fn no_more_batches_than_the_concurrency_allows() {
        let mut b = queue(&[
            Scope::Execution("a"),
            Scope::Execution("b"),
            Scope::Execution("c"),
        ]);
        assert!(b.next(1, 2).is_some());
        assert!(b.next(1, 2).is_some());
        assert!(b.next(1, 2).is_none());
        assert_eq!(b.pending(), 1);
    }

    #[test]
    fn a_second_batch_looks_only_so_far_past_busy_jobs() {
        let mut b = queue(&[Scope::Execution("a")]);
        let _first = b.next(1, 2).expect("first");
        for _ in 0..(2 * LOOK_AHEAD) {
            b.push(Change(Scope::Execution("a")));
        }
        b.push(Change(Scope::Execution("z")));
        assert!(b.next(2, 2).is_none(), "z lies beyond the look-ahead");
        assert_eq!(
            b.pending(),
            2 * LOOK_AHEAD + 1,
            "nothing was lost or reordered"
        );
    }

    #[test]
    fn after_a_restart_the_pending_changes_are_handed_out_again_in_order() {
        let mut b = queue(&[Scope::Execution("a"), Scope::Execution("b")]);
        let _lost = b.next(1, 1).expect("first");
        b.forget_in_flight();
        let next = b.next(5, 1).expect("after restart");
        assert_eq!(ids(&next), ["b"]);
    }
}
