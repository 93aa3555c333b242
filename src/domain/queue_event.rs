//! The enrichment pipeline's status events: their wire schema, and how one event changes a
//! `transformation_job_queue` row (idempotent, order-safe, terminal statuses sticky).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::status::{judge, Lifecycle, QueueStatus, Refusal, UnknownStatus, Verdict};

/// One parsed status event.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusEvent {
    pub job_id: String,
    pub status: QueueStatus,
    pub error_message: Option<String>,
    pub generated_fields: Option<Value>,
    pub timestamp: Option<DateTime<Utc>>,
    pub event_id: Option<String>,
}

/// Why a payload is not a usable status event; each becomes a dead letter's `error`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("payload is {size} bytes, over the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("payload is not a JSON object: {0}")]
    NotJson(String),
    #[error("payload has no jobId")]
    MissingJobId,
    #[error(transparent)]
    UnknownStatus(#[from] UnknownStatus),
    #[error("field {field} is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    job_id: Option<Value>,
    status: Option<Value>,
    error_message: Option<Value>,
    generated_fields: Option<Value>,
    timestamp: Option<Value>,
    event_id: Option<Value>,
}

fn optional_text(field: &'static str, value: Option<Value>) -> Result<Option<String>, EventError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(EventError::InvalidField {
            field,
            reason: format!("expected a string, found {other}"),
        }),
    }
}

/// Parses one payload. Extra fields are ignored; the size is checked before any parsing.
pub fn parse_event(payload: &[u8], max_bytes: usize) -> Result<StatusEvent, EventError> {
    if payload.len() > max_bytes {
        return Err(EventError::TooLarge {
            size: payload.len(),
            max: max_bytes,
        });
    }
    let wire: Wire =
        serde_json::from_slice(payload).map_err(|e| EventError::NotJson(e.to_string()))?;
    let job_id = match wire.job_id {
        None | Some(Value::Null) => return Err(EventError::MissingJobId),
        Some(Value::String(s)) if s.trim().is_empty() => return Err(EventError::MissingJobId),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(EventError::InvalidField {
                field: "jobId",
                reason: format!("expected a string, found {other}"),
            })
        }
    };
    let status = optional_text("status", wire.status)?.ok_or(EventError::InvalidField {
        field: "status",
        reason: "missing".into(),
    })?;
    let status: QueueStatus = status.parse()?;
    let generated_fields = match wire.generated_fields {
        None | Some(Value::Null) => None,
        Some(v @ (Value::Object(_) | Value::Array(_))) => Some(v),
        Some(other) => {
            return Err(EventError::InvalidField {
                field: "generatedFields",
                reason: format!("expected an object or array, found {other}"),
            })
        }
    };
    let timestamp = optional_text("timestamp", wire.timestamp)?
        .map(|raw| {
            DateTime::parse_from_rfc3339(&raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| EventError::InvalidField {
                    field: "timestamp",
                    reason: format!("{raw:?} is not RFC 3339: {e}"),
                })
        })
        .transpose()?;
    Ok(StatusEvent {
        job_id,
        status,
        error_message: optional_text("errorMessage", wire.error_message)?,
        generated_fields,
        timestamp,
        event_id: optional_text("eventId", wire.event_id)?,
    })
}

/// Where an event sat in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The part of a queue row that events change.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueState {
    pub status: QueueStatus,
    pub error_message: Option<String>,
    pub generated_fields: Option<Value>,
    pub completed_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub last_event_id: Option<String>,
    pub last_position: Option<Position>,
}

