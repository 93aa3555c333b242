//! The JobStore and the schema on SQLite, PostgreSQL and MariaDB over real connections.

use std::time::Duration;

use actix::prelude::*;
use chrono::{TimeZone, Utc};
use entity::prelude::*;
use entity::{dead_letters, job_status_history, spark_job_executions};
use futures::future::join_all;
use jobwarden::actors::JobStore;
use jobwarden::domain::{
    Applied, EventApplied, JobStatus, Observation, Position, QueueStatus, Refusal, StatusEvent,
};
use jobwarden::events::Events;
use jobwarden::store::{self, read};
use jobwarden::store_api::{
    Drain, DueJobs, GetStats, NewDeadLetter, OpError, Source, StoreError, SweepTimeouts,
    TrackRequest, Write, WriteOp, WriteOutcome,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    TransactionTrait,
};

use crate::helpers::{
    launch_store, rules, settings_for, socket_of, wait_until, Backend, CutProxy, TestDb,
};
use crate::on_every_database;
use crate::worlds::{execution, observed, t};

fn start_store(db: &TestDb) -> Addr<JobStore> {
    launch_store(db.db.clone(), &db.settings())
}

/// Everything due now, first page.
fn due_now() -> DueJobs {
    DueJobs {
        now: Utc::now(),
        polled_before: Utc::now(),
        after: None,
        limit: 10,
    }
}

async fn write(store: &Addr<JobStore>, op: WriteOp) -> Result<WriteOutcome, StoreError> {
    store.send(Write(op)).await?
}

fn track(id: &str, submission: &str) -> WriteOp {
    WriteOp::Track(TrackRequest {
        spec: None,
        execution_id: id.into(),
        submission_id: Some(submission.into()),
        job_name: Some(format!("job {id}")),
        cluster: None,
        source: Source::Api,
        after: Vec::new(),
        priority: 0,
        allowed: None,
    })
}

async fn history(db: &TestDb, kind: &str, id: &str) -> Vec<job_status_history::Model> {
    JobStatusHistory::find()
        .filter(job_status_history::Column::JobKind.eq(kind))
        .filter(job_status_history::Column::JobId.eq(id))
        .order_by_asc(job_status_history::Column::Id)
        .all(&db.db)
        .await
        .unwrap()
}

on_every_database!(
    migrations_are_idempotent,
    tracked_executions_are_due_page_by_page_in_id_order,
    finished_job_ignores_late_and_duplicate_observations,
    transitions_set_timestamps_once_and_write_history,
    thousand_changes_sent_at_once_share_few_transactions,
    refused_change_does_not_sink_its_batch,
    poll_failure_never_changes_status,
    row_inserted_by_a_submitter_is_supervised,
    status_event_for_unknown_job_creates_the_row,
    redelivered_status_event_changes_nothing,
    dead_letter_keeps_payload_byte_exact_and_is_stored_once,
    drain_waits_for_pending_changes,
    each_jobs_changes_commit_in_the_order_sent_with_batches_side_by_side,
    text_numbers_and_instants_read_back_exactly_as_written,
    a_sweep_reaches_an_old_waiting_job_behind_a_page_of_young_ones,
);

/// More young Queued jobs than one sweep reads (10,000), all ahead of an old one in id order:
/// the sweep still ends the old one, and only it.
async fn a_sweep_reaches_an_old_waiting_job_behind_a_page_of_young_ones(db: TestDb) {
    let now = Utc::now();
    let row = |id: String, created_at| spark_job_executions::ActiveModel {
        execution_id: sea_orm::Set(id),
        status: sea_orm::Set(JobStatus::Queued.as_str().into()),
        created_at: sea_orm::Set(created_at),
        updated_at: sea_orm::Set(created_at),
        ..Default::default()
    };
    let young: Vec<_> = (0..10_001).map(|i| row(format!("a-{i:05}"), now)).collect();
    for chunk in young.chunks(500) {
        SparkJobExecutions::insert_many(chunk.to_vec())
            .exec_without_returning(&db.db)
            .await
            .unwrap();
    }
    SparkJobExecutions::insert(row("z-old".into(), now - chrono::Duration::hours(2)))
        .exec_without_returning(&db.db)
        .await
        .unwrap();
    let store = start_store(&db);
    assert_eq!(store.send(SweepTimeouts { now }).await.unwrap(), Ok(1));
    let old = execution(&db, "z-old").await;
    assert_eq!(old.status, "Failed");
    assert!(
        old.error_message.unwrap().contains("queued_timeout"),
        "the reason names the rule"
    );
    assert_eq!(execution(&db, "a-00000").await.status, "Queued");
}

