//! Keeping actors alive: work that might panic runs as its own task, so a panic is caught and
//! reported instead of taking the arbiter (and every actor on it) down; the actor then stops
//! and its `Supervisor` restarts it with the same address.

use std::future::Future;

use actix::Message;
use tracing::error;

use crate::metrics::METRICS;

/// Fault injection for supervision tests and drills: the receiving actor panics inside its
/// guarded work, exactly as a bug would.
#[derive(Message, Debug, Clone, Copy, Default)]
#[rtype(result = "()")]
pub struct Crash;

/// Runs `work` as a separate task; `Err` carries the panic message if it panicked.
pub async fn contained<F>(work: F) -> Result<F::Output, String>
where
    F: Future + 'static,
    F::Output: 'static,
{
    actix_rt::spawn(work).await.map_err(|e| {
        if e.is_panic() {
            panic_message(e.into_panic())
        } else {
            "the task was cancelled".to_owned()
        }
    })
}

/// Runs `work` right here, turning a panic into `Err` with its message.
pub fn guarded<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(panic_message)
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

/// Logs and counts a crash; the caller stops the actor so that its supervisor restarts it.
pub fn report_crash(actor: &'static str, reason: &str) {
    METRICS.actor_restarts.with_label_values(&[actor]).inc();
    error!(actor, reason, "actor crashed; restarting it");
}
