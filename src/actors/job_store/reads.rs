//! The reads other actors ask the store for: jobs due for a poll (after picking up what the
//! application inserted), actions due for the submitter, notifications due for delivery.

use actix::prelude::*;
use chrono::Utc;

use crate::store;
use crate::store::mapped;
use crate::store_api::{
    DueAction, DueActions, DueJobs, DuePage, OutboxRow, PendingNotifications, StoreError, WriteOp,
};

use super::sharing::{in_share, own_share};
use super::JobStore;

/// Most new application rows one cycle picks up; the next cycle takes the rest.
const ADOPT_PAGE: u64 = 50_000;

impl Handler<DueJobs> for JobStore {
    type Result = ResponseActFuture<Self, Result<DuePage, StoreError>>;

    fn handle(&mut self, msg: DueJobs, _: &mut Self::Context) -> Self::Result {
        let db = self.db.clone();
        let mapping = self.mapping.clone();
        // A bucket whose lease ends within one renewal period is not started on: its polls
        // should be over before another instance can claim it.
        let share = self.sharing.as_ref().map(|s| (s.held.clone(), s.lease / 3));
        // A cycle's first page first picks up the rows the application inserted since the
        // last cycle, so they are due in this very cycle (by the leader alone).
        let adopt = msg.after.is_none()
            && (mapping.executions.is_some() || mapping.queue.is_some())
            && self.leads(msg.now);
        let find_new = {
            let db = db.clone();
            let mapping = mapping.clone();
            async move {
                let mut ops: Vec<WriteOp> = Vec::new();
                if !adopt {
                    return Ok::<_, StoreError>(ops);
                }
                if let Some(map) = &mapping.executions {
                    let ids = mapped::adoptable_executions(&db, map, ADOPT_PAGE)
                        .await
                        .map_err(|e| StoreError::Read(e.to_string()))?;
                    ops.extend(
                        ids.into_iter()
                            .map(|execution_id| WriteOp::Adopt { execution_id }),
                    );
                }
                if let Some(map) = &mapping.queue {
                    let ids = mapped::queue_drift(&db, map, ADOPT_PAGE)
                        .await
                        .map_err(|e| StoreError::Read(e.to_string()))?;
                    ops.extend(ids.into_iter().map(|job_id| WriteOp::SyncQueue { job_id }));
                }
                Ok(ops)
            }
        };
        Box::pin(find_new.into_actor(self).then(move |found, act, ctx| {
            let answers: Vec<_> = match &found {
                Ok(ops) => ops.iter().map(|op| act.enqueue(op.clone(), ctx)).collect(),
                Err(_) => Vec::new(),
            };
            async move {
                found?;
                for answer in answers {
                    let _ = answer.await;
                }
                let page = match &mapping.executions {
                    Some(map) => mapped::due_executions(&db, map, &msg).await,
                    None => store::read::due_executions(&db, &msg)
                        .await
                        .map(|jobs| DuePage {
                            last: jobs.last().map(|j| j.execution_id.clone()),
                            full: jobs.len() as u64 >= msg.limit,
                            jobs,
                        }),
                }
                .map_err(|e| StoreError::Read(e.to_string()))?;
                Ok(own_share(page, &msg, share.as_ref()))
            }
            .into_actor(act)
        }))
    }
}

impl Handler<DueActions> for JobStore {
    type Result = ResponseFuture<Result<Vec<DueAction>, StoreError>>;

    fn handle(&mut self, msg: DueActions, _: &mut Self::Context) -> Self::Result {
        let db = self.db.clone();
        let share = self.sharing.as_ref().map(|s| (s.held.clone(), s.lease / 3));
        let submits = self.mapping.executions.is_none();
        let capacity = self.rules.capacity.clone();
        Box::pin(async move {
            if !submits {
                // Submission needs jobwarden's own table (spec, attempts).
                return Ok(Vec::new());
            }
            let actions = store::actions_read::due_actions(&db, msg.now, msg.limit, &capacity)
                .await
                .map_err(|e| StoreError::Read(e.to_string()))?;
            let Some((held, margin)) = share else {
                return Ok(actions);
            };
            // Each job's actions are taken by the instance holding its bucket, and written
            // under that lease: one submitter per job, even across instances.
            Ok(in_share(actions, &held, margin, msg.now, |action| {
                (&action.execution_id, &mut action.fence)
            }))
        })
    }
}

impl Handler<PendingNotifications> for JobStore {
    type Result = ResponseFuture<Result<Vec<OutboxRow>, StoreError>>;

    fn handle(&mut self, msg: PendingNotifications, _: &mut Self::Context) -> Self::Result {
        // One instance delivers, as one sweeps: the leader.
        if !self.leads(Utc::now()) {
            return Box::pin(async { Ok(Vec::new()) });
        }
        let db = self.db.clone();
        Box::pin(async move {
            store::outbox::pending(&db, msg.per_channel)
                .await
                .map_err(|e| StoreError::Read(e.to_string()))
        })
    }
}