impl QueueState {
    pub fn pending() -> Self {
        QueueState {
            status: QueueStatus::Pending,
            error_message: None,
            generated_fields: None,
            completed_at: None,
            last_event_at: None,
            last_event_id: None,
            last_position: None,
        }
    }
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventApplied {
    Transitioned {
        from: QueueStatus,
        to: QueueStatus,
    },
    /// Same status; its details were brought up to date.
    Refreshed,
    /// Seen before (same event id, or an offset at or below the last applied one).
    Duplicate,
    /// Older than what the row already reflects.
    Stale,
    Refused(Refusal<QueueStatus>),
}

impl EventApplied {
    /// Whether the row took the event (and so a history row is due).
    pub fn took_effect(&self) -> bool {
        matches!(
            self,
            EventApplied::Transitioned { .. } | EventApplied::Refreshed
        )
    }
}

impl QueueState {
    /// Applies one event delivered at `position` and received at `received_at`.
    pub fn apply(
        &mut self,
        event: &StatusEvent,
        position: Option<&Position>,
        received_at: DateTime<Utc>,
    ) -> EventApplied {
        if self.already_seen(event, position) {
            return EventApplied::Duplicate;
        }
        if let (Some(at), Some(last)) = (event.timestamp, self.last_event_at) {
            if at < last {
                self.remember(event, position, None);
                return EventApplied::Stale;
            }
        }
        let at = event.timestamp.unwrap_or(received_at);
        let applied = match judge(self.status, event.status) {
            Verdict::Refuse(refusal) => {
                self.remember(event, position, None);
                return EventApplied::Refused(refusal);
            }
            Verdict::Same => EventApplied::Refreshed,
            Verdict::Advance { from, to } => {
                self.status = to;
                if to.is_terminal() {
                    self.completed_at.get_or_insert(at);
                }
                EventApplied::Transitioned { from, to }
            }
        };
        if event.error_message.is_some() {
            self.error_message.clone_from(&event.error_message);
        }
        if event.generated_fields.is_some() {
            self.generated_fields.clone_from(&event.generated_fields);
        }
        self.remember(event, position, Some(at));
        applied
    }

    fn already_seen(&self, event: &StatusEvent, position: Option<&Position>) -> bool {
        if let (Some(id), Some(last)) = (&event.event_id, &self.last_event_id) {
            if id == last {
                return true;
            }
        }
        match (position, &self.last_position) {
            (Some(p), Some(last)) => {
                p.topic == last.topic && p.partition == last.partition && p.offset <= last.offset
            }
            _ => false,
        }
    }

