//! Attempts of jobs jobwarden submits, as the JobStore applies them on SQLite, PostgreSQL and
//! MariaDB: recorded before the request, one per number, withdrawn without being spent,
//! retried by policy, cancelled and retried by an operator.

use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use entity::spark_job_attempts;
use jobwarden::actors::JobStore;
use jobwarden::domain::{Ending, JobStatus, Observation, RetryPolicy, SubmitSpec};
use jobwarden::events::Events;
use jobwarden::store_api::{
    ActionKind, AttemptChange, DueAction, DueActions, OpError, Source, StoreError, TrackRequest,
    Write, WriteOp, WriteOutcome,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::helpers::{rules, TestDb};
use crate::on_every_database;
use crate::worlds::{execution, t};

fn start_store(db: &TestDb) -> Addr<JobStore> {
    let settings = db.settings();
    let policy = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(60),
        retry_on: vec![
            Ending::Failed,
            Ending::Error,
            Ending::LostWorker,
            Ending::TimedOut,
        ],
    };
    JobStore::new(
        db.db.clone(),
        settings.store.clone(),
        rules(&settings).with_retry(policy),
        Events::default(),
    )
    .launch()
}

async fn write(store: &Addr<JobStore>, op: WriteOp) -> Result<WriteOutcome, StoreError> {
    store.send(Write(op)).await?
}

fn spec() -> SubmitSpec {
    SubmitSpec::from_json(r#"{"app_resource":"file:/jobs.jar","main_class":"Nightly"}"#).unwrap()
}

fn submit(id: &str) -> WriteOp {
    WriteOp::Track(TrackRequest {
        execution_id: id.into(),
        submission_id: None,
        job_name: Some(id.into()),
        cluster: None,
        source: Source::Api,
        spec: Some(spec()),
        after: Vec::new(),
        priority: 0,
        allowed: None,
    })
}

fn begin(id: &str, attempt: u32, at: i64) -> WriteOp {
    WriteOp::BeginAttempt {
        execution_id: id.into(),
        attempt,
        mark: format!("{id}:{attempt}:m{at}"),
        at: t(at),
        candidates: Vec::new(),
    }
}

fn submitted(id: &str, attempt: u32, driver: &str, at: i64) -> WriteOp {
    WriteOp::AttemptSubmitted {
        execution_id: id.into(),
        attempt,
        submission_id: driver.into(),
        at: t(at),
        recovered: false,
    }
}

fn observe(id: &str, status: JobStatus, raw: &str, message: Option<&str>, at: i64) -> WriteOp {
    WriteOp::Observe {
        asked: None,
        execution_id: id.into(),
        observation: Observation {
            status: Some(status),
            raw_state: Some(raw.into()),
            progress: None,
            message: message.map(str::to_owned),
            relaunching: false,
            successors: Vec::new(),
            at: t(at),
        },
    }
}

/// What the store says is due for jobwarden to do now.
async fn due_actions(store: &Addr<JobStore>) -> Vec<DueAction> {
    store
        .send(DueActions {
            now: Utc::now(),
            limit: 10,
        })
        .await
        .unwrap()
        .unwrap()
}

fn cancel(id: &str, at: i64) -> WriteOp {
    WriteOp::Cancel {
        execution_id: id.into(),
        at: t(at),
    }
}

fn retry(id: &str, at: i64) -> WriteOp {
    WriteOp::Retry {
        execution_id: id.into(),
        at: t(at),
    }
}

/// Attempt `attempt` of `id` begun at `at` and accepted by Spark as `driver` a second later.
async fn submit_attempt(store: &Addr<JobStore>, id: &str, attempt: u32, driver: &str, at: i64) {
    write(store, begin(id, attempt, at)).await.unwrap();
    write(store, submitted(id, attempt, driver, at + 1))
        .await
        .unwrap();
}

async fn attempts(db: &TestDb, id: &str) -> Vec<spark_job_attempts::Model> {
    spark_job_attempts::Entity::find()
        .filter(spark_job_attempts::Column::ExecutionId.eq(id))
        .order_by_asc(spark_job_attempts::Column::Attempt)
        .all(&db.db)
        .await
        .unwrap()
}

fn not_now(outcome: Result<WriteOutcome, StoreError>) -> bool {
    matches!(outcome, Err(StoreError::Refused(OpError::NotNow(_))))
}

on_every_database!(
    a_submitted_job_is_due_for_its_first_attempt_at_once,
    an_attempt_is_recorded_once_and_a_second_request_for_it_is_refused,
    a_failed_attempt_waits_for_its_retry_then_the_last_failure_ends_the_job,
    a_withdrawn_attempt_spends_nothing_and_is_due_again,
    a_refused_submission_puts_the_row_in_retrying_then_failed_not_only_its_history,
    an_attempt_in_flight_is_due_for_reconciliation_not_resubmission,
    a_cancel_of_a_waiting_job_ends_it_and_of_a_running_one_asks_for_a_kill,
    a_cancelled_jobs_failing_driver_is_not_retried,
    an_operator_retry_reopens_a_finished_job_for_one_more_attempt,
    a_job_waiting_for_jobwarden_is_never_timed_out_as_queued,
    a_late_answer_about_an_earlier_attempts_driver_changes_nothing,
);

async fn a_submitted_job_is_due_for_its_first_attempt_at_once(db: TestDb) {
    let store = start_store(&db);
    write(&store, submit("s1")).await.unwrap();
    let due = due_actions(&store).await;
    assert_eq!(due.len(), 1);
    match &due[0].kind {
        ActionKind::Submit {
            attempt, spec: s, ..
        } => {
            assert_eq!(*attempt, 1);
            assert_eq!(s, &spec());
        }
        other => panic!("{other:?}"),
    }
    let job = execution(&db, "s1").await;
    assert_eq!(job.status, "Queued");
    assert!(job.submit_spec.is_some() && job.submission_id.is_none());
}

async fn an_attempt_is_recorded_once_and_a_second_request_for_it_is_refused(db: TestDb) {
    let store = start_store(&db);
    write(&store, submit("s2")).await.unwrap();
    let now = Utc::now().timestamp() - 1_800_000_000 + 1;
    assert_eq!(
        write(&store, begin("s2", 1, now)).await.unwrap(),
        WriteOutcome::Attempt(AttemptChange::Begun { cluster: None })
    );
    // A second hand asking for the same attempt (another look, another instance) gets nothing.
    assert!(not_now(write(&store, begin("s2", 1, now)).await));
    assert!(not_now(write(&store, begin("s2", 2, now)).await));
    let recorded = attempts(&db, "s2").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].state, "requested");
    write(&store, submitted("s2", 1, "driver-1", now + 1))
        .await
        .unwrap();
    let job = execution(&db, "s2").await;
    assert_eq!(job.status, "Submitting");
    assert_eq!(job.submission_id.as_deref(), Some("driver-1"));
    assert_eq!(job.attempt, 1);
    assert_eq!(attempts(&db, "s2").await[0].state, "submitted");
}