async fn migrations_are_idempotent(db: TestDb) {
    assert_eq!(store::migrate(&db.db).await.unwrap(), 0);
    for count in [
        SparkJobExecutions::find().count(&db.db).await.unwrap(),
        TransformationJobQueue::find().count(&db.db).await.unwrap(),
        JobStatusHistory::find().count(&db.db).await.unwrap(),
        DeadLetters::find().count(&db.db).await.unwrap(),
    ] {
        assert_eq!(count, 0);
    }
}

async fn tracked_executions_are_due_page_by_page_in_id_order(db: TestDb) {
    let store = start_store(&db);
    assert_eq!(
        write(&store, track("e2", "driver-2")).await,
        Ok(WriteOutcome::Tracked { created: true })
    );
    write(&store, track("e1", "driver-1")).await.unwrap();
    let first = store
        .send(DueJobs {
            limit: 1,
            ..due_now()
        })
        .await
        .unwrap()
        .unwrap();
    let first = first.jobs;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].execution_id, "e1");
    assert_eq!(first[0].submission_id, "driver-1");
    let second = store
        .send(DueJobs {
            after: Some("e1".into()),
            ..due_now()
        })
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<_> = second
        .jobs
        .iter()
        .map(|j| j.execution_id.as_str())
        .collect();
    assert_eq!(ids, ["e2"], "the page after e1 holds only what follows it");
}

async fn finished_job_ignores_late_and_duplicate_observations(db: TestDb) {
    let store = start_store(&db);
    write(&store, track("e1", "driver-1")).await.unwrap();
    write(&store, observed("e1", JobStatus::Running, 1))
        .await
        .unwrap();
    write(&store, observed("e1", JobStatus::Succeeded, 2))
        .await
        .unwrap();
    let finished = execution(&db, "e1").await;

    let late = write(&store, observed("e1", JobStatus::Running, 3))
        .await
        .unwrap();
    assert!(matches!(
        late,
        WriteOutcome::Execution(Applied::Refused(Refusal::AlreadyFinished { .. }))
    ));
    let duplicate = write(&store, observed("e1", JobStatus::Succeeded, 4))
        .await
        .unwrap();
    assert_eq!(duplicate, WriteOutcome::Execution(Applied::Refreshed));
    let failed = write(&store, observed("e1", JobStatus::Failed, 5))
        .await
        .unwrap();
    assert!(matches!(
        failed,
        WriteOutcome::Execution(Applied::Refused(_))
    ));

    let row = execution(&db, "e1").await;
    assert_eq!(row.status, "Succeeded");
    assert_eq!(row.completed_at, finished.completed_at);
    assert_eq!(row.progress, 100);
    assert_eq!(
        history(&db, "spark", "e1").await.len(),
        3,
        "Queued, Running, Succeeded only"
    );
    let due = read::due_executions(&db.db, &due_now()).await.unwrap();
    assert!(due.is_empty(), "a finished job is never polled again");
}

