//! The notification outbox on the store's side: the rows a batch's transitions and dead letters
//! trigger (written in the batch's own transaction), what is pending delivery, and the result
//! of each delivery attempt.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{job_status_history as history, jobwarden_outbox as outbox};
use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::config::EventKind;
use crate::notify::{new_message_id, JobRef, Notification, NotifyRules};
use crate::store_api::{Attempt, AttemptResult, NewDeadLetter};

pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// What the outbox needs to know about a job a history row is about.
pub struct JobFacts {
    pub name: Option<String>,
    pub cluster: Option<String>,
    pub submission_id: Option<String>,
}

/// The event a transition is, if it is one people are told about.
fn event_of(to: &str, source: &str) -> Option<EventKind> {
    match to {
        "Failed" if source == "timeout_sweep" => Some(EventKind::TimedOut),
        "Failed" => Some(EventKind::Failed),
        "Succeeded" | "Completed" => Some(EventKind::Succeeded),
        "Cancelled" => Some(EventKind::Cancelled),
        _ => None,
    }
}

/// One outbox row per channel for every history row a rule asks about.
pub fn rows_for(
    rules: &NotifyRules,
    transitions: &[history::ActiveModel],
    facts: impl Fn(&str, &str) -> Option<JobFacts>,
    now: DateTime<Utc>,
) -> Vec<outbox::ActiveModel> {
    if rules.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for row in transitions {
        let (Some(kind), Some(id), Some(to), Some(source), Some(at)) = (
            row.job_kind.try_as_ref(),
            row.job_id.try_as_ref(),
            row.to_status.try_as_ref(),
            row.source.try_as_ref(),
            row.at.try_as_ref(),
        ) else {
            continue;
        };
        let Some(event) = event_of(to, source) else {
            continue;
        };
        let job = facts(kind, id);
        let name = job.as_ref().and_then(|j| j.name.clone());
        let channels = rules.channels_for(event, name.as_deref().unwrap_or(id));
        if channels.is_empty() {
            continue;
        }
        let notification = Notification {
            id: new_message_id(),
            event: event.as_str().to_owned(),
            job: JobRef {
                kind: Some(kind.clone()),
                id: Some(id.clone()),
                name,
                cluster: job.as_ref().and_then(|j| j.cluster.clone()),
                submission_id: job.and_then(|j| j.submission_id),
            },
            from_status: row.from_status.try_as_ref().cloned().flatten(),
            to_status: Some(to.clone()),
            reason: row.detail.try_as_ref().cloned().flatten(),
            resolves: None,
            source: source.clone(),
            at: *at,
        };
        push(&mut out, &notification, event, channels, now);
    }
    out
}

/// One outbox row per channel a rule sends a new dead letter to.
pub fn dead_letter_rows(
    rules: &NotifyRules,
    letter: &NewDeadLetter,
    now: DateTime<Utc>,
) -> Vec<outbox::ActiveModel> {
    let mut out = Vec::new();
    {
        let where_from = match (&letter.topic, letter.partition, letter.offset) {
            (Some(t), Some(p), Some(o)) => format!("{t}[{p}]@{o}"),
            _ => letter.source.clone(),
        };
        let channels = rules.channels_for(EventKind::DeadLettered, &where_from);
        if channels.is_empty() {
            return out;
        }
        let notification = Notification {
            id: new_message_id(),
            event: EventKind::DeadLettered.as_str().to_owned(),
            job: JobRef {
                kind: None,
                id: None,
                name: Some(where_from),
                cluster: None,
                submission_id: None,
            },
            from_status: None,
            to_status: None,
            reason: Some(letter.error.clone()),
            resolves: None,
            source: letter.source.clone(),
            at: letter.received_at,
        };
        push(
            &mut out,
            &notification,
            EventKind::DeadLettered,
            channels,
            now,
        );
    }
    out
}

