//! Notifier: delivers what the outbox holds, channel by channel. Each channel has at most one
//! delivery in flight (so its messages keep their order, and a receiver that hangs delays only
//! its own channel); a failure is retried with backoff until `give_up_after`; a burst of
//! failures goes out as one grouped message. Every result is written through the JobStore.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tracing::warn;

use crate::config::{EventKind, NotificationSettings};
use crate::events::{Events, NotificationAttempted};
use crate::notify::channels::{deliver, Delivered, Outgoing};
use crate::notify::{new_message_id, Notification};
use crate::store_api::{
    Attempt, AttemptResult, OutboxRow, PendingNotifications, StoreHandle, WriteOp,
};

/// Most outbox rows one look reads; the next look takes the rest.
const LOOK_LIMIT: u64 = 5_000;
/// The longest wait between two attempts of one message.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub struct Notifier {
    settings: NotificationSettings,
    pending: Recipient<PendingNotifications>,
    store: StoreHandle,
    client: reqwest::Client,
    /// Channels with a delivery in flight.
    busy: HashSet<String>,
    last_sent: HashMap<String, Instant>,
    looking: bool,
    events: Events,
}

/// Look at the outbox now (sent by the timer; tests send it directly).
#[derive(Message, Debug, Default)]
#[rtype(result = "()")]
pub struct LookAtOutbox;

/// One request planned for a channel.
#[derive(Debug)]
pub struct Planned {
    pub ids: Vec<i64>,
    pub group_id: Option<String>,
    pub outgoing: Outgoing,
    /// The oldest message in it, for giving up.
    pub created_at: DateTime<Utc>,
    pub attempts: i32,
}

impl Notifier {
    pub fn new(
        settings: NotificationSettings,
        pending: Recipient<PendingNotifications>,
        store: StoreHandle,
        events: Events,
    ) -> Self {
        Notifier {
            settings,
            pending,
            store,
            client: reqwest::Client::builder()
                .user_agent(concat!("jobwarden/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
            busy: HashSet::new(),
            last_sent: HashMap::new(),
            looking: false,
            events,
        }
    }

    fn look(&mut self, ctx: &mut Context<Self>) {
        if self.looking {
            return;
        }
        self.looking = true;
        let request = self
            .pending
            .send(PendingNotifications { limit: LOOK_LIMIT });
        ctx.spawn(request.into_actor(self).map(|answer, act, ctx| {
            act.looking = false;
            let rows = match answer {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) => {
                    warn!(actor = "notifier", error = %e, "could not read the outbox; next look retries");
                    return;
                }
                Err(_) => return,
            };
            let mut by_channel: BTreeMap<String, Vec<OutboxRow>> = BTreeMap::new();
            for row in rows {
                by_channel.entry(row.channel.clone()).or_default().push(row);
            }
            let now = Utc::now();
            for (channel, rows) in by_channel {
                if act.busy.contains(&channel) {
                    continue;
                }
                let Some(settings) = act.settings.channels.get(&channel).cloned() else {
                    act.settle(
                        &channel,
                        rows.iter().map(|r| r.id).collect(),
                        None,
                        AttemptResult::GaveUp {
                            error: format!("channel {channel:?} is no longer configured"),
                        },
                        "gave_up",
                        rows.first().map_or("-", |r| r.message_id.as_str()),
                        ctx,
                    );
                    continue;
                };
                if act
                    .last_sent
                    .get(&channel)
                    .is_some_and(|at| at.elapsed() < settings.min_interval)
                {
                    continue;
                }
                let Some(planned) = plan(&rows, now, &act.settings) else {
                    continue;
                };
                act.send(channel, settings, planned, ctx);
            }
        }));
    }

    fn send(
        &mut self,
        channel: String,
        settings: crate::config::ChannelSettings,
        planned: Planned,
        ctx: &mut Context<Self>,
    ) {
        self.busy.insert(channel.clone());
        self.last_sent.insert(channel.clone(), Instant::now());
        let client = self.client.clone();
        let give_up_after = self.settings.give_up_after;
        let delivery = async move {
            let result = deliver(&client, &settings, &planned.outgoing, Utc::now()).await;
            (planned, result)
        };
        ctx.spawn(
            delivery
                .into_actor(self)
                .map(move |(planned, result), act, ctx| {
                    let now = Utc::now();
                    let expired = now - planned.created_at
                        >= chrono::Duration::from_std(give_up_after)
                            .unwrap_or(chrono::Duration::MAX);
                    let (result, outcome) = match result {
                        Delivered::Yes => (AttemptResult::Delivered, "delivered"),
                        Delivered::Refused(error) => (AttemptResult::Refused { error }, "refused"),
                        Delivered::Later(error) if expired => (
                            AttemptResult::GaveUp {
                                error: format!(
                                    "undelivered after {}; last error: {error}",
                                    humantime::format_duration(give_up_after)
                                ),
                            },
                            "gave_up",
                        ),
                        Delivered::Later(error) => (
                            AttemptResult::Retry {
                                next_at: now + backoff(planned.attempts),
                                error,
                            },
                            "retrying",
                        ),
                    };
                    let id = planned.outgoing.id().to_owned();
                    act.settle(
                        &channel,
                        planned.ids,
                        planned.group_id,
                        result,
                        outcome,
                        &id,
                        ctx,
                    );
                }),
        );
    }

    /// Records an attempt; the channel is free again once the record is durable, so its next
    /// look sees what this one did.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &mut self,
        channel: &str,
        ids: Vec<i64>,
        group_id: Option<String>,
        result: AttemptResult,
        outcome: &'static str,
        message_id: &str,
        ctx: &mut Context<Self>,
    ) {
        let error = match &result {
            AttemptResult::Delivered => None,
            AttemptResult::Retry { error, .. }
            | AttemptResult::Refused { error }
            | AttemptResult::GaveUp { error } => Some(error.clone()),
        };
        self.events.emit(NotificationAttempted {
            channel,
            message_id,
            messages: ids.len(),
            outcome,
            error: error.as_deref(),
        });
        self.busy.insert(channel.to_owned());
        let channel = channel.to_owned();
        let write = self.store.write(WriteOp::NotificationAttempt(Attempt {
            ids,
            group_id,
            result,
            at: Utc::now(),
        }));
        ctx.spawn(write.into_actor(self).map(move |written, act, _| {
            if let Err(e) = written {
                // The message stays pending and is sent again: at least once.
                warn!(actor = "notifier", channel = %channel, error = %e, "could not record a delivery attempt");
            }
            act.busy.remove(&channel);
        }));
    }
}