async fn transitions_set_timestamps_once_and_write_history(db: TestDb) {
    let store = start_store(&db);
    write(&store, track("e1", "driver-1")).await.unwrap();
    write(&store, observed("e1", JobStatus::Submitting, 1))
        .await
        .unwrap();
    write(&store, observed("e1", JobStatus::Running, 2))
        .await
        .unwrap();
    write(&store, observed("e1", JobStatus::Running, 3))
        .await
        .unwrap();
    write(
        &store,
        WriteOp::Observe {
            asked: None,
            execution_id: "e1".into(),
            observation: Observation {
                status: Some(JobStatus::Failed),
                raw_state: Some("ERROR".into()),
                relaunching: false,
                successors: Vec::new(),
                progress: None,
                message: Some("java.lang.ClassNotFoundException: Main".into()),
                at: t(4),
            },
        },
    )
    .await
    .unwrap();
    let row = execution(&db, "e1").await;
    assert_eq!(row.submitted_at, Some(t(1)));
    assert_eq!(row.started_at, Some(t(2)));
    assert_eq!(row.completed_at, Some(t(4)));
    assert_eq!(row.status, "Failed");
    assert_eq!(row.spark_state.as_deref(), Some("ERROR"));
    assert_eq!(
        row.error_message.as_deref(),
        Some("java.lang.ClassNotFoundException: Main")
    );
    let steps: Vec<(Option<String>, String, String)> = history(&db, "spark", "e1")
        .await
        .into_iter()
        .map(|h| (h.from_status, h.to_status, h.source))
        .collect();
    assert_eq!(
        steps,
        vec![
            (None, "Queued".into(), "api".into()),
            (
                Some("Queued".into()),
                "Submitting".into(),
                "spark_poll".into()
            ),
            (
                Some("Submitting".into()),
                "Running".into(),
                "spark_poll".into()
            ),
            (Some("Running".into()), "Failed".into(), "spark_poll".into()),
        ]
    );
}

async fn thousand_changes_sent_at_once_share_few_transactions(db: TestDb) {
    let store = start_store(&db);
    let tracks =
        (0..1000).map(|i| store.send(Write(track(&format!("e{i}"), &format!("driver-{i}")))));
    for result in join_all(tracks).await {
        assert_eq!(result.unwrap(), Ok(WriteOutcome::Tracked { created: true }));
    }
    let before = store.send(GetStats).await.unwrap();

    let observations =
        (0..1000).map(|i| store.send(Write(observed(&format!("e{i}"), JobStatus::Running, 1))));
    let results = join_all(observations).await;
    let after = store.send(GetStats).await.unwrap();

    for result in results {
        assert!(matches!(
            result.unwrap(),
            Ok(WriteOutcome::Execution(Applied::Transitioned { .. }))
        ));
    }
    let transactions = after.transactions - before.transactions;
    assert!(
        transactions <= 20,
        "1000 changes took {transactions} transactions (largest batch {})",
        after.largest_batch
    );
    // Every acknowledged change is really in the database.
    let running = SparkJobExecutions::find()
        .filter(spark_job_executions::Column::Status.eq("Running"))
        .count(&db.db)
        .await
        .unwrap();
    assert_eq!(running, 1000);
    assert_eq!(JobStatusHistory::find().count(&db.db).await.unwrap(), 2000);
}

async fn each_jobs_changes_commit_in_the_order_sent_with_batches_side_by_side(db: TestDb) {
    let store = start_store(&db);
    let ids: Vec<String> = (0..300).map(|i| format!("e{i}")).collect();
    let tracks = ids
        .iter()
        .map(|id| write(&store, track(id, &format!("driver-{id}"))));
    assert!(join_all(tracks).await.iter().all(Result::is_ok));

    // Every job's Running and then its Succeeded, interleaved with the other jobs', all in
    // the store's queue at once: the two reports of one job must never cross.
    let reports = [JobStatus::Running, JobStatus::Succeeded]
        .into_iter()
        .enumerate()
        .flat_map(|(n, status)| ids.iter().map(move |id| (id, status, n as i64 + 1)));
    let written = join_all(reports.map(|(id, status, at)| write(&store, observed(id, status, at))));
    for result in written.await {
        assert!(matches!(
            result,
            Ok(WriteOutcome::Execution(Applied::Transitioned { .. }))
        ));
    }

    let mut seen: std::collections::HashMap<String, Vec<String>> = Default::default();
    for row in JobStatusHistory::find()
        .filter(job_status_history::Column::JobKind.eq("spark"))
        .order_by_asc(job_status_history::Column::Id)
        .all(&db.db)
        .await
        .unwrap()
    {
        seen.entry(row.job_id).or_default().push(row.to_status);
    }
    for id in &ids {
        assert_eq!(
            seen[id],
            ["Queued", "Running", "Succeeded"],
            "history of {id}"
        );
    }
    let stats = store.send(GetStats).await.unwrap();
    match db.backend {
        // One writer: SQLite never has two transactions writing at once.
        Backend::Sqlite => assert_eq!(stats.most_in_flight, 1),
        _ => assert_eq!(
            stats.most_in_flight, 2,
            "a server database writes two batches side by side"
        ),
    }
}