fn push<'a>(
    out: &mut Vec<outbox::ActiveModel>,
    notification: &Notification,
    event: EventKind,
    channels: impl IntoIterator<Item = &'a str>,
    now: DateTime<Utc>,
) {
    let payload = serde_json::to_string(notification).unwrap_or_default();
    for channel in channels {
        out.push(outbox::ActiveModel {
            id: NotSet,
            message_id: Set(notification.id.clone()),
            channel: Set(channel.to_owned()),
            event: Set(event.as_str().to_owned()),
            job_kind: Set(notification.job.kind.clone()),
            job_id: Set(notification.job.id.clone()),
            payload: Set(payload.clone()),
            state: Set(PENDING.to_owned()),
            attempts: Set(0),
            next_attempt_at: Set(now),
            last_error: Set(None),
            created_at: Set(now),
            finished_at: Set(None),
            group_id: Set(None),
            dedup_key: Set(None),
        });
    }
}

/// Most rows one grouped update names.
const GROUP: usize = 500;

/// Writes the outcome of delivery attempts, in the batch's transaction. Single messages
/// delivered (most attempts, when receivers are up) go out as one update per group, each row
/// given its own time; every other attempt as an update of its own.
pub async fn record(txn: &impl ConnectionTrait, attempts: &[Attempt]) -> Result<(), DbErr> {
    let (delivered, others): (Vec<&Attempt>, Vec<&Attempt>) = attempts
        .iter()
        .filter(|a| !a.ids.is_empty())
        .partition(|a| {
            matches!(a.result, AttemptResult::Delivered) && a.group_id.is_none() && a.ids.len() == 1
        });
    for group in delivered.chunks(GROUP) {
        record_delivered(txn, group).await?;
    }
    for attempt in others {
        let (state, next, error) = match &attempt.result {
            AttemptResult::Delivered => (DELIVERED, attempt.at, None),
            AttemptResult::Retry { next_at, error } => (PENDING, *next_at, Some(error.clone())),
            AttemptResult::Refused { error } | AttemptResult::GaveUp { error } => {
                (FAILED, attempt.at, Some(error.clone()))
            }
        };
        let finished = (state != PENDING).then_some(attempt.at);
        outbox::Entity::update_many()
            .col_expr(outbox::Column::State, Expr::value(state))
            .col_expr(
                outbox::Column::Attempts,
                Expr::col(outbox::Column::Attempts).add(1),
            )
            .col_expr(outbox::Column::NextAttemptAt, Expr::value(next))
            .col_expr(outbox::Column::LastError, Expr::value(error))
            .col_expr(outbox::Column::FinishedAt, Expr::value(finished))
            .col_expr(
                outbox::Column::GroupId,
                Expr::value(attempt.group_id.clone()),
            )
            .filter(outbox::Column::Id.is_in(attempt.ids.iter().copied()))
            .filter(outbox::Column::State.eq(PENDING))
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// One message each, all delivered: one update, each row's time by a `CASE` on its id.
async fn record_delivered(txn: &impl ConnectionTrait, group: &[&Attempt]) -> Result<(), DbErr> {
    let at = || {
        group.iter().fold(CaseStatement::new(), |case, a| {
            case.case(outbox::Column::Id.eq(a.ids[0]), Expr::value(a.at))
        })
    };
    outbox::Entity::update_many()
        .col_expr(outbox::Column::State, Expr::value(DELIVERED))
        .col_expr(
            outbox::Column::Attempts,
            Expr::col(outbox::Column::Attempts).add(1),
        )
        .col_expr(outbox::Column::NextAttemptAt, at().into())
        .col_expr(
            outbox::Column::LastError,
            Expr::value(Option::<String>::None),
        )
        .col_expr(outbox::Column::FinishedAt, at().into())
        .col_expr(outbox::Column::GroupId, Expr::value(Option::<String>::None))
        .filter(outbox::Column::Id.is_in(group.iter().map(|a| a.ids[0])))
        .filter(outbox::Column::State.eq(PENDING))
        .exec(txn)
        .await?;
    Ok(())
}

/// Puts failed messages back to pending, due now, with their attempts and give-up clock
/// started over (the message id stays: receivers still deduplicate on it).
pub async fn resend_failed(
    db: &impl ConnectionTrait,
    since: Option<DateTime<Utc>>,
    channel: Option<&str>,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let mut update = outbox::Entity::update_many()
        .col_expr(outbox::Column::State, Expr::value(PENDING))
        .col_expr(outbox::Column::Attempts, Expr::value(0))
        .col_expr(outbox::Column::NextAttemptAt, Expr::value(now))
        .col_expr(outbox::Column::CreatedAt, Expr::value(now))
        .col_expr(
            outbox::Column::FinishedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(outbox::Column::GroupId, Expr::value(Option::<String>::None))
        .filter(outbox::Column::State.eq(FAILED));
    if let Some(since) = since {
        update = update.filter(outbox::Column::FinishedAt.gte(since));
    }
    if let Some(channel) = channel {
        update = update.filter(outbox::Column::Channel.eq(channel));
    }
    Ok(update.exec(db).await?.rows_affected)
}

/// The oldest pending messages of every channel, in the order they were written, at most
/// `per_channel` each: a channel whose receiver has been down for a day, with thousands
/// waiting, does not hide the others' messages.
pub async fn pending(
    db: &DatabaseConnection,
    per_channel: u64,
) -> Result<Vec<outbox::Model>, DbErr> {
    let channels: Vec<String> = outbox::Entity::find()
        .select_only()
        .column(outbox::Column::Channel)
        .distinct()
        .filter(outbox::Column::State.eq(PENDING))
        .into_tuple()
        .all(db)
        .await?;
    let mut rows = Vec::new();
    for channel in channels {
        rows.extend(
            outbox::Entity::find()
                .filter(outbox::Column::State.eq(PENDING))
                .filter(outbox::Column::Channel.eq(channel))
                .order_by_asc(outbox::Column::Id)
                .limit(per_channel)
                .all(db)
                .await?,
        );
    }
    Ok(rows)
}

/// Messages in one state, newest first (for the API).
pub async fn list(
    db: &DatabaseConnection,
    state: Option<&str>,
    limit: u64,
) -> Result<Vec<outbox::Model>, DbErr> {
    let mut query = outbox::Entity::find();
    if let Some(state) = state {
        query = query.filter(outbox::Column::State.eq(state));
    }
    query
        .order_by_desc(outbox::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// How many messages are in each state.
pub async fn counts(db: &DatabaseConnection) -> Result<HashMap<String, i64>, DbErr> {
    let rows: Vec<(String, i64)> = outbox::Entity::find()
        .select_only()
        .column(outbox::Column::State)
        .column_as(outbox::Column::Id.count(), "n")
        .group_by(outbox::Column::State)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}

/// A warning that holds for a job, waiting to be written.
#[derive(Debug, Clone)]
pub struct Warned {
    pub execution_id: String,
    pub event: EventKind,
    /// One per run of the job: the warning is sent once, however often the sweep finds it.
    pub dedup_key: String,
    pub reason: String,
}

/// A message about a job, for channels `rules` picked, once per `dedup_key` and channel.
fn once_rows(
    notification: &Notification,
    event: EventKind,
    channels: impl IntoIterator<Item = String>,
    dedup_key: &str,
    now: DateTime<Utc>,
) -> Vec<outbox::ActiveModel> {
    let channels: Vec<String> = channels.into_iter().collect();
    let mut rows = Vec::new();
    push(
        &mut rows,
        notification,
        event,
        channels.iter().map(String::as_str),
        now,
    );
    for row in &mut rows {
        row.dedup_key = Set(Some(dedup_key.to_owned()));
    }
    rows
}

/// Outbox rows for warnings that hold.
pub fn warning_rows(
    rules: &NotifyRules,
    warnings: &[Warned],
    facts: impl Fn(&str) -> Option<JobFacts>,
    now: DateTime<Utc>,
) -> Vec<outbox::ActiveModel> {
    let mut out = Vec::new();
    for warned in warnings {
        let job = facts(&warned.execution_id);
        let name = job.as_ref().and_then(|j| j.name.clone());
        let channels: Vec<String> = rules
            .channels_for(
                warned.event,
                name.as_deref().unwrap_or(&warned.execution_id),
            )
            .into_iter()
            .map(str::to_owned)
            .collect();
        if channels.is_empty() {
            continue;
        }
        let notification = Notification {
            id: new_message_id(),
            event: warned.event.as_str().to_owned(),
            job: job_ref(&warned.execution_id, name, job),
            from_status: None,
            to_status: None,
            reason: Some(warned.reason.clone()),
            resolves: None,
            source: "timeout_sweep".into(),
            at: now,
        };
        out.extend(once_rows(
            &notification,
            warned.event,
            channels,
            &warned.dedup_key,
            now,
        ));
    }
    out
}

fn job_ref(execution_id: &str, name: Option<String>, job: Option<JobFacts>) -> JobRef {
    JobRef {
        kind: Some("spark".into()),
        id: Some(execution_id.to_owned()),
        name,
        cluster: job.as_ref().and_then(|j| j.cluster.clone()),
        submission_id: job.and_then(|j| j.submission_id),
    }
}

/// Inserts rows that carry a dedup key, skipping those already written (a warning found again
/// by the next sweep, or by another instance).
pub async fn insert_once(
    txn: &impl ConnectionTrait,
    rows: Vec<outbox::ActiveModel>,
) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    outbox::Entity::insert_many(rows)
        .on_conflict(
            sea_orm::sea_query::OnConflict::columns([
                outbox::Column::DedupKey,
                outbox::Column::Channel,
            ])
            .do_nothing_on([outbox::Column::DedupKey])
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// Resolved messages for the warnings sent about jobs that ended or are confirmed again, to
/// the channels whose rules ask for them.
pub async fn resolved_rows(
    txn: &impl ConnectionTrait,
    rules: &NotifyRules,
    settled: &[(String, Option<JobFacts>, bool)],
    now: DateTime<Utc>,
) -> Result<Vec<outbox::ActiveModel>, DbErr> {
    if settled.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = settled.iter().map(|(id, _, _)| id.as_str()).collect();
    let sent: Vec<(String, String, String, Option<String>)> = outbox::Entity::find()
        .select_only()
        .column(outbox::Column::JobId)
        .column(outbox::Column::Event)
        .column(outbox::Column::Channel)
        .column(outbox::Column::DedupKey)
        .filter(outbox::Column::JobKind.eq("spark"))
        .filter(outbox::Column::JobId.is_in(ids))
        .filter(outbox::Column::Event.is_in([
            EventKind::StuckSoon.as_str(),
            EventKind::RunningLong.as_str(),
        ]))
        .into_tuple()
        .all(txn)
        .await?;
    let mut out = Vec::new();
    for (job_id, event, channel, dedup) in sent {
        let (Some(dedup), Some((_, facts, ended))) =
            (dedup, settled.iter().find(|(id, _, _)| *id == job_id))
        else {
            continue;
        };
        let name = facts.as_ref().and_then(|f| f.name.clone());
        let warning = if event == EventKind::StuckSoon.as_str() {
            EventKind::StuckSoon
        } else {
            EventKind::RunningLong
        };
        // Running long ends only with the job; stuck soon also when Spark confirms it again.
        if warning == EventKind::RunningLong && !ended {
            continue;
        }
        if !rules
            .resolved_channels(warning, name.as_deref().unwrap_or(&job_id))
            .contains(channel.as_str())
        {
            continue;
        }
        let notification = Notification {
            id: new_message_id(),
            event: EventKind::Resolved.as_str().to_owned(),
            // The same job facts as the warning's: an alert is resolved by its label set.
            job: job_ref(
                &job_id,
                name.clone(),
                facts.as_ref().map(|f| JobFacts {
                    name: f.name.clone(),
                    cluster: f.cluster.clone(),
                    submission_id: f.submission_id.clone(),
                }),
            ),
            from_status: None,
            to_status: None,
            reason: Some(if *ended {
                format!("the job ended; the {event} warning no longer holds")
            } else {
                format!("Spark confirms the job again; the {event} warning no longer holds")
            }),
            resolves: Some(event.clone()),
            source: "spark_poll".into(),
            at: now,
        };
        out.extend(once_rows(
            &notification,
            EventKind::Resolved,
            [channel],
            &format!("resolved:{dedup}"),
            now,
        ));
    }
    Ok(out)
}