/// What to send next to one channel, given its pending rows in outbox order; `None` while it
/// waits (backing off, or a failure waiting for the rest of its storm).
pub fn plan(rows: &[OutboxRow], now: DateTime<Utc>, s: &NotificationSettings) -> Option<Planned> {
    let first = rows.first()?;
    if first.next_attempt_at > now {
        return None;
    }
    let parse = |row: &OutboxRow| serde_json::from_str::<Notification>(&row.payload).ok();
    if let Some(group) = &first.group_id {
        // A storm tried before goes out again exactly as it was.
        let members: Vec<&OutboxRow> = rows
            .iter()
            .filter(|r| r.group_id.as_ref() == Some(group))
            .collect();
        return Some(storm(group.clone(), &members, s.storm_list, &parse));
    }
    let failure = |row: &OutboxRow| {
        serde_json::from_value::<EventKind>(serde_json::Value::String(row.event.clone()))
            .is_ok_and(EventKind::is_failure)
    };
    if failure(first) {
        let gathering = chrono::Duration::from_std(s.group_wait).unwrap_or_default();
        if now - first.created_at < gathering {
            return None;
        }
        let failures: Vec<&OutboxRow> = rows
            .iter()
            .filter(|r| r.group_id.is_none() && failure(r) && r.next_attempt_at <= now)
            .collect();
        if failures.len() >= s.storm_threshold {
            return Some(storm(new_message_id(), &failures, s.storm_list, &parse));
        }
    }
    Some(Planned {
        ids: vec![first.id],
        group_id: None,
        outgoing: Outgoing::One(Box::new(parse(first)?)),
        created_at: first.created_at,
        attempts: first.attempts,
    })
}

fn storm(
    id: String,
    members: &[&OutboxRow],
    list: usize,
    parse: &dyn Fn(&OutboxRow) -> Option<Notification>,
) -> Planned {
    Planned {
        ids: members.iter().map(|r| r.id).collect(),
        outgoing: Outgoing::Storm {
            id: id.clone(),
            total: members.len(),
            listed: members.iter().take(list).filter_map(|r| parse(r)).collect(),
        },
        group_id: Some(id),
        created_at: members
            .iter()
            .map(|r| r.created_at)
            .min()
            .unwrap_or_else(Utc::now),
        attempts: members.iter().map(|r| r.attempts).max().unwrap_or(0),
    }
}