async fn a_failed_attempt_waits_for_its_retry_then_the_last_failure_ends_the_job(db: TestDb) {
    let store = start_store(&db);
    write(&store, submit("s3")).await.unwrap();
    for attempt in 1..=3u32 {
        let at = i64::from(attempt) * 1_000;
        write(&store, begin("s3", attempt, at)).await.unwrap();
        write(
            &store,
            submitted("s3", attempt, &format!("driver-{attempt}"), at + 1),
        )
        .await
        .unwrap();
        write(
            &store,
            observe("s3", JobStatus::Running, "RUNNING", None, at + 2),
        )
        .await
        .unwrap();
        let why = format!("Caused by: boom {attempt}");
        write(
            &store,
            observe("s3", JobStatus::Failed, "FAILED", Some(&why), at + 3),
        )
        .await
        .unwrap();
        let job = execution(&db, "s3").await;
        if attempt < 3 {
            assert_eq!(job.status, "Retrying", "after attempt {attempt}");
            assert!(job.submission_id.is_none());
            assert!(job.completed_at.is_none());
            let next = job.next_attempt_at.unwrap();
            let delay = (next - t(at + 3)).num_seconds();
            let full = 10 * (1 << (attempt - 1));
            assert!(
                (full / 2..=full).contains(&delay),
                "attempt {attempt}: {delay}s"
            );
        } else {
            assert_eq!(job.status, "Failed");
            assert_eq!(job.error_message.as_deref(), Some("Caused by: boom 3"));
            assert!(job.next_attempt_at.is_none());
        }
    }
    let all = attempts(&db, "s3").await;
    let reasons: Vec<_> = all
        .iter()
        .map(|a| a.reason.clone().unwrap_or_else(|| format!("{a:?}")))
        .collect();
    assert_eq!(
        reasons,
        [
            "Caused by: boom 1",
            "Caused by: boom 2",
            "Caused by: boom 3"
        ]
    );
    assert!(all
        .iter()
        .all(|a| a.outcome.as_deref() == Some("failed") && a.started_at.is_some()));
}

