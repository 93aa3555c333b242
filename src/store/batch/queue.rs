//! A queue job's status event applied to its row, after the application's own row (if the
//! queue table is mapped) has had its say.

use chrono::{DateTime, Utc};
use entity::transformation_job_queue as queue;

use crate::domain::application::{standing, Standing};
use crate::domain::{Position, QueueState, StatusEvent};
use crate::store_api::{OpError, Source, WriteOutcome};

use super::super::changes::{queue_history, Changes, Loaded};
use super::super::mapped;
use super::super::rows;
use super::application::{app_queue_status, take_app_queue};

pub(super) fn queue_event(
    event: &StatusEvent,
    position: Option<&Position>,
    received_at: DateTime<Utc>,
    changes: &mut Changes,
    map: Option<&mapped::QueueMap>,
    now: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    let loaded = changes
        .queue
        .entry(event.job_id.clone())
        .or_insert_with(|| {
            Loaded::created(queue::Model {
                job_id: event.job_id.clone(),
                status: String::new(),
                error_message: None,
                generated_fields: None,
                completed_at: None,
                last_event_at: None,
                last_event_id: None,
                last_topic: None,
                last_partition: None,
                last_offset: None,
                created_at: now,
                updated_at: now,
            })
        });
    let mut state = if loaded.is_new() && loaded.row.status.is_empty() {
        QueueState::pending()
    } else {
        rows::queue_state(&loaded.row)?
    };
    if let (Some(map), Some(app)) = (map, changes.app_queue.get(&event.job_id)) {
        let theirs = app_queue_status(map, app, &event.job_id)?;
        // The application's row is the truth for what it maps (a new row takes it whole); a
        // row behind jobwarden's copy is brought forward by the write-out instead.
        let standing = if loaded.is_new() {
            Standing::Agree
        } else {
            standing(state.status, theirs)
        };
        if standing != Standing::Ours {
            if standing == Standing::Theirs {
                changes.history.push(queue_history(
                    &event.job_id,
                    state.status,
                    theirs,
                    Source::Application,
                    Some("changed by the application".into()),
                    received_at,
                ));
            }
            take_app_queue(&mut state, theirs, app, map);
            if rows::queue_state(&loaded.row).ok().as_ref() != Some(&state) {
                rows::store_queue_state(&mut loaded.row, &state);
                loaded.dirty = true;
            }
        }
    }
    let before = state.clone();
    let applied = state.apply(event, position, received_at);
    if state != before || loaded.is_new() {
        rows::store_queue_state(&mut loaded.row, &state);
        loaded.dirty = true;
    }
    if applied.took_effect() {
        let detail = match (&event.error_message, position) {
            (Some(msg), _) => Some(msg.clone()),
            (None, Some(p)) => Some(format!("{}[{}]@{}", p.topic, p.partition, p.offset)),
            (None, None) => None,
        };
        changes.history.push(queue_history(
            &event.job_id,
            before.status,
            state.status,
            Source::KafkaEvent,
            detail,
            event.timestamp.unwrap_or(received_at),
        ));
    }
    Ok(WriteOutcome::Queue(applied))
}