async fn refused_change_does_not_sink_its_batch(db: TestDb) {
    let store = start_store(&db);
    write(&store, track("e1", "driver-1")).await.unwrap();
    let (dup, fresh, unknown) = futures::join!(
        write(&store, track("e1", "driver-9")),
        write(&store, track("e2", "driver-2")),
        write(&store, observed("nope", JobStatus::Running, 1)),
    );
    assert_eq!(
        dup,
        Err(StoreError::Refused(OpError::Duplicate {
            execution_id: "e1".into()
        }))
    );
    assert_eq!(fresh, Ok(WriteOutcome::Tracked { created: true }));
    assert!(matches!(
        unknown,
        Err(StoreError::Refused(OpError::UnknownExecution { .. }))
    ));
    assert_eq!(
        execution(&db, "e1").await.submission_id.as_deref(),
        Some("driver-1")
    );
}

async fn poll_failure_never_changes_status(db: TestDb) {
    let store = start_store(&db);
    write(&store, track("e1", "driver-1")).await.unwrap();
    write(&store, observed("e1", JobStatus::Running, 1))
        .await
        .unwrap();
    for i in 0..3 {
        write(
            &store,
            WriteOp::PollFailed {
                asked: None,
                execution_id: "e1".into(),
                at: t(10 + i),
                error: "connection refused".into(),
                outage: false,
            },
        )
        .await
        .unwrap();
    }
    let row = execution(&db, "e1").await;
    assert_eq!(row.status, "Running");
    assert_eq!(row.consecutive_poll_failures, 3);
    assert_eq!(row.last_poll_error.as_deref(), Some("connection refused"));
    // Third failure at t(12): the shipped 15s interval doubled twice.
    assert_eq!(row.next_poll_at, Some(t(72)));
    assert_eq!(row.last_confirmed_at, Some(t(1)));

    write(&store, observed("e1", JobStatus::Running, 20))
        .await
        .unwrap();
    let row = execution(&db, "e1").await;
    assert_eq!(row.consecutive_poll_failures, 0);
    assert_eq!(row.last_poll_error, None);
    assert_eq!(row.next_poll_at, None);
}

async fn row_inserted_by_a_submitter_is_supervised(db: TestDb) {
    // A submitter writes only what it knows; the defaults must make the row usable.
    db.db
        .execute_unprepared(
            "INSERT INTO spark_job_executions (execution_id, job_name, submission_id) \
             VALUES ('ext-1', 'nightly', 'driver-77')",
        )
        .await
        .unwrap();
    let row = execution(&db, "ext-1").await;
    assert_eq!(row.status, "Queued");
    assert_eq!(row.progress, 0);
    let due = read::due_executions(&db.db, &due_now()).await.unwrap();
    assert_eq!(due.len(), 1);
    let store = start_store(&db);
    write(&store, observed("ext-1", JobStatus::Running, 1))
        .await
        .unwrap();
    assert_eq!(execution(&db, "ext-1").await.status, "Running");
}

fn event(job: &str, status: QueueStatus) -> StatusEvent {
    StatusEvent {
        job_id: job.into(),
        status,
        error_message: None,
        generated_fields: None,
        timestamp: None,
        event_id: None,
    }
}

fn at_offset(offset: i64) -> Option<Position> {
    Some(Position {
        topic: "transformation-job-status".into(),
        partition: 2,
        offset,
    })
}

