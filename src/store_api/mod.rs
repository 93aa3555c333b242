//! What the store accepts: the changes it makes durable, the pages of due jobs it answers, and
//! one typed handle through which every other part talks to it. Nothing here touches the
//! database; `crate::actors::job_store` answers these messages.

mod changes;
mod messages;

use std::future::Future;

use actix::Recipient;

pub use changes::{
    Attempt, AttemptChange, AttemptResult, Candidate, NewDeadLetter, OpError, OrderingAsked, Scope,
    Source, TrackRequest, Warning, WriteOp, WriteOutcome,
};
pub use messages::{
    ActionKind, Drain, DueAction, DueActions, DueExecution, DueJobs, DuePage, Fence, FencedWrite,
    GetStats, OutboxRow, PendingNotifications, ResendFailed, StoreError, StoreStats, SweepTimeouts,
    Write,
};

/// The store, as its callers see it. Cheap to clone. Each request is handed to the store's
/// mailbox when the method is called, not when its future is first polled, so requests made
/// one after the other arrive in that order.
#[derive(Clone)]
pub struct StoreHandle {
    write: Recipient<Write>,
    fenced: Recipient<FencedWrite>,
    due: Recipient<DueJobs>,
    drain: Recipient<Drain>,
    stats: Recipient<GetStats>,
    actions: Option<Recipient<DueActions>>,
    resend: Option<Recipient<ResendFailed>>,
}

impl StoreHandle {
    pub fn new(
        write: Recipient<Write>,
        fenced: Recipient<FencedWrite>,
        due: Recipient<DueJobs>,
        drain: Recipient<Drain>,
        stats: Recipient<GetStats>,
    ) -> Self {
        StoreHandle {
            write,
            fenced,
            due,
            drain,
            stats,
            actions: None,
            resend: None,
        }
    }

    /// Adds putting failed notifications back in the outbox.
    pub fn with_resend(mut self, resend: Recipient<ResendFailed>) -> Self {
        self.resend = Some(resend);
        self
    }

    /// Puts failed notifications back in the outbox; how many.
    pub fn resend_failed(
        &self,
        request: ResendFailed,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        let request = self.resend.as_ref().map(|r| r.send(request));
        async move {
            match request {
                Some(request) => request.await.map_err(StoreError::from)?,
                None => Err(StoreError::Gone(
                    "this store does not resend notifications".into(),
                )),
            }
        }
    }

    /// Adds the Submitter's question (what is due to submit, reconcile or kill).
    pub fn with_actions(mut self, actions: Recipient<DueActions>) -> Self {
        self.actions = Some(actions);
        self
    }

    /// The actions due now, of this instance's share.
    pub fn due_actions(
        &self,
        request: DueActions,
    ) -> impl Future<Output = Result<Vec<DueAction>, StoreError>> + Send + 'static {
        let request = self.actions.as_ref().map(|a| a.send(request));
        async move {
            match request {
                Some(request) => request.await.map_err(StoreError::from)?,
                None => Ok(Vec::new()),
            }
        }
    }

    /// Makes `op` durable; resolves with what it did once it is.
    pub fn write(
        &self,
        op: WriteOp,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send + 'static {
        let request = self.write.send(Write(op));
        async move { request.await.map_err(StoreError::from)? }
    }

    /// Makes `op` durable if `fence` (the lease a poll was dispatched under) still holds;
    /// without a fence, like [`StoreHandle::write`].
    pub fn write_fenced(
        &self,
        op: WriteOp,
        fence: Option<Fence>,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send + 'static {
        let request = match fence {
            Some(fence) => {
                futures::future::Either::Left(self.fenced.send(FencedWrite { op, fence }))
            }
            None => futures::future::Either::Right(self.write.send(Write(op))),
        };
        async move { request.await.map_err(StoreError::from)? }
    }

    /// One page of due executions.
    pub fn due(
        &self,
        page: DueJobs,
    ) -> impl Future<Output = Result<DuePage, StoreError>> + Send + 'static {
        let request = self.due.send(page);
        async move { request.await.map_err(StoreError::from)? }
    }

    /// Resolves once everything accepted so far is durable.
    pub fn drain(&self) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let request = self.drain.send(Drain);
        async move { request.await.map_err(StoreError::from) }
    }

    pub fn stats(&self) -> impl Future<Output = Result<StoreStats, StoreError>> + Send + 'static {
        let request = self.stats.send(GetStats);
        async move { request.await.map_err(StoreError::from) }
    }

    /// Whether the store's mailbox still has a live actor behind it.
    pub fn connected(&self) -> bool {
        self.write.connected()
    }
}
