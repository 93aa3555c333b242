//! This instance's part when several share the database: the leases it holds, renewed (and
//! quickly while its share settles), given back at shutdown, and the fence each due job is
//! polled under.

use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tracing::warn;

use crate::events::{LeaseRenewalFailed, LeasesRenewed};
use crate::store::leases::{self, Held};
use crate::store_api::{DueJobs, DuePage, Fence};

use super::super::supervision::contained;
use super::JobStore;

/// This instance's part when several share the database: who it is and what it holds.
pub(super) struct Sharing {
    pub(super) instance: String,
    pub(super) started_at: DateTime<Utc>,
    pub(super) lease: Duration,
    pub(super) held: Held,
    pub(super) renewing: bool,
    pub(super) on_gain: Option<Recipient<crate::actors::scheduler::Tick>>,
    /// False once shutdown began: renewals keep what is held, claim nothing more.
    pub(super) claiming: bool,
    /// True once the leases were given back: no renewal runs again. One would record this
    /// instance as alive once more, and the others would leave it a share it never polls.
    pub(super) released: bool,
    /// Told when the renewal in flight has ended: the release waits for it.
    pub(super) renewal_ended: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Until when renewals come quickly while the share is unsettled (this instance holds
    /// less than its fair share, or is handing buckets over): after a start, and after the
    /// number of live instances changed. Fencing keeps quick handovers safe.
    pub(super) catch_up_until: Instant,
    pub(super) last_live: usize,
}

impl Sharing {
    /// The pause between renewals while the share settles.
    pub(super) fn catch_up(&self) -> Duration {
        (self.lease / 6).min(Duration::from_secs(1))
    }
}

/// Shutdown began: keep renewing what is held until the last write, claim nothing new.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopClaiming;

/// Who to tell when this instance gains buckets: their jobs are polled in a cycle started
/// then, not at the next tick (what a dead instance left is taken over sooner).
#[derive(Message)]
#[rtype(result = "()")]
pub struct OnBucketsGained(pub Recipient<crate::actors::scheduler::Tick>);

/// Give back every lease this instance holds (at shutdown, after the last write).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReleaseLeases;

impl JobStore {
    /// Whether the once-per-cluster work (timeout sweep, picking up application rows) is
    /// this instance's to do now.
    pub(super) fn leads(&self, now: DateTime<Utc>) -> bool {
        self.sharing.as_ref().is_none_or(|s| s.held.leads(now))
    }

    pub(super) fn renew(&mut self, ctx: &mut Context<Self>) {
        let Some(sharing) = self.sharing.as_mut() else {
            return;
        };
        if sharing.renewing || sharing.released {
            return;
        }
        sharing.renewing = true;
        let db = self.db.clone();
        let me = sharing.instance.clone();
        let started_at = sharing.started_at;
        let lease = sharing.lease;
        let retiring = sharing.held.retiring.clone();
        let claim = sharing.claiming;
        let renewal = async move {
            leases::renew(&db, &me, started_at, Utc::now(), lease, &retiring, claim).await
        };
        ctx.spawn(contained(renewal).into_actor(self).map(|answer, act, ctx| {
            let Some(sharing) = act.sharing.as_mut() else {
                return;
            };
            sharing.renewing = false;
            for waiter in sharing.renewal_ended.drain(..) {
                let _ = waiter.send(());
            }
            if sharing.released {
                // Ended after the leases were given back: what it held is no longer ours.
                return;
            }
            match answer {
                Ok(Ok(held)) => {
                    let gained = held
                        .buckets
                        .keys()
                        .filter(|b| !sharing.held.buckets.contains_key(b))
                        .count();
                    let lost = sharing
                        .held
                        .buckets
                        .keys()
                        .filter(|b| !held.buckets.contains_key(b))
                        .count();
                    act.events.emit(LeasesRenewed {
                        instance: &sharing.instance,
                        buckets: held.buckets.len(),
                        gained,
                        lost,
                        leader: held.leader.is_some(),
                        was_leader: sharing.held.leader.is_some(),
                        live: held.live_instances,
                    });
                    sharing.held = held;
                    if gained > 0 {
                        if let Some(tick) = &sharing.on_gain {
                            tick.do_send(crate::actors::scheduler::Tick);
                        }
                    }
                    let live = sharing.held.live_instances;
                    if live != sharing.last_live || !sharing.held.retiring.is_empty() {
                        sharing.last_live = live;
                        sharing.catch_up_until =
                            sharing.catch_up_until.max(Instant::now() + sharing.lease);
                    }
                    let fair = usize::from(leases::BUCKETS).div_ceil(live.max(1));
                    let unsettled = !sharing.held.retiring.is_empty()
                        || (sharing.claiming && sharing.held.buckets.len() < fair);
                    if unsettled && Instant::now() < sharing.catch_up_until {
                        ctx.run_later(sharing.catch_up(), |act, ctx| act.renew(ctx));
                    }
                }
                Ok(Err(e)) => act.events.emit(LeaseRenewalFailed { error: &e }),
                Err(panicked) => act.events.emit(LeaseRenewalFailed {
                    error: &std::io::Error::other(panicked.message().to_owned()),
                }),
            }
        }));
    }
}

impl Handler<StopClaiming> for JobStore {
    type Result = ();