async fn status_event_for_unknown_job_creates_the_row(db: TestDb) {
    let store = start_store(&db);
    let outcome = write(
        &store,
        WriteOp::QueueEvent {
            event: StatusEvent {
                generated_fields: Some(serde_json::json!({"zeta": 1, "alpha": [1, 2]})),
                ..event("q1", QueueStatus::Completed)
            },
            position: at_offset(7),
            received_at: t(1),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        outcome,
        WriteOutcome::Queue(EventApplied::Transitioned {
            from: QueueStatus::Pending,
            to: QueueStatus::Completed
        })
    );
    let row = TransformationJobQueue::find_by_id("q1".to_owned())
        .one(&db.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "Completed");
    assert_eq!(row.completed_at, Some(t(1)));
    assert_eq!(row.last_offset, Some(7));
    assert_eq!(row.last_partition, Some(2));
    assert_eq!(
        row.generated_fields,
        Some(serde_json::json!({"zeta": 1, "alpha": [1, 2]}))
    );
    let steps = history(&db, "queue", "q1").await;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].source, "kafka_event");
}

/// Rows go out in multi-row statements (history rows on PostgreSQL as one JSON parameter):
/// whatever the form, every value must come back as it went in.
async fn text_numbers_and_instants_read_back_exactly_as_written(db: TestDb) {
    let store = start_store(&db);
    let at = Utc.timestamp_opt(1_800_000_000, 123_456_000).unwrap();
    let fields = serde_json::json!({
        "zeta": "quote \" backslash \\ tab \t é 雪 🚀",
        "alpha": [9007199254740993_i64, -1.5e-7, null, true],
        "nested": {"empty": {}, "list": []},
    });
    let message = "line one\nline 'two' \"three\" \\ done";
    // More jobs than one multi-row statement holds, all sent at once.
    let ids: Vec<String> = (0..700).map(|i| format!("exact-{i}")).collect();
    let writes = ids.iter().map(|id| {
        write(
            &store,
            WriteOp::QueueEvent {
                event: StatusEvent {
                    error_message: Some(message.into()),
                    generated_fields: Some(fields.clone()),
                    ..event(id, QueueStatus::Failed)
                },
                position: at_offset(i64::MAX - 1),
                received_at: at,
            },
        )
    });
    assert!(join_all(writes).await.iter().all(Result::is_ok));
    for id in [&ids[0], &ids[499], &ids[699]] {
        let row = TransformationJobQueue::find_by_id(id.clone())
            .one(&db.db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.generated_fields.as_ref(), Some(&fields), "{id}");
        assert_eq!(row.error_message.as_deref(), Some(message), "{id}");
        assert_eq!(row.completed_at, Some(at), "{id}");
        assert_eq!(row.last_offset, Some(i64::MAX - 1), "{id}");
        assert_eq!(row.last_event_id, None, "{id}");
        let steps = history(&db, "queue", id).await;
        assert_eq!(steps.len(), 1, "{id}");
        assert_eq!(steps[0].from_status.as_deref(), Some("Pending"), "{id}");
        assert_eq!(steps[0].to_status, "Failed", "{id}");
        assert_eq!(steps[0].at, at, "{id}");
    }
}

async fn redelivered_status_event_changes_nothing(db: TestDb) {
    let store = start_store(&db);
    let deliver = |status, offset| WriteOp::QueueEvent {
        event: event("q1", status),
        position: at_offset(offset),
        received_at: t(offset),
    };
    write(&store, deliver(QueueStatus::Processing, 1))
        .await
        .unwrap();
    write(&store, deliver(QueueStatus::Completed, 2))
        .await
        .unwrap();
    let again = write(&store, deliver(QueueStatus::Processing, 1))
        .await
        .unwrap();
    assert_eq!(again, WriteOutcome::Queue(EventApplied::Duplicate));
    let late = write(&store, deliver(QueueStatus::Processing, 3))
        .await
        .unwrap();
    assert!(matches!(
        late,
        WriteOutcome::Queue(EventApplied::Refused(_))
    ));
    let row = TransformationJobQueue::find_by_id("q1".to_owned())
        .one(&db.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "Completed");
    assert_eq!(history(&db, "queue", "q1").await.len(), 2);
}

