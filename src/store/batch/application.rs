//! Rows of an application's own mapped tables, beside jobwarden's copy of them: the
//! application's columns are read over the copy before the rules run, and the copy's outcome is
//! written back into the application's columns after.

use chrono::{DateTime, Utc};
use entity::spark_job_executions as executions;

use crate::domain::application::{standing, Standing};
use crate::domain::{EventApplied, HistoryEntry, QueueState};
use crate::store_api::{OpError, Source, WriteOutcome};

use super::super::changes::{history_row, queue_history, Changes, SPARK};
use super::super::mapped::{self, AppExecution, AppQueueJob};
use super::super::rows;

/// Brings jobwarden's copy of each mapped row up to what the application's row holds now: the
/// application's columns are the truth for the fields they map (it may have cancelled a job,
/// or set its submission id), and the rules then apply from there. A row the application
/// deleted is no longer supervised.
pub(super) fn reconcile_executions(
    changes: &mut Changes,
    map: &mapped::ExecutionsMap,
    now: DateTime<Utc>,
) {
    let ids: Vec<String> = changes.executions.keys().cloned().collect();
    for id in ids {
        let Some(app) = changes.app_executions.get(&id) else {
            changes.executions.remove(&id);
            continue;
        };
        let loaded = changes.executions.get_mut(&id).expect("listed above");
        match overlay_execution(&mut loaded.row, app, map) {
            Ok(None) => {}
            Ok(Some(entry)) => {
                loaded.dirty = true;
                if let Some(entry) = entry.with_time(now) {
                    changes
                        .history
                        .push(history_row(SPARK, &id, &entry, Source::Application));
                }
            }
            Err(reason) => {
                changes.executions.remove(&id);
                changes.unreadable.insert(id, reason);
            }
        }
    }
}

/// What overlaying an application row changed in jobwarden's copy.
pub(super) struct Overlaid {
    from: crate::domain::JobStatus,
    to: crate::domain::JobStatus,
}

impl Overlaid {
    /// The history line for a status the application changed itself, if it did.
    fn with_time(self, at: DateTime<Utc>) -> Option<HistoryEntry> {
        (self.from != self.to).then(|| HistoryEntry {
            from: Some(self.from),
            to: self.to,
            detail: Some("changed by the application".into()),
            at,
        })
    }
}

/// Copies the application's mapped values into jobwarden's copy of the row. `Ok(None)` when
/// the copy already held them.
pub(super) fn overlay_execution(
    row: &mut executions::Model,
    app: &AppExecution,
    map: &mapped::ExecutionsMap,
) -> Result<Option<Overlaid>, String> {
    let status = app
        .status
        .as_ref()
        .and_then(|v| map.vocabulary.decode(v))
        .ok_or_else(|| match &app.status {
            Some(v) => format!(
                "status {v} is not in the status vocabulary of {}",
                map.table
            ),
            None => format!("status is NULL in {}", map.table),
        })?;
    let before = row.clone();
    let from = row.status.parse().unwrap_or(status);
    row.status = status.as_str().to_owned();
    row.submission_id.clone_from(&app.submission_id);
    if map.job_name.is_some() {
        row.job_name.clone_from(&app.job_name);
    }
    if map.cluster.is_some() {
        row.cluster.clone_from(&app.cluster);
    }
    if map.progress.is_some() {
        row.progress = app
            .progress
            .map_or(0, |p| p.round().clamp(0.0, 100.0) as i16);
    }
    if map.error_message.is_some() {
        row.error_message.clone_from(&app.error_message);
    }
    if map.submitted_at.is_some() {
        row.submitted_at = app.submitted_at;
    }
    if map.started_at.is_some() {
        row.started_at = app.started_at;
    }
    if map.completed_at.is_some() {
        row.completed_at = app.completed_at;
    }
    if *row == before {
        return Ok(None);
    }
    Ok(Some(Overlaid { from, to: status }))
}

/// The application's view of jobwarden's row: the mapped fields, as they should now be.
pub(super) fn app_view(
    row: &executions::Model,
    loaded: &AppExecution,
    map: &mapped::ExecutionsMap,
) -> AppExecution {
    let status = row
        .status
        .parse()
        .map(|s| map.vocabulary.encode(s).clone())
        .ok()
        .or_else(|| loaded.status.clone());
    AppExecution {
        submission_id: loaded.submission_id.clone(),
        status,
        job_name: loaded.job_name.clone(),
        cluster: loaded.cluster.clone(),
        progress: map.progress.as_ref().map(|_| f64::from(row.progress)),
        error_message: map
            .error_message
            .as_ref()
            .and_then(|_| row.error_message.clone()),
        submitted_at: map.submitted_at.as_ref().and(row.submitted_at),
        started_at: map.started_at.as_ref().and(row.started_at),
        completed_at: map.completed_at.as_ref().and(row.completed_at),
    }
}

/// A mapped queue row's status, or why it cannot be read.
pub(super) fn app_queue_status(
    map: &mapped::QueueMap,
    app: &AppQueueJob,
    job_id: &str,
) -> Result<crate::domain::QueueStatus, OpError> {
    app.status
        .as_ref()
        .and_then(|v| map.vocabulary.decode(v))
        .ok_or_else(|| OpError::CorruptRow {
            table: map.table.to_string(),
            id: job_id.to_owned(),
            reason: match &app.status {
                Some(v) => format!("status {v} is not in the status vocabulary"),
                None => "status is NULL".into(),
            },
        })
}

/// Takes the application's status and the values it maps into jobwarden's state.
pub(super) fn take_app_queue(
    state: &mut QueueState,
    theirs: crate::domain::QueueStatus,
    app: &AppQueueJob,
    map: &mapped::QueueMap,
) {
    state.status = theirs;
    if map.error_message.is_some() {
        state.error_message.clone_from(&app.error_message);
    }
    if map.generated_fields.is_some() {
        state.generated_fields.clone_from(&app.generated_fields);
    }
    if map.completed_at.is_some() {
        state.completed_at = app.completed_at;
    }
}

/// Brings a mapped queue row and jobwarden's copy into step, forward only: whichever is further
/// along its lifecycle wins, and a finished status the application wrote is never overwritten.
/// When the copy is ahead, the batch's write-out copies it into the application's row.
pub(super) fn sync_queue(
    job_id: &str,
    changes: &mut Changes,
    map: Option<&mapped::QueueMap>,
    now: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    let (Some(map), Some(app), Some(loaded)) = (
        map,
        changes.app_queue.get(job_id),
        changes.queue.get_mut(job_id),
    ) else {
        return Ok(WriteOutcome::Queue(EventApplied::Refreshed));
    };
    if loaded.row.status.is_empty() {
        // Only a placeholder: jobwarden has nothing of its own for this job.
        return Ok(WriteOutcome::Queue(EventApplied::Refreshed));
    }
    let mut state = rows::queue_state(&loaded.row)?;
    let theirs = app_queue_status(map, app, job_id)?;
    if standing(state.status, theirs) != Standing::Theirs {
        // Equal, or ours is further along: the write-out brings the application's row up to it.
        return Ok(WriteOutcome::Queue(EventApplied::Refreshed));
    }
    let from = state.status;
    take_app_queue(&mut state, theirs, app, map);
    rows::store_queue_state(&mut loaded.row, &state);
    loaded.dirty = true;
    changes.history.push(queue_history(
        job_id,
        from,
        theirs,
        Source::Application,
        Some("changed by the application".into()),
        now,
    ));
    Ok(WriteOutcome::Queue(EventApplied::Transitioned {
        from,
        to: theirs,
    }))
}
