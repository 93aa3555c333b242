//! Conversions between table rows and the domain's state types.

use entity::{spark_job_executions as executions, transformation_job_queue as queue};

use crate::domain::{ExecutionState, Position, QueueState};

use crate::store_api::OpError;

pub fn execution_state(row: &executions::Model) -> Result<ExecutionState, OpError> {
    Ok(ExecutionState {
        status: row.status.parse().map_err(|e| OpError::CorruptRow {
            table: "spark_job_executions",
            id: row.execution_id.clone(),
            reason: format!("{e}"),
        })?,
        raw_state: row.spark_state.clone(),
        progress: row.progress.clamp(0, 100) as u8,
        created_at: row.created_at,
        submitted_at: row.submitted_at,
        started_at: row.started_at,
        completed_at: row.completed_at,
        status_changed_at: row.status_changed_at,
        last_polled_at: row.last_polled_at,
        last_confirmed_at: row.last_confirmed_at,
        error_message: row.error_message.clone(),
        next_poll_at: row.next_poll_at,
        consecutive_poll_failures: row.consecutive_poll_failures.max(0) as u32,
        last_poll_error: row.last_poll_error.clone(),
    })
}

pub fn store_execution_state(row: &mut executions::Model, state: &ExecutionState) {
    row.status = state.status.as_str().to_owned();
    row.spark_state.clone_from(&state.raw_state);
    row.progress = i16::from(state.progress);
    row.submitted_at = state.submitted_at;
    row.started_at = state.started_at;
    row.completed_at = state.completed_at;
    row.status_changed_at = state.status_changed_at;
    row.last_polled_at = state.last_polled_at;
    row.last_confirmed_at = state.last_confirmed_at;
    row.error_message.clone_from(&state.error_message);
    row.next_poll_at = state.next_poll_at;
    row.consecutive_poll_failures =
        i32::try_from(state.consecutive_poll_failures).unwrap_or(i32::MAX);
    row.last_poll_error.clone_from(&state.last_poll_error);
}

pub fn queue_state(row: &queue::Model) -> Result<QueueState, OpError> {
    let last_position = match (&row.last_topic, row.last_partition, row.last_offset) {
        (Some(topic), Some(partition), Some(offset)) => Some(Position {
            topic: topic.clone(),
            partition,
            offset,
        }),
        _ => None,
    };
    Ok(QueueState {
        status: row.status.parse().map_err(|e| OpError::CorruptRow {
            table: "transformation_job_queue",
            id: row.job_id.clone(),
            reason: format!("{e}"),
        })?,
        error_message: row.error_message.clone(),
        generated_fields: row.generated_fields.clone(),
        completed_at: row.completed_at,
        last_event_at: row.last_event_at,
        last_event_id: row.last_event_id.clone(),
        last_position,
    })
}

pub fn store_queue_state(row: &mut queue::Model, state: &QueueState) {
    row.status = state.status.as_str().to_owned();
    row.error_message.clone_from(&state.error_message);
    row.generated_fields.clone_from(&state.generated_fields);
    row.completed_at = state.completed_at;
    row.last_event_at = state.last_event_at;
    row.last_event_id.clone_from(&state.last_event_id);
    row.last_topic = state.last_position.as_ref().map(|p| p.topic.clone());
    row.last_partition = state.last_position.as_ref().map(|p| p.partition);
    row.last_offset = state.last_position.as_ref().map(|p| p.offset);
}