    fn handle(&mut self, _: StopClaiming, _: &mut Self::Context) {
        if let Some(sharing) = self.sharing.as_mut() {
            sharing.claiming = false;
        }
    }
}

impl Handler<OnBucketsGained> for JobStore {
    type Result = ();

    fn handle(&mut self, msg: OnBucketsGained, _: &mut Self::Context) {
        if let Some(sharing) = self.sharing.as_mut() {
            sharing.on_gain = Some(msg.0);
        }
    }
}

impl Handler<ReleaseLeases> for JobStore {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: ReleaseLeases, _: &mut Self::Context) -> Self::Result {
        let Some(sharing) = self.sharing.as_mut() else {
            return Box::pin(async {});
        };
        sharing.held = Held::default();
        sharing.released = true;
        // A renewal in flight commits before the release starts, never after it: committed
        // after, it would record this instance as alive again.
        let renewal = sharing.renewing.then(|| {
            let (ended, wait) = tokio::sync::oneshot::channel();
            sharing.renewal_ended.push(ended);
            wait
        });
        let db = self.db.clone();
        let me = sharing.instance.clone();
        Box::pin(async move {
            if let Some(renewal) = renewal {
                let _ = renewal.await;
            }
            match leases::release_all(&db, &me).await {
                Ok(()) => {
                    tracing::info!(instance = %me, "leases given back; the other instances take over now")
                }
                Err(e) => {
                    warn!(instance = %me, error = %e, "could not give leases back; they pass on when they run out")
                }
            }
        })
    }
}

/// The part of a page of due jobs that falls in this instance's buckets, each with the lease
/// it is polled under; all of it when the instance does not share the database.
pub(super) fn own_share(
    page: DuePage,
    request: &DueJobs,
    share: Option<&(Held, Duration)>,
) -> DuePage {
    let Some((held, margin)) = share else {
        return page;
    };
    let jobs = in_share(page.jobs, held, *margin, request.now, |job| {
        (&job.execution_id, &mut job.fence)
    });
    DuePage { jobs, ..page }
}

/// The items of jobs in this instance's buckets whose lease lasts `margin` past `now`, each
/// given the fence it is to be written under: one instance works on a job at a time.
pub(super) fn in_share<T>(
    items: Vec<T>,
    held: &Held,
    margin: Duration,
    now: DateTime<Utc>,
    job: impl Fn(&mut T) -> (&String, &mut Option<Fence>),
) -> Vec<T> {
    let until = now + chrono::Duration::from_std(margin).unwrap_or_default();
    items
        .into_iter()
        .filter_map(|mut item| {
            let (id, fence) = job(&mut item);
            let bucket = leases::bucket_of(id);
            let lease = held.bucket(bucket, until)?;
            *fence = Some(Fence {
                bucket,
                token: lease.token,
            });
            Some(item)
        })
        .collect()
}