async fn dead_letter_keeps_payload_byte_exact_and_is_stored_once(db: TestDb) {
    let store = start_store(&db);
    // Not UTF-8, with a NUL and every byte value, and larger than MySQL's plain BLOB.
    let mut payload: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    payload.extend_from_slice(b"\xff\xfe{not json");
    let letter = NewDeadLetter {
        source: "kafka".into(),
        topic: Some("transformation-job-status".into()),
        partition: Some(1),
        offset: Some(42),
        key: Some(vec![0, 1, 2]),
        payload: payload.clone(),
        error: "payload is not a JSON object".into(),
        received_at: t(1),
    };
    assert_eq!(
        write(&store, WriteOp::DeadLetter(letter.clone())).await,
        Ok(WriteOutcome::DeadLettered { duplicate: false })
    );
    assert_eq!(
        write(&store, WriteOp::DeadLetter(letter)).await,
        Ok(WriteOutcome::DeadLettered { duplicate: true })
    );
    let rows = DeadLetters::find().all(&db.db).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row: &dead_letters::Model = &rows[0];
    assert_eq!(row.payload, payload);
    assert_eq!(row.key.as_deref(), Some(&[0u8, 1, 2][..]));
    assert_eq!(row.offset, Some(42));
}

async fn drain_waits_for_pending_changes(db: TestDb) {
    let store = start_store(&db);
    let writes: Vec<_> = (0..200)
        .map(|i| store.send(Write(track(&format!("e{i}"), "driver"))))
        .collect();
    store.send(Drain).await.unwrap();
    assert_eq!(SparkJobExecutions::find().count(&db.db).await.unwrap(), 200);
    for w in join_all(writes).await {
        assert!(w.unwrap().is_ok());
    }
}

/// How often `table` was analyzed by hand (not by autovacuum), as PostgreSQL counts it.
async fn analyze_count(db: &TestDb, table: &str) -> i64 {
    db.db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            format!("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = '{table}'"),
        ))
        .await
        .unwrap()
        .expect("the table exists")
        .try_get::<i64>("", "analyze_count")
        .unwrap()
}

/// A table that grows from empty is analyzed by the store as it grows, so the plans PostgreSQL
/// cached while it was nearly empty (whole-table scans) are made again.
#[actix_rt::test]
async fn postgres_tables_growing_from_empty_are_analyzed_as_they_grow() {
    let Some(db) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    let store = start_store(&db);
    let tracks = (0..1_100).map(|i| write(&store, track(&format!("e{i}"), &format!("d-{i}"))));
    assert!(join_all(tracks).await.iter().all(Result::is_ok));
    // At 1,000 new executions, and history rows alike.
    let analyzed = |table: &'static str| analyze_count(&db, table);
    for table in ["spark_job_executions", "job_status_history"] {
        wait_until(
            Duration::from_secs(30),
            &format!("{table} to be analyzed"),
            || async move { analyzed(table).await == 1 },
        )
        .await;
    }
    assert_eq!(
        analyzed("transformation_job_queue").await,
        0,
        "a table that did not grow is left alone"
    );
    db.drop_database().await;
}

/// A table PostgreSQL already knows to be big is not analyzed again: its plans are sound, and
/// on a big table an ANALYZE can take a second of the server's time.
#[actix_rt::test]
async fn postgres_tables_the_planner_knows_to_be_big_are_not_analyzed_again() {
    let Some(db) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    db.db
        .execute_unprepared(
            "INSERT INTO spark_job_executions (execution_id, submission_id) \
             SELECT 'old-' || g, 'driver-old-' || g FROM generate_series(1, 5000) AS g; \
             ANALYZE spark_job_executions",
        )
        .await
        .unwrap();
    let store = start_store(&db);
    let tracks = (0..1_100).map(|i| write(&store, track(&format!("e{i}"), &format!("d-{i}"))));
    assert!(join_all(tracks).await.iter().all(Result::is_ok));
    let analyzed = |table: &'static str| analyze_count(&db, table);
    // The history table was empty: it is analyzed, and by then the look at the executions
    // table (due at the same batch) has been taken too.
    wait_until(
        Duration::from_secs(30),
        "job_status_history to be analyzed",
        || async move { analyzed("job_status_history").await == 1 },
    )
    .await;
    assert_eq!(
        analyzed("spark_job_executions").await,
        1,
        "only our own ANALYZE"
    );
    db.drop_database().await;
}

