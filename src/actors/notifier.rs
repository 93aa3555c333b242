//! Notifier: delivers what the outbox holds, channel by channel. A channel has up to its
//! `in_flight` deliveries under way, never two about the same job, so each job's messages keep
//! their order (and a receiver that hangs delays only its own channel); a failure is retried
//! with backoff until `give_up_after`, and the channel waits for that retry before it sends
//! anything newer; a burst of failures goes out as one grouped message. Every result is
//! written through the JobStore.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use tracing::warn;

use crate::config::{EventKind, NotificationSettings};
use crate::events::{Events, NotificationAttempted};
use crate::notify::channels::{deliver, Delivered, Outgoing};
use crate::notify::standing::ChannelStanding;
use crate::notify::{new_message_id, Notification};
use crate::store_api::{
    Attempt, AttemptResult, OutboxRow, PendingNotifications, StoreError, StoreHandle, WriteOp,
    WriteOutcome,
};

/// Most outbox rows of one channel one look reads; the next look takes the rest. (A storm
/// larger than this goes out as several grouped messages.)
const LOOK_LIMIT: u64 = 2_000;
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
    /// When each channel's last run was recorded: a look that began before that read rows the
    /// run has since changed, and must not send them again.
    last_done: HashMap<String, Instant>,
    looking: bool,
    standing: Arc<ChannelStanding>,
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
    /// Messages with the same key go out one after the other, in outbox order: the job a
    /// message is about (`""` for messages about no job). `None` for a grouped message, which
    /// is about many jobs and so goes out with nothing else under way.
    pub order_key: Option<String>,
}

impl Notifier {
    pub fn new(
        settings: NotificationSettings,
        pending: Recipient<PendingNotifications>,
        store: StoreHandle,
        events: Events,
    ) -> Self {
        let standing = Arc::new(ChannelStanding::new(
            settings.failing_after,
            settings.channels.keys().cloned(),
        ));
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
            last_done: HashMap::new(),
            looking: false,
            standing,
            events,
        }
    }

    /// How each channel has fared lately, for readiness and `/metrics`.
    pub fn standing(&self) -> Arc<ChannelStanding> {
        self.standing.clone()
    }

    fn look(&mut self, ctx: &mut Context<Self>) {
        if self.looking {
            return;
        }
        self.looking = true;
        let began = Instant::now();
        let request = self.pending.send(PendingNotifications {
            per_channel: LOOK_LIMIT,
        });
        ctx.spawn(request.into_actor(self).map(move |answer, act, ctx| {
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
                let stale = act.last_done.get(&channel).is_some_and(|done| *done >= began);
                if act.busy.contains(&channel) || stale {
                    continue;
                }
                let Some(settings) = act.settings.channels.get(&channel).cloned() else {
                    let planned = Planned {
                        ids: rows.iter().map(|r| r.id).collect(),
                        group_id: None,
                        outgoing: Outgoing::Storm {
                            id: rows.first().map_or_else(String::new, |r| r.message_id.clone()),
                            total: rows.len(),
                            listed: Vec::new(),
                        },
                        created_at: now,
                        attempts: 0,
                        order_key: None,
                    };
                    let error = format!("channel {channel:?} is no longer configured");
                    let write = act.record(&channel, &planned, AttemptResult::GaveUp { error }, "gave_up");
                    act.busy.insert(channel.clone());
                    ctx.spawn(write.into_actor(act).map(move |_, act, _| {
                        act.last_done.insert(channel.clone(), Instant::now());
                        act.busy.remove(&channel);
                    }));
                    continue;
                };
                if act
                    .last_sent
                    .get(&channel)
                    .is_some_and(|at| at.elapsed() < settings.min_interval)
                {
                    continue;
                }
                let run = plan_run(&rows, now, &act.settings, &settings);
                if !run.is_empty() {
                    act.send(channel, settings, run, ctx);
                }
            }
        }));
    }

    /// Sends a run of messages to one channel, up to its `in_flight` at a time, each attempt
    /// recorded as it ends. A job's messages go out one after the other, and its lane stops at
    /// the first that must be tried again, so the job keeps its order; the run stops after the
    /// wave in which any lane stopped, so nothing overtakes a message waiting for its retry.
    fn send(
        &mut self,
        channel: String,
        settings: crate::config::ChannelSettings,
        run: Vec<Planned>,
        ctx: &mut Context<Self>,
    ) {
        self.busy.insert(channel.clone());
        self.last_sent.insert(channel.clone(), Instant::now());
        let width = settings.in_flight.max(1);
        let courier = Courier {
            client: self.client.clone(),
            give_up_after: chrono::Duration::from_std(self.settings.give_up_after)
                .unwrap_or(chrono::Duration::MAX),
            human_give_up: humantime::format_duration(self.settings.give_up_after).to_string(),
            store: self.store.clone(),
            events: self.events.clone(),
            standing: self.standing.clone(),
            channel: channel.clone(),
            settings,
        };
        let delivery = async move {
            let mut writes = Vec::with_capacity(run.len());
            for wave in waves(run, width) {
                let lanes = join_all(wave.into_iter().map(|lane| courier.lane(lane))).await;
                let mut stopped = false;
                for (lane_writes, lane_stopped) in lanes {
                    writes.extend(lane_writes);
                    stopped |= lane_stopped;
                }
                if stopped {
                    break;
                }
            }
            // The channel is free once every attempt is durable, so the next look sees them.
            for write in join_all(writes).await {
                if let Err(e) = write {
                    // Still pending, so sent again: at least once.
                    warn!(actor = "notifier", channel = %courier.channel, error = %e, "could not record a delivery attempt");
                }
            }
        };
        ctx.spawn(delivery.into_actor(self).map(move |(), act, ctx| {
            act.last_done.insert(channel.clone(), Instant::now());
            act.busy.remove(&channel);
            // More may be waiting: look again now rather than at the next tick.
            act.look(ctx);
        }));
    }

    fn record(
        &self,
        channel: &str,
        planned: &Planned,
        result: AttemptResult,
        outcome: &'static str,
    ) -> impl std::future::Future<Output = Result<WriteOutcome, StoreError>> {
        record(&self.store, &self.events, channel, planned, result, outcome)
    }
}

