//! The leader's periodic work on the whole database: the timeout sweep (with early warnings)
//! and retention's batched deletes.

use std::time::Instant;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::config::EventKind;
use crate::domain::Applied;
use crate::events::{RowsPruned, TimeoutsSwept};
use crate::store;
use crate::store::retention::{self, Aged, Cutoffs};
use crate::store_api::{StoreError, SweepTimeouts, WriteOp, WriteOutcome};

use super::super::supervision::contained;
use super::JobStore;

/// Delete what `[retention]` no longer keeps (only on the leader), or with `dry_run` only count
/// it; answers each `[retention]` key with its rows.
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<(&'static str, u64)>, StoreError>")]
pub struct Prune {
    pub now: DateTime<Utc>,
    pub dry_run: bool,
}

/// Most jobs one sweep considers; the next sweep takes the rest.
const SWEEP_PAGE: u64 = 10_000;

impl Handler<SweepTimeouts> for JobStore {
    type Result = ResponseActFuture<Self, Result<usize, StoreError>>;

    fn handle(&mut self, msg: SweepTimeouts, _: &mut Self::Context) -> Self::Result {
        // Leadership is a matter of the clock now; `msg.now` is the instant the rules judge.
        if !self.leads(Utc::now()) {
            // Another instance leads and sweeps.
            return Box::pin(fut::ready(Ok(0)));
        }
        let db = self.db.clone();
        let policy = self.rules.timeouts;
        let stuck_half = policy.stuck_timeout / 2;
        let (factor, min_runs) = self.running_long;
        let notify = self.notify.clone();
        let now = msg.now;
        let find = async move {
            let mut ops: Vec<WriteOp> =
                store::read::timeout_candidates(&db, now, &policy, SWEEP_PAGE)
                    .await
                    .map_err(|e| StoreError::Read(e.to_string()))?
                    .into_iter()
                    .map(|execution_id| WriteOp::TimeOut { execution_id, now })
                    .collect();
            // Warnings come after the timeouts: a job failed by this sweep is not warned about.
            if notify.wants(EventKind::StuckSoon) {
                ops.extend(
                    store::warnings::stuck_soon(&db, now, stuck_half)
                        .await
                        .map_err(|e| StoreError::Read(e.to_string()))?,
                );
            }
            if notify.wants(EventKind::RunningLong) {
                ops.extend(
                    store::warnings::running_long(&db, now, factor, min_runs)
                        .await
                        .map_err(|e| StoreError::Read(e.to_string()))?,
                );
            }
            Ok::<_, StoreError>(ops)
        };
        Box::pin(find.into_actor(self).then(move |candidates, act, ctx| {
            let (ops, read_error) = match candidates {
                Ok(ops) => (ops, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            let answers: Vec<_> = ops.into_iter().map(|op| act.enqueue(op, ctx)).collect();
            let events = act.events.clone();
            async move {
                if let Some(e) = read_error {
                    return Err(e);
                }
                let mut failed = 0;
                for answer in answers {
                    if let Ok(Ok(WriteOutcome::Execution(Applied::Transitioned { .. }))) =
                        answer.await
                    {
                        failed += 1;
                    }
                }
                events.emit(TimeoutsSwept { failed });
                Ok(failed)
            }
            .into_actor(act)
        }))
    }
}

impl Handler<Prune> for JobStore {
    type Result = ResponseActFuture<Self, Result<Vec<(&'static str, u64)>, StoreError>>;

    fn handle(&mut self, msg: Prune, _: &mut Self::Context) -> Self::Result {
        let settings = self.retention.clone().unwrap_or_default();
        if !self.leads(Utc::now()) || (self.pruning && !msg.dry_run) {
            return Box::pin(fut::ready(Ok(Vec::new())));
        }
        let own_jobs = self.mapping.executions.is_none() && self.mapping.queue.is_none();
        let cutoffs = Cutoffs::at(&settings, msg.now, own_jobs);
        let db = self.db.clone();
        let events = self.events.clone();
        let turn = self.turn.clone();
        let dry_run = msg.dry_run;
        self.pruning |= !dry_run;
        let run = async move {
            let mut done = Vec::new();
            for aged in Aged::ALL {
                let Some(cutoff) = cutoffs.of(aged) else {
                    continue;
                };
                if dry_run {
                    let rows = retention::count(&db, aged, cutoff)
                        .await
                        .map_err(|e| StoreError::Read(e.to_string()))?;
                    done.push((aged.name(), rows));
                    continue;
                }
                let started = Instant::now();
                let (mut rows, mut after) = (0, 0);
                let stopped = loop {
                    let mine = match &turn {
                        Some(turn) => Some(turn.lock().await),
                        None => None,
                    };
                    let step =
                        retention::delete_batch(&db, aged, cutoff, after, settings.batch as u64)
                            .await;
                    drop(mine);
                    match step {
                        Ok(step) => {
                            rows += step.deleted;
                            if step.done {
                                break None;
                            }
                            after = step.after;
                            actix_rt::time::sleep(settings.pause).await;
                        }
                        Err(e) => break Some(e),
                    }
                };
                events.emit(RowsPruned {
                    table: aged.name(),
                    rows,
                    elapsed: started.elapsed(),
                    error: stopped.as_ref().map(|e| e as &dyn std::error::Error),
                });
                done.push((aged.name(), rows));
                if let Some(e) = stopped {
                    return Err(StoreError::Read(e.to_string()));
                }
            }
            Ok(done)
        };
        Box::pin(contained(run).into_actor(self).map(move |answer, act, _| {
            if !dry_run {
                act.pruning = false;
            }
            answer.unwrap_or_else(|panicked| Err(StoreError::Read(panicked.message().to_owned())))
        }))
    }
}
