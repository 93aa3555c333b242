//! New rows: a job registered through the API or the CLI, and a row the application inserted
//! into its mapped table, taken under supervision.

use chrono::{DateTime, Utc};
use entity::spark_job_executions as executions;

use crate::domain::{ExecutionState, JobStatus};
use crate::store_api::{OpError, Source, TrackRequest, WriteOutcome};

use super::super::changes::{history_row, Changes, Loaded, Rules, SPARK};
use super::super::mapped::Mapping;
use super::super::ordering;
use super::super::rows;
use super::application::overlay_execution;

pub(super) fn track(
    request: &TrackRequest,
    changes: &mut Changes,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    if let Some(existing) = changes.executions.get_mut(&request.execution_id) {
        // A row the submitter inserted before it knew the backend's id may be given one, once.
        if existing.row.submission_id.is_none() && request.submission_id.is_some() {
            let mut state = rows::execution_state(&existing.row)?;
            state.resubmitted();
            rows::store_execution_state(&mut existing.row, &state);
            existing
                .row
                .submission_id
                .clone_from(&request.submission_id);
            if existing.row.job_name.is_none() {
                existing.row.job_name.clone_from(&request.job_name);
            }
            if existing.row.cluster.is_none() {
                existing.row.cluster.clone_from(&request.cluster);
            }
            existing.dirty = true;
            return Ok(WriteOutcome::Tracked { created: false });
        }
        return Err(OpError::Duplicate {
            execution_id: request.execution_id.clone(),
        });
    }
    let mut state = ExecutionState::queued(now);
    let waits = request.spec.is_some() && !request.after.is_empty();
    if waits {
        state.status = JobStatus::Waiting;
    }
    let mut row = new_execution_row(
        &request.execution_id,
        request.job_name.clone(),
        request.submission_id.clone(),
        now,
    );
    row.cluster.clone_from(&request.cluster);
    rows::store_execution_state(&mut row, &state);
    let detail = match (&request.spec, &request.submission_id) {
        (Some(spec), _) => {
            ordering::register(changes, request, &mut row, rules, now)?;
            row.submit_spec = Some(spec.to_json());
            if waits {
                let parents: Vec<&str> = request.after.iter().map(|(id, _)| id.as_str()).collect();
                Some(format!(
                    "to be submitted by jobwarden once {} ended: {} from {}",
                    parents.join(", "),
                    spec.main_class,
                    spec.app_resource
                ))
            } else {
                row.next_attempt_at = Some(now);
                Some(format!(
                    "to be submitted by jobwarden: {} from {}",
                    spec.main_class, spec.app_resource
                ))
            }
        }
        (None, Some(s)) => Some(format!("tracking submission {s}")),
        (None, None) => None,
    };
    let registered = state.registered(detail);
    changes.history.push(history_row(
        SPARK,
        &request.execution_id,
        &registered,
        request.source,
    ));
    changes
        .executions
        .insert(request.execution_id.clone(), Loaded::created(row));
    Ok(WriteOutcome::Tracked { created: true })
}

/// Starts supervising a row the application inserted into its mapped table.
pub(super) fn adopt(
    execution_id: &str,
    changes: &mut Changes,
    mapping: &Mapping,
    now: DateTime<Utc>,
) -> Result<WriteOutcome, OpError> {
    if changes.executions.contains_key(execution_id) {
        return Ok(WriteOutcome::Tracked { created: false });
    }
    let unknown = || OpError::UnknownExecution {
        execution_id: execution_id.to_owned(),
    };
    let map = mapping.executions.as_ref().ok_or_else(unknown)?;
    let app = changes
        .app_executions
        .get(execution_id)
        .ok_or_else(unknown)?;
    let mut row = new_execution_row(execution_id, None, None, now);
    rows::store_execution_state(&mut row, &ExecutionState::queued(now));
    overlay_execution(&mut row, app, map).map_err(|reason| OpError::CorruptRow {
        table: map.table.to_string(),
        id: execution_id.to_owned(),
        reason,
    })?;
    let state = rows::execution_state(&row)?;
    let registered = state.registered(Some(format!("picked up from {}", map.table)));
    changes.history.push(history_row(
        SPARK,
        execution_id,
        &registered,
        Source::Application,
    ));
    changes
        .executions
        .insert(execution_id.to_owned(), Loaded::created(row));
    Ok(WriteOutcome::Tracked { created: true })
}

pub(super) fn new_execution_row(
    execution_id: &str,
    job_name: Option<String>,
    submission_id: Option<String>,
    now: DateTime<Utc>,
) -> executions::Model {
    executions::Model {
        execution_id: execution_id.to_owned(),
        job_name,
        submission_id,
        status: String::new(),
        spark_state: None,
        progress: 0,
        submitted_at: None,
        started_at: None,
        completed_at: None,
        last_polled_at: None,
        last_confirmed_at: None,
        next_poll_at: None,
        status_changed_at: None,
        error_message: None,
        consecutive_poll_failures: 0,
        last_poll_error: None,
        owner: None,
        lease_until: None,
        created_at: now,
        updated_at: now,
        failing_since: None,
        cluster: None,
        submit_spec: None,
        attempt: 0,
        next_attempt_at: None,
        cancel_requested_at: None,
        priority: 0,
        queue_rank: 0,
        allowed_clusters: None,
    }
}