/// Counts and logs one attempt and hands its result to the store.
fn record(
    store: &StoreHandle,
    events: &Events,
    channel: &str,
    planned: &Planned,
    result: AttemptResult,
    outcome: &'static str,
) -> impl std::future::Future<Output = Result<WriteOutcome, StoreError>> {
    let error = match &result {
        AttemptResult::Delivered => None,
        AttemptResult::Retry { error, .. }
        | AttemptResult::Refused { error }
        | AttemptResult::GaveUp { error } => Some(error.clone()),
    };
    events.emit(NotificationAttempted {
        channel,
        message_id: planned.outgoing.id(),
        messages: planned.ids.len(),
        outcome,
        error: error.as_deref(),
    });
    store.write(WriteOp::NotificationAttempt(Attempt {
        ids: planned.ids.clone(),
        group_id: planned.group_id.clone(),
        result,
        at: Utc::now(),
    }))
}

/// What one run's deliveries share.
struct Courier {
    client: reqwest::Client,
    give_up_after: chrono::Duration,
    human_give_up: String,
    store: StoreHandle,
    events: Events,
    standing: Arc<ChannelStanding>,
    channel: String,
    settings: crate::config::ChannelSettings,
}

impl Courier {
    /// Delivers one lane's messages one after the other; the writes recording them, and
    /// whether it stopped at one that must be tried again.
    async fn lane(
        &self,
        lane: Vec<Planned>,
    ) -> (
        Vec<impl std::future::Future<Output = Result<WriteOutcome, StoreError>>>,
        bool,
    ) {
        let mut writes = Vec::with_capacity(lane.len());
        for planned in lane {
            let result = deliver(&self.client, &self.settings, &planned.outgoing, Utc::now()).await;
            match &result {
                Delivered::Yes => self.standing.delivered(&self.channel),
                Delivered::Refused(error) | Delivered::Later(error) => {
                    self.standing.failed(&self.channel, error)
                }
            }
            let now = Utc::now();
            let expired = now - planned.created_at >= self.give_up_after;
            let (result, outcome) = match result {
                Delivered::Yes => (AttemptResult::Delivered, "delivered"),
                Delivered::Refused(error) => (AttemptResult::Refused { error }, "refused"),
                Delivered::Later(error) if expired => (
                    AttemptResult::GaveUp {
                        error: format!(
                            "undelivered after {}; last error: {error}",
                            self.human_give_up
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
            let again = outcome == "retrying";
            writes.push(record(
                &self.store,
                &self.events,
                &self.channel,
                &planned,
                result,
                outcome,
            ));
            if again {
                return (writes, true);
            }
        }
        (writes, false)
    }
}

/// A run cut into waves of lanes: the lanes of a wave go out side by side, at most `width` of
/// them, each holding every message of its jobs in run order; a grouped message is a wave of
/// its own, after everything before it and before everything after it.
fn waves(run: Vec<Planned>, width: usize) -> Vec<Vec<Vec<Planned>>> {
    let mut waves = Vec::new();
    let mut lanes: Vec<Vec<Planned>> = Vec::new();
    let mut lane_of: HashMap<String, usize> = HashMap::new();
    for planned in run {
        match planned.order_key.clone() {
            None => {
                if !lanes.is_empty() {
                    waves.push(std::mem::take(&mut lanes));
                    lane_of.clear();
                }
                waves.push(vec![vec![planned]]);
            }
            Some(key) => {
                let next = lane_of.len() % width;
                let lane = *lane_of.entry(key).or_insert(next);
                if lane == lanes.len() {
                    lanes.push(Vec::new());
                }
                lanes[lane].push(planned);
            }
        }
    }
    if !lanes.is_empty() {
        waves.push(lanes);
    }
    waves
}

/// Most messages one channel is sent in a row before the outbox is read again.
const RUN: usize = 2_000;

/// The messages to send to one channel now, in order: as many as [`plan`] allows one after
/// the other (a channel with a rate limit gets one).
fn plan_run(
    rows: &[OutboxRow],
    now: DateTime<Utc>,
    s: &NotificationSettings,
    channel: &crate::config::ChannelSettings,
) -> Vec<Planned> {
    let limit = if channel.min_interval.is_zero() {
        RUN
    } else {
        1
    };
    // References, and a start that moves past each single message sent: a run of thousands
    // never copies or re-filters the rows it has not reached.
    let mut remaining: Vec<&OutboxRow> = rows.iter().collect();
    let mut start = 0;
    let mut run = Vec::new();
    while run.len() < limit {
        let Some(planned) = plan_rows(&remaining[start..], now, s) else {
            break;
        };
        if planned.group_id.is_none() && planned.ids == [remaining[start].id] {
            start += 1;
        } else {
            let taken: HashSet<i64> = planned.ids.iter().copied().collect();
            remaining.drain(..start);
            remaining.retain(|r| !taken.contains(&r.id));
            start = 0;
        }
        run.push(planned);
    }
    run
}

/// What to send next to one channel, given its pending rows in outbox order; `None` while it
/// waits (backing off, or a failure waiting for the rest of its storm).
pub fn plan(rows: &[OutboxRow], now: DateTime<Utc>, s: &NotificationSettings) -> Option<Planned> {
    plan_rows(&rows.iter().collect::<Vec<_>>(), now, s)
}

fn plan_rows(rows: &[&OutboxRow], now: DateTime<Utc>, s: &NotificationSettings) -> Option<Planned> {
    let first = *rows.first()?;
    if first.next_attempt_at > now {
        return None;
    }
    let parse = |row: &OutboxRow| serde_json::from_str::<Notification>(&row.payload).ok();
    if let Some(group) = &first.group_id {
        // A storm tried before goes out again exactly as it was.
        let members: Vec<&OutboxRow> = rows
            .iter()
            .copied()
            .filter(|r| r.group_id.as_ref() == Some(group))
            .collect();
        return Some(storm(group.clone(), &members, s.storm_list, &parse));
    }
    let failure = |row: &OutboxRow| EventKind::names_failure(&row.event);
    if failure(first) {
        let gathering = chrono::Duration::from_std(s.group_wait).unwrap_or_default();
        if now - first.created_at < gathering {
            return None;
        }
        let failures: Vec<&OutboxRow> = rows
            .iter()
            .copied()
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
        order_key: Some(match (&first.job_kind, &first.job_id) {
            (Some(kind), Some(id)) => format!("{kind}/{id}"),
            (None, Some(id)) => id.clone(),
            (_, None) => String::new(),
        }),
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
        order_key: None,
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
            resolves: None,
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

    fn channel(min_interval: Duration) -> crate::config::ChannelSettings {
        use crate::config::DEFAULT_IN_FLIGHT;
        crate::config::ChannelSettings {
            kind: crate::config::ChannelKind::Webhook {
                url: "http://127.0.0.1:9/hook".into(),
                secret: None,
            },
            min_interval,
            timeout: Duration::from_secs(1),
            in_flight: DEFAULT_IN_FLIGHT,
        }
    }

    #[test]
    fn a_channel_without_a_rate_limit_gets_its_waiting_messages_in_one_run_in_order() {
        let now = Utc::now();
        let rows: Vec<_> = (1..=4).map(|i| row(i, "succeeded", 0, now)).collect();
        let run = plan_run(&rows, now, &settings(), &channel(Duration::ZERO));
        let ids: Vec<Vec<i64>> = run.iter().map(|p| p.ids.clone()).collect();
        assert_eq!(ids, [[1], [2], [3], [4]]);
    }

    #[test]
    fn a_rate_limited_channel_gets_one_message_per_look() {
        let now = Utc::now();
        let rows: Vec<_> = (1..=4).map(|i| row(i, "succeeded", 0, now)).collect();
        let run = plan_run(&rows, now, &settings(), &channel(Duration::from_secs(1)));
        assert_eq!(run.len(), 1);
        assert_eq!(run[0].ids, [1]);
    }

    fn keyed(id: i64, key: Option<&str>) -> Planned {
        let now = Utc::now();
        let mut planned = plan(&[row(id, "succeeded", 0, now)], now, &settings()).unwrap();
        planned.order_key = key.map(str::to_owned);
        planned
    }

    fn shape(waves: &[Vec<Vec<Planned>>]) -> Vec<Vec<Vec<i64>>> {
        waves
            .iter()
            .map(|wave| {
                wave.iter()
                    .map(|lane| lane.iter().flat_map(|p| p.ids.clone()).collect())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_message_is_keyed_by_its_job_so_two_jobs_never_share_a_key() {
        let now = Utc::now();
        let planned = plan(&[row(1, "succeeded", 0, now)], now, &settings()).unwrap();
        assert_eq!(planned.order_key.as_deref(), Some("spark/e1"));
    }

    #[test]
    fn a_jobs_messages_share_a_lane_in_run_order_and_jobs_spread_over_the_lanes() {
        let run = [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "d"), (6, "b")]
            .map(|(id, key)| keyed(id, Some(key)));
        assert_eq!(
            shape(&waves(run.into(), 3)),
            [vec![vec![1, 3, 5], vec![2, 6], vec![4]]],
            "a, b, c take a lane each; d comes round to the first"
        );
    }

    #[test]
    fn one_in_flight_is_the_whole_run_in_order() {
        let run = [(1, "a"), (2, "b"), (3, "a")].map(|(id, key)| keyed(id, Some(key)));
        assert_eq!(shape(&waves(run.into(), 1)), [vec![vec![1, 2, 3]]]);
    }

    #[test]
    fn a_grouped_message_goes_out_alone_between_what_came_before_and_after() {
        let run = vec![
            keyed(1, Some("a")),
            keyed(2, Some("b")),
            keyed(3, None),
            keyed(4, Some("a")),
        ];
        assert_eq!(
            shape(&waves(run, 4)),
            [vec![vec![1], vec![2]], vec![vec![3]], vec![vec![4]]]
        );
    }

    #[test]
    fn retries_back_off_doubling_up_to_five_minutes() {
        assert_eq!(backoff(0).num_seconds(), 1);
        assert_eq!(backoff(3).num_seconds(), 8);
        assert_eq!(backoff(30).num_seconds(), 300);
    }
}
