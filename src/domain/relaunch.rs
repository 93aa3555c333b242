//! Following a relaunched driver. Spark starts a supervised driver again under a new id when
//! it dies; the row follows the new id only when exactly one candidate is not already another
//! row's, and otherwise keeps watching the old id and says why, once, rather than guess.

use super::status::{JobStatus, Lifecycle};

/// What the row does about the drivers that may be its relaunched one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relaunch {
    /// Exactly one free candidate: the row follows it from now on.
    Follow(String),
    /// Several free candidates, seen for the first time: the row stays and says which.
    Unsure(Vec<String>),
    /// Nothing to do or say: no free candidate, the job ended, or the doubt was said already.
    Stay,
}

/// Decides for a row in `status` whose driver Spark reported relaunched; `tracked` says which
/// candidates another row already follows, and `said_before` whether the previous answer was
/// a relaunch too (the doubt, if any, was noted then).
pub fn follow(
    status: JobStatus,
    candidates: &[String],
    tracked: impl Fn(&str) -> bool,
    said_before: bool,
) -> Relaunch {
    if status.is_terminal() {
        return Relaunch::Stay;
    }
    let free: Vec<&String> = candidates.iter().filter(|id| !tracked(id)).collect();
    match free.as_slice() {
        [] => Relaunch::Stay,
        [one] => Relaunch::Follow((*one).clone()),
        _ if said_before => Relaunch::Stay,
        many => Relaunch::Unsure(many.iter().map(|id| (*id).clone()).collect()),
    }
}

impl Relaunch {
    /// The history line for this decision about the row that followed `old`, if it needs one.
    pub fn detail(&self, old: &str) -> Option<String> {
        match self {
            Relaunch::Follow(new) => Some(format!(
                "relaunched by Spark as {new} (was {old}): the only driver of the same main class started after it and tracked by no other row; following {new}"
            )),
            Relaunch::Unsure(many) => Some(format!(
                "relaunched by Spark, but {} drivers could be the new one ({}): still watching {old} rather than guess",
                many.len(),
                many.join(", ")
            )),
            Relaunch::Stay => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn follows_only_a_single_free_candidate() {
        let taken = |id: &str| id == "driver-b";
        // (status, candidates, said before, decision)
        let table = [
            (
                JobStatus::Running,
                vec!["driver-a"],
                false,
                Relaunch::Follow("driver-a".into()),
            ),
            (
                JobStatus::Running,
                vec!["driver-a", "driver-b"],
                false,
                Relaunch::Follow("driver-a".into()),
            ),
            (JobStatus::Running, vec!["driver-b"], false, Relaunch::Stay),
            (JobStatus::Running, vec![], false, Relaunch::Stay),
            (
                JobStatus::Running,
                vec!["driver-a", "driver-c"],
                false,
                Relaunch::Unsure(ids(&["driver-a", "driver-c"])),
            ),
            (
                JobStatus::Running,
                vec!["driver-a", "driver-c"],
                true,
                Relaunch::Stay,
            ),
            (
                JobStatus::Submitting,
                vec!["driver-a"],
                true,
                Relaunch::Follow("driver-a".into()),
            ),
            (JobStatus::Failed, vec!["driver-a"], false, Relaunch::Stay),
            (
                JobStatus::Succeeded,
                vec!["driver-a", "driver-c"],
                false,
                Relaunch::Stay,
            ),
        ];
        for (status, candidates, said_before, want) in table {
            let got = follow(status, &ids(&candidates), taken, said_before);
            assert_eq!(
                got, want,
                "{status}, {candidates:?}, said before: {said_before}"
            );
        }
    }

    #[test]
    fn each_decision_that_changes_something_says_so_once() {
        let follow = Relaunch::Follow("driver-2".into())
            .detail("driver-1")
            .unwrap();
        assert!(follow.contains("as driver-2 (was driver-1)"), "{follow}");
        let unsure = Relaunch::Unsure(ids(&["driver-2", "driver-3"]))
            .detail("driver-1")
            .unwrap();
        assert!(
            unsure.contains("2 drivers could be the new one (driver-2, driver-3)"),
            "{unsure}"
        );
        assert!(unsure.contains("still watching driver-1"), "{unsure}");
        assert_eq!(Relaunch::Stay.detail("driver-1"), None);
    }
}
