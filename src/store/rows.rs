//! Conversions between table rows and the domain's state types.

use entity::{spark_job_executions as executions, transformation_job_queue as queue};

use crate::domain::{ExecutionState, Position, QueueState};

use crate::store_api::OpError;

pub fn execution_state(row: &executions::Model) -> Result<ExecutionState, OpError> {
    Ok(ExecutionState {
        status: row.status.parse().map_err(|e| OpError::CorruptRow {
            table: "spark_job_executions".into(),
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
        failing_since: row.failing_since,
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
    row.failing_since = state.failing_since;
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
            table: "transformation_job_queue".into(),
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

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::domain::{JobStatus, QueueStatus};

    fn row() -> executions::Model {
        let t = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap();
        executions::Model {
            execution_id: "e1".into(),
            job_name: Some("nightly".into()),
            submission_id: Some("driver-1".into()),
            status: "Running".into(),
            spark_state: Some("RUNNING".into()),
            progress: 42,
            submitted_at: Some(t(1)),
            started_at: Some(t(2)),
            completed_at: None,
            last_polled_at: Some(t(3)),
            last_confirmed_at: Some(t(2)),
            next_poll_at: Some(t(30)),
            status_changed_at: Some(t(2)),
            error_message: None,
            consecutive_poll_failures: 1,
            last_poll_error: Some("timeout".into()),
            owner: Some("instance-a".into()),
            lease_until: Some(t(60)),
            created_at: t(0),
            updated_at: t(3),
            failing_since: Some(t(3)),
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

    #[test]
    fn an_execution_row_round_trips_through_its_domain_state() {
        let original = row();
        let state = execution_state(&original).unwrap();
        assert_eq!(state.status, JobStatus::Running);
        assert_eq!(state.progress, 42);
        assert_eq!(state.next_poll_at, original.next_poll_at);
        assert_eq!(state.last_poll_error.as_deref(), Some("timeout"));
        let mut written = original.clone();
        store_execution_state(&mut written, &state);
        assert_eq!(written, original, "mapping back changes nothing");
    }

    #[test]
    fn domain_state_never_touches_identity_or_lease_columns() {
        let original = row();
        let mut state = execution_state(&original).unwrap();
        state.status = JobStatus::Succeeded;
        state.progress = 100;
        let mut written = original.clone();
        store_execution_state(&mut written, &state);
        assert_eq!(written.status, "Succeeded");
        assert_eq!(written.progress, 100);
        assert_eq!(
            (
                &written.execution_id,
                &written.submission_id,
                &written.job_name
            ),
            (
                &original.execution_id,
                &original.submission_id,
                &original.job_name
            )
        );
        assert_eq!(
            (&written.owner, written.lease_until),
            (&original.owner, original.lease_until)
        );
    }

    #[test]
    fn out_of_range_counters_are_clamped_not_trusted() {
        let mut odd = row();
        odd.progress = 250;
        odd.consecutive_poll_failures = -3;
        let state = execution_state(&odd).unwrap();
        assert_eq!(state.progress, 100);
        assert_eq!(state.consecutive_poll_failures, 0);
    }

    #[test]
    fn an_unknown_status_is_a_corrupt_row_naming_table_and_id() {
        let mut odd = row();
        odd.status = "Exploded".into();
        match execution_state(&odd) {
            Err(OpError::CorruptRow { table, id, .. }) => {
                assert_eq!(
                    (table.as_str(), id.as_str()),
                    ("spark_job_executions", "e1")
                );
            }
            other => panic!("expected a corrupt row, got {other:?}"),
        }
    }

    #[test]
    fn a_queue_row_keeps_its_position_only_when_complete() {
        let t = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let mut q = queue::Model {
            job_id: "q1".into(),
            status: "Processing".into(),
            error_message: None,
            generated_fields: Some(json!({"rows": 3})),
            completed_at: None,
            last_event_at: Some(t),
            last_event_id: Some("ev-1".into()),
            last_topic: Some("topic".into()),
            last_partition: Some(2),
            last_offset: Some(41),
            created_at: t,
            updated_at: t,
        };
        let state = queue_state(&q).unwrap();
        assert_eq!(state.status, QueueStatus::Processing);
        let position = state.last_position.clone().unwrap();
        assert_eq!((position.partition, position.offset), (2, 41));
        let mut written = q.clone();
        store_queue_state(&mut written, &state);
        assert_eq!(written, q);

        q.last_offset = None;
        assert_eq!(queue_state(&q).unwrap().last_position, None);
    }
}
