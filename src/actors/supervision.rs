//! Keeping actors alive: work that might panic runs as its own task, so a panic is caught and
//! reported instead of taking the arbiter (and every actor on it) down; the actor then stops
//! and its `Supervisor` restarts it with the same address.

use std::future::Future;

/// Fault injection for supervision tests and drills: the receiving actor panics inside its
/// guarded work, exactly as a bug would. Only in builds with the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
#[derive(actix::Message, Debug, Clone, Copy, Default)]
#[rtype(result = "()")]
pub struct Crash;

/// Fault injection: the receiving actor stays alive but stops making progress (its loop hangs,
/// its timer stops), as one stuck on something would. Readiness must notice.
#[cfg(feature = "fault-injection")]
#[derive(actix::Message, Debug, Clone, Copy, Default)]
#[rtype(result = "()")]
pub struct Stall;

/// Work that panicked (or whose task was cancelled), with the panic's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Panicked(String);

impl Panicked {
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// Runs `work` as a separate task; `Err` carries the panic message if it panicked.
pub async fn contained<F>(work: F) -> Result<F::Output, Panicked>
where
    F: Future + 'static,
    F::Output: 'static,
{
    actix_rt::spawn(work).await.map_err(|e| {
        if e.is_panic() {
            panic_message(e.into_panic())
        } else {
            Panicked("the task was cancelled".to_owned())
        }
    })
}

/// Runs `work` right here, turning a panic into `Err` with its message.
pub fn guarded<T>(work: impl FnOnce() -> T) -> Result<T, Panicked> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(panic_message)
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> Panicked {
    Panicked(if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    })
}

/// Makes a long-running loop misbehave on request, as a bug inside it would (fault
/// injection). Inert, and free of any panic, in builds without the `fault-injection` feature.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch {
    #[cfg(feature = "fault-injection")]
    tripped: std::sync::Arc<tokio::sync::watch::Sender<Option<Fault>>>,
}

/// What an injected fault makes the loop do.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Panic, as a bug would.
    Panic,
    /// Stop making progress without dying, as a loop stuck on something would.
    Hang,
}

impl FaultSwitch {
    /// Makes every loop currently watching this switch misbehave.
    #[cfg(feature = "fault-injection")]
    pub fn trip(&self, fault: Fault) {
        self.tripped.send_replace(Some(fault));
    }

    /// A watcher that sees only trips from now on.
    pub fn watch(&self) -> FaultWatch {
        FaultWatch {
            #[cfg(feature = "fault-injection")]
            tripped: self.tripped.subscribe(),
        }
    }
}

/// One loop's view of a [`FaultSwitch`].
#[derive(Debug)]
pub struct FaultWatch {
    #[cfg(feature = "fault-injection")]
    tripped: tokio::sync::watch::Receiver<Option<Fault>>,
}

impl FaultWatch {
    /// Panics once the switch is tripped with [`Fault::Panic`]; resolves once it is tripped
    /// with [`Fault::Hang`] (the loop then stops turning); never resolves otherwise.
    pub async fn tripped(&mut self) {
        #[cfg(feature = "fault-injection")]
        while self.tripped.changed().await.is_ok() {
            match *self.tripped.borrow_and_update() {
                Some(Fault::Panic) => panic!("injected crash"),
                Some(Fault::Hang) => return,
                None => {}
            }
        }
        std::future::pending::<()>().await
    }

    /// Where a loop stays after [`Fault::Hang`]: it never turns again, but a later
    /// [`Fault::Panic`] still panics it, so a drill can end the hang with a crash and see the
    /// loop rebuilt, as restarting a stuck part would.
    pub async fn hang(&mut self) {
        loop {
            self.tripped().await;
        }
    }
}