async fn a_withdrawn_attempt_spends_nothing_and_is_due_again(db: TestDb) {
    let store = start_store(&db);
    write(&store, submit("s4")).await.unwrap();
    let now = Utc::now().timestamp() - 1_800_000_000 + 1;
    write(&store, begin("s4", 1, now)).await.unwrap();
    let outcome = write(
        &store,
        WriteOp::AttemptNotStarted {
            execution_id: "s4".into(),
            attempt: 1,
            at: t(now),
            reason: "Spark out of reach: connection refused".into(),
            counts: false,
            retry_at: t(now),
        },
    )
    .await
    .unwrap();
    assert_eq!(outcome, WriteOutcome::Attempt(AttemptChange::Withdrawn));
    let job = execution(&db, "s4").await;
    assert_eq!(job.attempt, 0);
    assert_eq!(job.status, "Queued");
    assert!(attempts(&db, "s4").await.is_empty());
    // The same number is asked for again.
    write(&store, begin("s4", 1, now + 1)).await.unwrap();
}

fn refused(id: &str, attempt: u32, at: i64) -> WriteOp {
    WriteOp::AttemptNotStarted {
        execution_id: id.into(),
        attempt,
        at: t(at),
        reason: "HTTP 400 Bad Request: Malformed request".into(),
        counts: true,
        retry_at: t(at),
    }
}

async fn a_refused_submission_puts_the_row_in_retrying_then_failed_not_only_its_history(
    db: TestDb,
) {
    let store = start_store(&db);
    write(&store, submit("s7")).await.unwrap();
    let now = Utc::now().timestamp() - 1_800_000_000 + 1;
    for attempt in 1..=3 {
        let at = now + 100 * i64::from(attempt);
        write(&store, begin("s7", attempt, at)).await.unwrap();
        let outcome = write(&store, refused("s7", attempt, at)).await.unwrap();
        assert!(
            matches!(outcome, WriteOutcome::Attempt(AttemptChange::Spent { .. })),
            "{outcome:?}"
        );
        let job = execution(&db, "s7").await;
        if attempt < 3 {
            assert_eq!(job.status, "Retrying", "after refusal {attempt}");
            assert!(job.next_attempt_at.is_some(), "the next attempt is due");
            let message = job.error_message.unwrap_or_default();
            assert!(message.contains("refused the submission"), "{message}");
        } else {
            assert_eq!(job.status, "Failed", "after the last refusal");
            assert!(job.completed_at.is_some() && job.next_attempt_at.is_none());
        }
    }
}

async fn an_attempt_in_flight_is_due_for_reconciliation_not_resubmission(db: TestDb) {
    let store = start_store(&db);
    write(&store, submit("s5")).await.unwrap();
    let now = Utc::now().timestamp() - 1_800_000_000 + 1;
    write(&store, begin("s5", 1, now)).await.unwrap();
    let due = due_actions(&store).await;
    assert_eq!(due.len(), 1);
    match &due[0].kind {
        ActionKind::Reconcile { attempt, mark, .. } => {
            assert_eq!(*attempt, 1);
            assert_eq!(mark, &format!("s5:1:m{now}"));
        }
        other => panic!("an attempt in flight must be reconciled, not sent again: {other:?}"),
    }
}

