//! Rows an application keeps in its own table, beside jobwarden's copy: when the two disagree
//! about a queue job, whichever is further along its lifecycle stands, and a finished status the
//! application wrote itself is never overwritten.

use super::status::{Lifecycle, QueueStatus};

/// Whose status stands for a job both the application's row and jobwarden's copy hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Both say the same.
    Agree,
    /// The application moved the job itself (a cancel, say): its status is where the rules
    /// start from, and the change goes into the history.
    Theirs,
    /// jobwarden's copy is further along (the row was inserted after an event had been
    /// applied, say): the application's row is brought forward to it.
    Ours,
}

/// Decides between jobwarden's status `ours` and the application's `theirs`.
pub fn standing(ours: QueueStatus, theirs: QueueStatus) -> Standing {
    if theirs == ours {
        Standing::Agree
    } else if !theirs.is_terminal() && theirs.stage() < ours.stage() {
        Standing::Ours
    } else {
        Standing::Theirs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use QueueStatus::*;

    #[test]
    fn the_status_further_along_stands_and_an_application_ending_always_does() {
        // (ours, theirs, standing)
        let table = [
            (Pending, Pending, Standing::Agree),
            (Completed, Completed, Standing::Agree),
            (Pending, Processing, Standing::Theirs),
            (Processing, Completed, Standing::Theirs),
            (Processing, Cancelled, Standing::Theirs),
            (Pending, Failed, Standing::Theirs),
            (Processing, Pending, Standing::Ours),
            (Completed, Processing, Standing::Ours),
            (Failed, Pending, Standing::Ours),
            // Two endings: the application's own word on how its job ended stands.
            (Completed, Failed, Standing::Theirs),
            (Failed, Cancelled, Standing::Theirs),
        ];
        for (ours, theirs, want) in table {
            assert_eq!(standing(ours, theirs), want, "ours {ours}, theirs {theirs}");
        }
    }
}