    fn remember(
        &mut self,
        event: &StatusEvent,
        position: Option<&Position>,
        applied_at: Option<DateTime<Utc>>,
    ) {
        if let Some(p) = position {
            self.last_position = Some(p.clone());
        }
        if event.event_id.is_some() {
            self.last_event_id.clone_from(&event.event_id);
        }
        if let Some(at) = applied_at {
            self.last_event_at = Some(self.last_event_at.map_or(at, |last| last.max(at)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const MAX: usize = 64 * 1024;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn event(status: QueueStatus, at: Option<i64>) -> StatusEvent {
        StatusEvent {
            job_id: "j1".into(),
            status,
            error_message: None,
            generated_fields: None,
            timestamp: at.map(t),
            event_id: None,
        }
    }

    fn pos(offset: i64) -> Position {
        Position {
            topic: "transformation-job-status".into(),
            partition: 0,
            offset,
        }
    }

    #[test]
    fn full_event_parses_with_case_insensitive_status() {
        let e = parse_event(
            br#"{"jobId":"j-7","status":"COMPLETED","errorMessage":null,
                "generatedFields":{"b":1,"a":[true]},"timestamp":"2026-11-28T10:00:00+01:00",
                "eventId":"e-1","extra":"ignored"}"#,
            MAX,
        )
        .unwrap();
        assert_eq!(e.job_id, "j-7");
        assert_eq!(e.status, QueueStatus::Completed);
        assert_eq!(
            e.timestamp,
            Some(Utc.with_ymd_and_hms(2026, 11, 28, 9, 0, 0).unwrap())
        );
        assert_eq!(e.event_id.as_deref(), Some("e-1"));
        assert_eq!(
            serde_json::to_string(&e.generated_fields.unwrap()).unwrap(),
            r#"{"b":1,"a":[true]}"#
        );
    }

    #[test]
    fn minimal_event_needs_only_job_id_and_status() {
        let e = parse_event(br#"{"jobId":"x","status":"processing"}"#, MAX).unwrap();
        assert_eq!(e.status, QueueStatus::Processing);
        assert_eq!(e.timestamp, None);
    }

    #[test]
    fn each_kind_of_bad_payload_has_its_own_error() {
        type Case<'a> = (&'a [u8], fn(&EventError) -> bool);
        let cases: [Case; 7] = [
            (b"not json", |e| matches!(e, EventError::NotJson(_))),
            (b"[1,2]", |e| matches!(e, EventError::NotJson(_))),
            (br#"{"status":"Completed"}"#, |e| {
                matches!(e, EventError::MissingJobId)
            }),
            (br#"{"jobId":"","status":"Completed"}"#, |e| {
                matches!(e, EventError::MissingJobId)
            }),
            (br#"{"jobId":"a","status":"Exploded"}"#, |e| {
                matches!(e, EventError::UnknownStatus(_))
            }),
            (
                br#"{"jobId":"a","status":"Completed","timestamp":"yesterday"}"#,
                |e| {
                    matches!(
                        e,
                        EventError::InvalidField {
                            field: "timestamp",
                            ..
                        }
                    )
                },
            ),
            (
                br#"{"jobId":"a","status":"Completed","generatedFields":5}"#,
                |e| {
                    matches!(
                        e,
                        EventError::InvalidField {
                            field: "generatedFields",
                            ..
                        }
                    )
                },
            ),
        ];
        for (payload, check) in cases {
            let err = parse_event(payload, MAX).unwrap_err();
            assert!(
                check(&err),
                "{:?} gave {err:?}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn oversized_payload_is_refused_before_parsing() {
        let payload = vec![b'x'; 101];
        assert_eq!(
            parse_event(&payload, 100),
            Err(EventError::TooLarge {
                size: 101,
                max: 100
            })
        );
    }

    #[test]
    fn redelivered_offset_changes_nothing() {
        let mut row = QueueState::pending();
        let e = event(QueueStatus::Processing, None);
        assert!(row.apply(&e, Some(&pos(5)), t(0)).took_effect());
        let before = row.clone();
        assert_eq!(row.apply(&e, Some(&pos(5)), t(9)), EventApplied::Duplicate);
        assert_eq!(row.apply(&e, Some(&pos(3)), t(9)), EventApplied::Duplicate);
        assert_eq!(row, before);
    }

    #[test]
    fn repeated_event_id_changes_nothing() {
        let mut row = QueueState::pending();
        let e = StatusEvent {
            event_id: Some("e1".into()),
            ..event(QueueStatus::Completed, None)
        };
        row.apply(&e, None, t(0));
        assert_eq!(row.apply(&e, None, t(5)), EventApplied::Duplicate);
    }

    #[test]
    fn older_event_does_not_overwrite_newer_state() {
        let mut row = QueueState::pending();
        row.apply(
            &StatusEvent {
                generated_fields: Some(serde_json::json!({"v": 2})),
                ..event(QueueStatus::Processing, Some(20))
            },
            None,
            t(30),
        );
        let applied = row.apply(
            &StatusEvent {
                generated_fields: Some(serde_json::json!({"v": 1})),
                ..event(QueueStatus::Processing, Some(10))
            },
            None,
            t(31),
        );
        assert_eq!(applied, EventApplied::Stale);
        assert_eq!(row.generated_fields, Some(serde_json::json!({"v": 2})));
    }

    #[test]
    fn completed_job_ignores_a_late_processing_event() {
        let mut row = QueueState::pending();
        row.apply(&event(QueueStatus::Completed, None), Some(&pos(1)), t(0));
        let applied = row.apply(&event(QueueStatus::Processing, None), Some(&pos(2)), t(1));
        assert!(matches!(
            applied,
            EventApplied::Refused(Refusal::AlreadyFinished { .. })
        ));
        assert_eq!(row.status, QueueStatus::Completed);
        assert_eq!(row.completed_at, Some(t(0)));
    }

    #[test]
    fn failure_keeps_its_error_message_and_completion_time() {
        let mut row = QueueState::pending();
        let applied = row.apply(
            &StatusEvent {
                error_message: Some("schema mismatch".into()),
                ..event(QueueStatus::Failed, Some(7))
            },
            None,
            t(100),
        );
        assert_eq!(
            applied,
            EventApplied::Transitioned {
                from: QueueStatus::Pending,
                to: QueueStatus::Failed
            }
        );
        assert_eq!(row.error_message.as_deref(), Some("schema mismatch"));
        assert_eq!(row.completed_at, Some(t(7)));
        assert_eq!(row.last_event_at, Some(t(7)));
    }
}
