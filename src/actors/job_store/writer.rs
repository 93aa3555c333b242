//! One batch's write, in its own task: retried through outages and conflicts, split into
//! single changes when the database refuses the batch, each refusal counted by cause.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::{DatabaseConnection, DbErr};
use tracing::{debug, warn};

use crate::config::StoreSettings;
use crate::events::{
    BatchCommitted, ChangeRefused, DatabaseBack, DatabaseUnreachable, Events, HistoryWritten,
    JobEnded, WriteFenced,
};
use crate::notify::NotifyRules;
use crate::store::mapped::Mapping;
use crate::store::{self, Committed, Inserted, Rules, WriteContext};
use crate::store_api::{Fence, OpError, WriteOp, WriteOutcome};

use super::StoreHealth;

/// What one batch's write needs, moved into its task.
pub(super) struct Writer {
    pub(super) db: DatabaseConnection,
    pub(super) settings: StoreSettings,
    pub(super) rules: Arc<Rules>,
    pub(super) mapping: Arc<Mapping>,
    pub(super) notify: Arc<NotifyRules>,
    pub(super) instance: Option<String>,
    pub(super) health: Arc<StoreHealth>,
    pub(super) events: Events,
    pub(super) turn: Option<Arc<tokio::sync::Mutex<()>>>,
    pub(super) wake: Option<Arc<tokio::sync::Notify>>,
}

impl Writer {
    /// Writes `ops` in one transaction, waiting out database outages. If the database refuses
    /// the batch as such (not an outage), each change is retried alone so one bad change cannot
    /// sink the others.
    pub(super) async fn write_durably(
        &self,
        ops: Vec<WriteOp>,
        fences: Vec<Option<Fence>>,
    ) -> (Vec<Result<WriteOutcome, OpError>>, Inserted) {
        let (outcomes, inserted) = self.write_each(&ops, &fences).await;
        for (op, outcome) in ops.iter().zip(&outcomes) {
            if let (Err(e @ OpError::Fenced { .. }), Some(id)) = (outcome, op.execution_id()) {
                self.events.emit(WriteFenced {
                    execution_id: id,
                    error: e,
                });
            }
        }
        (outcomes, inserted)
    }

    async fn write_each(
        &self,
        ops: &[WriteOp],
        fences: &[Option<Fence>],
    ) -> (Vec<Result<WriteOutcome, OpError>>, Inserted) {
        match self.write_retrying(ops, fences).await {
            Ok(written) => written,
            Err(e) if ops.len() > 1 => {
                warn!(error = %e, size = ops.len(), "batch refused by the database; writing its changes one by one");
                let mut outcomes = Vec::with_capacity(ops.len());
                let mut inserted = Inserted::default();
                for (op, fence) in ops.iter().zip(fences) {
                    match self
                        .write_retrying(std::slice::from_ref(op), std::slice::from_ref(fence))
                        .await
                    {
                        Ok((mut single, added)) => {
                            outcomes.push(single.remove(0));
                            inserted += added;
                        }
                        Err(e) => {
                            self.refused(&e, op);
                            outcomes.push(Err(OpError::Refused(e.to_string())));
                        }
                    }
                }
                (outcomes, inserted)
            }
            Err(e) => {
                if let Some(op) = ops.first() {
                    self.refused(&e, op);
                }
                (
                    vec![Err(OpError::Refused(e.to_string()))],
                    Inserted::default(),
                )
            }
        }
    }

    /// Counts a refused change by cause, logging each cause at most once a minute.
    fn refused(&self, error: &DbErr, op: &WriteOp) {
        let cause = store::refusal_cause(error);
        let text = error.to_string();
        let unlogged = self.health.refused(cause, &text);
        self.events.emit(ChangeRefused {
            cause,
            error: &text,
            change: op,
            unlogged,
        });
    }

    /// One transaction, retried while the error is transient. `Err` only for permanent errors.
    async fn write_retrying(
        &self,
        ops: &[WriteOp],
        fences: &[Option<Fence>],
    ) -> Result<(Vec<Result<WriteOutcome, OpError>>, Inserted), DbErr> {
        let mut delay = self.settings.retry_initial;
        let cx = WriteContext {
            rules: &self.rules,
            mapping: &self.mapping,
            instance: self.instance.as_deref(),
            notify: &self.notify,
        };
        loop {
            let started = Instant::now();
            let turn = match &self.turn {
                Some(turn) => Some(turn.lock().await),
                None => None,
            };
            let applied = store::apply_batch(&self.db, ops, fences, &cx, Utc::now()).await;
            drop(turn);
            match applied {
                Ok(Committed {
                    outcomes,
                    rows_written,
                    inserted,
                    history,
                    woke,
                }) => {
                    if woke {
                        if let Some(wake) = &self.wake {
                            wake.notify_one();
                        }
                    }
                    let transitions: Vec<_> = ops
                        .iter()
                        .zip(&outcomes)
                        .filter(|(_, outcome)| {
                            outcome.as_ref().is_ok_and(WriteOutcome::transitioned)
                        })
                        .filter_map(|(op, _)| op.source())
                        .collect();
                    self.events.emit(BatchCommitted {
                        size: ops.len(),
                        rows_written,
                        elapsed: started.elapsed(),
                        transitions: &transitions,
                    });
                    for line in &history {
                        self.events.emit(HistoryWritten { line });
                        if let Some(run) = &line.ended {
                            self.events.emit(JobEnded { line, run });
                        }
                    }
                    self.health.heartbeat.beat();
                    if outcomes.iter().any(Result::is_ok) {
                        self.health.accepted();
                    }
                    if self.health.database_back() {
                        self.events.emit(DatabaseBack);
                    }
                    return Ok((outcomes, inserted));
                }
                Err(e) if store::is_conflict(&e) => {
                    // Another instance's transaction got in the way; the database is fine.
                    self.events.metrics().store_retries.inc();
                    debug!(error = %e, "transaction collided with another; running it again");
                    actix_rt::time::sleep(
                        self.settings.retry_initial.min(Duration::from_millis(50)),
                    )
                    .await;
                }
                Err(e) if store::is_transient(&e) => {
                    let reason = store::unwritable(&e).unwrap_or("the database is unreachable");
                    let (log, held_for) = self.health.database_away(reason);
                    self.events.emit(DatabaseUnreachable {
                        error: &e,
                        reason,
                        retry_in: delay,
                        held_for,
                        log,
                    });
                    actix_rt::time::sleep(delay).await;
                    delay = (delay * 2)
                        .min(self.settings.retry_max)
                        .max(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