/// The database vanishes mid-flight (every connection cut, new ones refused): changes are
/// held, not lost and not failed, and land once it is back.
async fn changes_survive_a_database_outage(backend: Backend) {
    let Some(db) = TestDb::fresh(backend).await else {
        return;
    };
    let proxy = CutProxy::start(socket_of(&db.url)).await;
    let mut settings = settings_for(&proxy.url_through(&db.url));
    settings.database.connect_timeout = Duration::from_millis(500);
    let conn = store::connect(&settings.database).await.unwrap();
    let job_store = JobStore::new(
        conn,
        settings.store.clone(),
        rules(&settings),
        Events::default(),
    );
    let health = job_store.health();
    let store = job_store.launch();
    write(&store, track("before", "driver-0")).await.unwrap();

    proxy.cut();
    let during: Vec<_> = (0..50)
        .map(|i| store.send(Write(track(&format!("during-{i}"), "driver"))))
        .collect();
    let during = actix_rt::spawn(join_all(during));
    wait_until(
        Duration::from_secs(20),
        "the store to notice the outage",
        || {
            let health = health.clone();
            async move { !health.database_up() }
        },
    )
    .await;
    assert!(
        !during.is_finished(),
        "no change may be acknowledged while the database is away"
    );

    proxy.restore();
    let results = during.await.unwrap();
    for r in results {
        assert_eq!(r.unwrap(), Ok(WriteOutcome::Tracked { created: true }));
    }
    assert!(health.database_up());
    assert_eq!(SparkJobExecutions::find().count(&db.db).await.unwrap(), 51);
    let stats = store.send(GetStats).await.unwrap();
    assert!(stats.retries > 0);
    db.drop_database().await;
}

#[actix_rt::test]
async fn changes_survive_a_postgres_outage() {
    changes_survive_a_database_outage(Backend::Postgres).await;
}

#[actix_rt::test]
async fn changes_survive_a_mariadb_outage() {
    changes_survive_a_database_outage(Backend::MariaDb).await;
}

/// The TCP sockets this process holds open to `port` on a peer, with whether each has
/// `TCP_NODELAY` set.
fn tcp_nodelay_to(port: u16) -> Vec<bool> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<libc::c_int>() else {
            continue;
        };
        // SAFETY: `fd` is one of this process's descriptors (it may close meanwhile: then the
        // calls fail and it is skipped); both buffers are live locals of the sizes given.
        unsafe {
            let mut peer: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if libc::getpeername(
                fd,
                (&mut peer as *mut libc::sockaddr_storage).cast(),
                &mut len,
            ) != 0
            {
                continue;
            }
            let peer_port = match i32::from(peer.ss_family) {
                libc::AF_INET => {
                    let v4 = &*(&peer as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                    u16::from_be(v4.sin_port)
                }
                libc::AF_INET6 => {
                    let v6 =
                        &*(&peer as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                    u16::from_be(v6.sin6_port)
                }
                _ => continue,
            };
            if peer_port != port {
                continue;
            }
            let mut on: libc::c_int = 0;
            let mut size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&mut on as *mut libc::c_int).cast(),
                &mut size,
            ) == 0
            {
                found.push(on != 0);
            }
        }
    }
    found
}

/// Nagle's algorithm on a database socket stalls each multi-message exchange by ~40 ms: every
/// connection the store opens over TCP must have it off.
async fn database_sockets_are_opened_with_tcp_nodelay(backend: Backend) {
    let Some(db) = TestDb::fresh(backend).await else {
        return;
    };
    let port = socket_of(&db.url).port();
    let store = start_store(&db);
    write(&store, track("e1", "driver-1")).await.unwrap();
    let sockets = tcp_nodelay_to(port);
    assert!(
        !sockets.is_empty(),
        "no TCP connection to port {port} found"
    );
    assert!(
        sockets.iter().all(|on| *on),
        "{} of {} connections to port {port} lack TCP_NODELAY",
        sockets.iter().filter(|on| !**on).count(),
        sockets.len()
    );
    db.drop_database().await;
}