/// 1 s, doubling with each attempt, at most five minutes.
fn backoff(attempts: i32) -> chrono::Duration {
    let exponent = attempts.clamp(0, 16) as u32;
    let wait = Duration::from_secs(1)
        .saturating_mul(1u32 << exponent)
        .min(MAX_BACKOFF);
    chrono::Duration::from_std(wait).unwrap_or_default()
}

impl Actor for Notifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.settings.check_every, |act, ctx| act.look(ctx));
    }
}

impl Handler<LookAtOutbox> for Notifier {
    type Result = ();

    fn handle(&mut self, _: LookAtOutbox, ctx: &mut Self::Context) {
        self.look(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::JobRef;

    fn row(id: i64, event: &str, created_secs_ago: i64, now: DateTime<Utc>) -> OutboxRow {
        let n = Notification {
            id: format!("m{id}"),
            event: event.into(),
            job: JobRef {
                kind: Some("spark".into()),
                id: Some(format!("e{id}")),
                name: None,
                cluster: None,
                submission_id: None,
            },
            from_status: None,
            to_status: None,
            reason: None,
            source: "spark_poll".into(),
            at: now,
        };
        OutboxRow {
            id,
            message_id: n.id.clone(),
            channel: "ops".into(),
            event: event.into(),
            job_kind: Some("spark".into()),
            job_id: n.job.id.clone(),
            payload: serde_json::to_string(&n).unwrap(),
            state: "pending".into(),
            attempts: 0,
            next_attempt_at: now - chrono::Duration::seconds(created_secs_ago),
            last_error: None,
            created_at: now - chrono::Duration::seconds(created_secs_ago),
            finished_at: None,
            group_id: None,
            dedup_key: None,
        }
    }

    fn settings() -> NotificationSettings {
        NotificationSettings {
            group_wait: Duration::from_secs(5),
            storm_threshold: 3,
            storm_list: 2,
            ..NotificationSettings::default()
        }
    }

    #[test]
    fn a_success_goes_out_at_once_on_its_own() {
        let now = Utc::now();
        let planned = plan(&[row(1, "succeeded", 0, now)], now, &settings()).unwrap();
        assert_eq!(planned.ids, [1]);
        assert!(matches!(planned.outgoing, Outgoing::One(ref n) if n.id == "m1"));
    }

    #[test]
    fn a_failure_waits_for_its_storm_to_gather_then_goes_alone_if_there_is_none() {
        let now = Utc::now();
        assert!(plan(&[row(1, "failed", 1, now)], now, &settings()).is_none());
        let planned = plan(&[row(1, "failed", 6, now)], now, &settings()).unwrap();
        assert_eq!(planned.ids, [1]);
        assert!(planned.group_id.is_none());
    }

    #[test]
    fn many_failures_go_out_as_one_message_with_the_count_and_the_first_few() {
        let now = Utc::now();
        let rows: Vec<_> = (1..=4)
            .map(|i| row(i, if i == 3 { "timed_out" } else { "failed" }, 6, now))
            .chain([row(5, "succeeded", 6, now)])
            .collect();
        let planned = plan(&rows, now, &settings()).unwrap();
        assert_eq!(planned.ids, [1, 2, 3, 4]);
        let Outgoing::Storm { total, listed, id } = &planned.outgoing else {
            panic!("not grouped: {planned:?}");
        };
        assert_eq!((*total, listed.len()), (4, 2));
        assert_eq!(planned.group_id.as_ref(), Some(id));
    }

    #[test]
    fn a_storm_tried_before_is_sent_again_under_the_same_id() {
        let now = Utc::now();
        let mut rows: Vec<_> = (1..=3).map(|i| row(i, "failed", 60, now)).collect();
        for r in &mut rows[..2] {
            r.group_id = Some("g1".into());
        }
        let planned = plan(&rows, now, &settings()).unwrap();
        assert_eq!(planned.ids, [1, 2]);
        assert_eq!(planned.outgoing.id(), "g1");
    }

    #[test]
    fn a_channel_backing_off_sends_nothing_until_its_time() {
        let now = Utc::now();
        let mut r = row(1, "succeeded", 10, now);
        r.next_attempt_at = now + chrono::Duration::seconds(3);
        assert!(plan(&[r], now, &settings()).is_none());
    }

    #[test]
    fn retries_back_off_doubling_up_to_five_minutes() {
        assert_eq!(backoff(0).num_seconds(), 1);
        assert_eq!(backoff(3).num_seconds(), 8);
        assert_eq!(backoff(30).num_seconds(), 300);
    }
}