async fn a_cancel_of_a_waiting_job_ends_it_and_of_a_running_one_asks_for_a_kill(db: TestDb) {
    let store = start_store(&db);
    write(&store, submit("waiting")).await.unwrap();
    let ended = write(&store, cancel("waiting", 5)).await.unwrap();
    assert_eq!(
        ended,
        WriteOutcome::CancelTaken {
            ended: true,
            submission_id: None
        }
    );
    assert_eq!(execution(&db, "waiting").await.status, "Cancelled");
    assert!(not_now(write(&store, cancel("waiting", 6)).await));
    write(&store, submit("running")).await.unwrap();
    submit_attempt(&store, "running", 1, "driver-9", 10).await;
    let asked = write(&store, cancel("running", 12)).await.unwrap();
    assert_eq!(
        asked,
        WriteOutcome::CancelTaken {
            ended: false,
            submission_id: Some("driver-9".into())
        }
    );
    let job = execution(&db, "running").await;
    assert_eq!(job.status, "Submitting", "ends only when Spark says KILLED");
    assert!(job.cancel_requested_at.is_some());
    let due = due_actions(&store).await;
    assert!(due.iter().any(|a| a.execution_id == "running"
        && a.kind
            == ActionKind::Kill {
                submission_id: "driver-9".into()
            }));
    write(
        &store,
        observe("running", JobStatus::Cancelled, "KILLED", None, 13),
    )
    .await
    .unwrap();
    assert_eq!(execution(&db, "running").await.status, "Cancelled");
    assert_eq!(
        attempts(&db, "running").await[0].outcome.as_deref(),
        Some("cancelled")
    );
}

async fn a_cancelled_jobs_failing_driver_is_not_retried(db: TestDb) {
    let store = start_store(&db);
    write(&store, submit("c2")).await.unwrap();
    submit_attempt(&store, "c2", 1, "driver-c2", 10).await;
    write(&store, cancel("c2", 12)).await.unwrap();
    write(
        &store,
        observe(
            "c2",
            JobStatus::Failed,
            "FAILED",
            Some("killed mid-write"),
            13,
        ),
    )
    .await
    .unwrap();
    let job = execution(&db, "c2").await;
    assert_eq!(job.status, "Failed", "a cancel asked for is never retried");
    assert!(job.next_attempt_at.is_none());
}

async fn an_operator_retry_reopens_a_finished_job_for_one_more_attempt(db: TestDb) {
    let store = start_store(&db);
    write(&store, submit("r1")).await.unwrap();
    write(&store, cancel("r1", 1)).await.unwrap();
    let taken = write(&store, retry("r1", 2)).await.unwrap();
    assert_eq!(taken, WriteOutcome::RetryTaken { attempt: 1 });
    let job = execution(&db, "r1").await;
    assert_eq!(job.status, "Retrying");
    assert!(job.cancel_requested_at.is_none() && job.completed_at.is_none());
    // A job someone else submitted cannot be started again by jobwarden.
    write(
        &store,
        WriteOp::Track(TrackRequest {
            execution_id: "theirs".into(),
            submission_id: Some("driver-x".into()),
            job_name: None,
            cluster: None,
            source: Source::Api,
            spec: None,
            after: Vec::new(),
            priority: 0,
            allowed: None,
        }),
    )
    .await
    .unwrap();
    assert!(not_now(write(&store, retry("theirs", 3)).await));
}

async fn a_job_waiting_for_jobwarden_is_never_timed_out_as_queued(db: TestDb) {
    let store = start_store(&db);
    write(&store, submit("q1")).await.unwrap();
    // Far past queued_timeout (1h by default).
    let outcome = write(
        &store,
        WriteOp::TimeOut {
            execution_id: "q1".into(),
            now: Utc::now() + chrono::Duration::hours(5),
        },
    )
    .await
    .unwrap();
    assert!(!outcome.transitioned(), "{outcome:?}");
    assert_eq!(execution(&db, "q1").await.status, "Queued");
}

async fn a_late_answer_about_an_earlier_attempts_driver_changes_nothing(db: TestDb) {
    let store = start_store(&db);
    write(&store, submit("late")).await.unwrap();
    submit_attempt(&store, "late", 1, "driver-old", 10).await;
    write(
        &store,
        observe("late", JobStatus::Failed, "FAILED", Some("boom"), 12),
    )
    .await
    .unwrap();
    submit_attempt(&store, "late", 2, "driver-new", 100).await;
    // A poll of the first driver, sent before it failed, answers now.
    let mut late = observe("late", JobStatus::Running, "RUNNING", None, 102);
    if let WriteOp::Observe { asked, .. } = &mut late {
        *asked = Some("driver-old".into());
    }
    write(&store, late).await.unwrap();
    let job = execution(&db, "late").await;
    assert_eq!(job.status, "Submitting");
    assert_eq!(job.submission_id.as_deref(), Some("driver-new"));
    assert!(job.spark_state.is_none(), "{job:?}");
    assert!(attempts(&db, "late").await[1].started_at.is_none());
}