#[actix_rt::test]
async fn postgres_sockets_are_opened_with_tcp_nodelay() {
    database_sockets_are_opened_with_tcp_nodelay(Backend::Postgres).await;
}

#[actix_rt::test]
async fn mariadb_sockets_are_opened_with_tcp_nodelay() {
    database_sockets_are_opened_with_tcp_nodelay(Backend::MariaDb).await;
}

/// Two instances apply events of one new job at once (a partition briefly read by both around
/// a rebalance): the one that commits second must see the other's row, not overwrite it with
/// its older event.
async fn a_new_job_written_by_another_transaction_meanwhile_is_not_overwritten(db: TestDb) {
    if db.backend == Backend::Sqlite {
        // One instance per SQLite file: no other writer can get in between.
        return;
    }
    let store = start_store(&db);
    let other = db.db.begin().await.unwrap();
    let mut newer = TransformationJobQueue::find().one(&db.db).await.unwrap();
    assert!(newer.is_none());
    other
        .execute_unprepared(
            "INSERT INTO transformation_job_queue (job_id, status, last_topic, last_partition, last_offset, last_event_at, created_at, updated_at) \
             VALUES ('q-race', 'Processing', 'transformation-job-status', 2, 5, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        )
        .await
        .unwrap();
    // The store's batch for the older event now waits on the other transaction's new row.
    let older = store.send(Write(WriteOp::QueueEvent {
        event: event("q-race", QueueStatus::Pending),
        position: at_offset(4),
        received_at: t(4),
    }));
    let waiting = actix_rt::spawn(older);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the second writer waits for the first"
    );
    other.commit().await.unwrap();
    waiting.await.unwrap().unwrap().unwrap();
    newer = TransformationJobQueue::find_by_id("q-race".to_owned())
        .one(&db.db)
        .await
        .unwrap();
    let row = newer.expect("the row");
    assert_eq!(row.status, "Processing", "the older event did not win");
    assert_eq!(row.last_offset, Some(5));
    if db.backend == Backend::Postgres {
        // PostgreSQL inserts a new job's row only if still absent; finding it taken, the
        // batch ran again and read it.
        let stats = store.send(GetStats).await.unwrap();
        assert_eq!(stats.retries, 1);
    }
}

on_every_database!(a_new_job_written_by_another_transaction_meanwhile_is_not_overwritten);

/// Two writers tracking the same new execution id at once (say, two instances answering the
/// same API call): the second never overwrites the first's row, and is told it is a duplicate.
/// PostgreSQL inserts a new row only if still absent, and runs the batch again when it is not.
#[actix_rt::test]
async fn postgres_a_new_execution_inserted_by_another_transaction_meanwhile_is_not_overwritten() {
    let Some(db) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    let store = start_store(&db);
    let other = db.db.begin().await.unwrap();
    other
        .execute_unprepared(
            "INSERT INTO spark_job_executions (execution_id, submission_id, job_name) \
             VALUES ('e-race', 'driver-theirs', 'theirs')",
        )
        .await
        .unwrap();
    let ours = actix_rt::spawn(store.send(Write(track("e-race", "driver-ours"))));
    // Ours waits on their uncommitted row: PostgreSQL holds the insert until they finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ours.is_finished(), "the second writer waits for the first");
    other.commit().await.unwrap();
    assert_eq!(
        ours.await.unwrap().unwrap(),
        Err(StoreError::Refused(OpError::Duplicate {
            execution_id: "e-race".into()
        }))
    );
    let row = execution(&db, "e-race").await;
    assert_eq!(row.submission_id.as_deref(), Some("driver-theirs"));
    assert_eq!(row.job_name.as_deref(), Some("theirs"));
    assert_eq!(store.send(GetStats).await.unwrap().retries, 1);
    db.drop_database().await;
}
