//! Retention on every database: what `[retention]` no longer keeps is deleted in batches, and
//! only that (failed and pending messages, attempts awaiting their driver, unfinished or
//! young jobs stay); `--dry-run` counts the same rows and deletes nothing; a running service
//! prunes by itself on the leader.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{
    dead_letters, job_status_history as history, jobwarden_outbox as outbox,
    spark_job_attempts as attempts, spark_job_executions as executions,
    transformation_job_queue as queue,
};
use jobwarden::actors::job_store::Prune;
use jobwarden::actors::JobStore;
use jobwarden::config::{KeepFor, RetentionSettings};
use jobwarden_testkit::SparkServer;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
};

use crate::helpers::{store_on, wait_until, Backend, TestDb};
use crate::on_every_database;
use crate::operating::{instance_settings, start};

/// More old history rows than one batch holds, so the walk takes several.
const OLD_HISTORY: usize = 2_500;

fn days_ago(days: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(days)
}

fn history_row(job: &str, at: DateTime<Utc>) -> history::ActiveModel {
    history::ActiveModel {
        job_kind: Set("spark".into()),
        job_id: Set(job.into()),
        from_status: Set(Some("Running".into())),
        to_status: Set("Succeeded".into()),
        source: Set("spark_poll".into()),
        detail: Set(None),
        at: Set(at),
        ..Default::default()
    }
}

fn outbox_row(
    message: &str,
    state: &str,
    created: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
) -> outbox::ActiveModel {
    outbox::ActiveModel {
        message_id: Set(message.into()),
        channel: Set("ops".into()),
        event: Set("succeeded".into()),
        job_kind: Set(Some("spark".into())),
        job_id: Set(Some("kept-job".into())),
        payload: Set("{}".into()),
        state: Set(state.into()),
        attempts: Set(1),
        next_attempt_at: Set(created),
        last_error: Set(None),
        created_at: Set(created),
        finished_at: Set(finished),
        group_id: Set(None),
        dedup_key: Set(None),
        ..Default::default()
    }
}

fn attempt_row(
    execution: &str,
    requested: DateTime<Utc>,
    ended: Option<DateTime<Utc>>,
) -> attempts::ActiveModel {
    attempts::ActiveModel {
        execution_id: Set(execution.into()),
        attempt: Set(1),
        mark: Set(format!("mark-{execution}")),
        cluster: Set(None),
        submission_id: Set(Some(format!("driver-{execution}"))),
        state: Set(if ended.is_some() {
            "ended"
        } else {
            "requested"
        }
        .into()),
        requested_at: Set(requested),
        submitted_at: Set(None),
        started_at: Set(None),
        ended_at: Set(ended),
        outcome: Set(None),
        reason: Set(None),
        ..Default::default()
    }
}

fn execution_row(
    id: &str,
    status: &str,
    completed: Option<DateTime<Utc>>,
) -> executions::ActiveModel {
    executions::ActiveModel {
        execution_id: Set(id.into()),
        submission_id: Set(Some(format!("driver-{id}"))),
        status: Set(status.into()),
        completed_at: Set(completed),
        ..Default::default()
    }
}

/// Old and young records of every kind; returns how many of each should go at 30 days.
async fn write_old_and_young_records(db: &TestDb) {
    let old: Vec<_> = (0..OLD_HISTORY)
        .map(|i| history_row(&format!("old-{}", i % 50), days_ago(100)))
        .collect();
    for chunk in old.chunks(500) {
        history::Entity::insert_many(chunk.to_vec())
            .exec(&db.db)
            .await
            .unwrap();
    }
    history::Entity::insert_many(vec![
        history_row("young", days_ago(1)),
        history_row("young", days_ago(0)),
    ])
    .exec(&db.db)
    .await
    .unwrap();
    for (n, at) in [(1, days_ago(40)), (2, days_ago(40)), (3, days_ago(2))] {
        dead_letters::Entity::insert(dead_letters::ActiveModel {
            source: Set("kafka".into()),
            topic: Set(Some("t".into())),
            partition: Set(Some(0)),
            offset: Set(Some(n)),
            key: Set(None),
            payload: Set(b"not json".to_vec()),
            error: Set("payload is not a JSON object".into()),
            received_at: Set(at),
            ..Default::default()
        })
        .exec(&db.db)
        .await
        .unwrap();
    }
    outbox::Entity::insert_many(vec![
        outbox_row(
            "delivered-old",
            "delivered",
            days_ago(50),
            Some(days_ago(49)),
        ),
        outbox_row("failed-old", "failed", days_ago(50), Some(days_ago(49))),
        outbox_row("pending-old", "pending", days_ago(50), None),
        outbox_row(
            "delivered-old-2",
            "delivered",
            days_ago(45),
            Some(days_ago(45)),
        ),
        outbox_row(
            "delivered-young",
            "delivered",
            days_ago(3),
            Some(days_ago(3)),
        ),
    ])
    .exec(&db.db)
    .await
    .unwrap();
    attempts::Entity::insert_many(vec![
        attempt_row("ended-old", days_ago(100), Some(days_ago(99))),
        attempt_row("awaiting-old", days_ago(100), None),
        attempt_row("ended-young", days_ago(5), Some(days_ago(4))),
    ])
    .exec(&db.db)
    .await
    .unwrap();
    executions::Entity::insert_many(vec![
        execution_row("done-old", "Succeeded", Some(days_ago(60))),
        execution_row("failed-old", "Failed", Some(days_ago(60))),
        execution_row("running-old", "Running", None),
        execution_row("done-young", "Succeeded", Some(days_ago(1))),
    ])
    .exec(&db.db)
    .await
    .unwrap();
    queue::Entity::insert(queue::ActiveModel {
        job_id: Set("queue-done-old".into()),
        status: Set("Completed".into()),
        completed_at: Set(Some(days_ago(60))),
        ..Default::default()
    })
    .exec(&db.db)
    .await
    .unwrap();
}

fn thirty_days_of_everything() -> RetentionSettings {
    RetentionSettings {
        history: KeepFor::days(30),
        dead_letters: KeepFor::days(30),
        delivered_notifications: KeepFor::days(30),
        finished_attempts: KeepFor::days(30),
        finished_jobs: KeepFor::days(30),
        batch: 1_000,
        every: Duration::from_secs(3600),
        pause: Duration::ZERO,
    }
}

/// A JobStore on `db` as the service builds it, keeping records as `retention` says.
fn pruning_store(db: &TestDb, retention: RetentionSettings) -> actix::Addr<JobStore> {
    store_on(db).with_retention(retention).launch()
}

/// What a prune as of now deletes (or, on a dry run, would), table by table.
async fn prune(store: &actix::Addr<JobStore>, dry_run: bool) -> Vec<(&'static str, u64)> {
    store
        .send(Prune {
            now: Utc::now(),
            dry_run,
        })
        .await
        .unwrap()
        .unwrap()
}

async fn count<E: EntityTrait>(db: &TestDb) -> u64
where
    E::Model: Sync,
{
    E::find().count(&db.db).await.unwrap()
}

/// One key of every row of `E`, sorted, to compare what is left regardless of order.
async fn sorted_keys<E: EntityTrait>(db: &TestDb, key: fn(E::Model) -> String) -> Vec<String> {
    let mut keys: Vec<String> = E::find()
        .all(&db.db)
        .await
        .unwrap()
        .into_iter()
        .map(key)
        .collect();
    keys.sort();
    keys
}

/// A 200-day-old history row and a day-old one.
async fn one_old_and_one_young_history_row(db: &DatabaseConnection) {
    history::Entity::insert_many(vec![
        history_row("old", days_ago(200)),
        history_row("young", days_ago(1)),
    ])
    .exec(db)
    .await
    .unwrap();
}

fn count_of(counts: &[(&'static str, u64)], name: &str) -> u64 {
    counts
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, c)| *c)
}

async fn retention_deletes_what_aged_out_and_keeps_the_rest(db: TestDb) {
    write_old_and_young_records(&db).await;
    let store = pruning_store(&db, thirty_days_of_everything());

    let counted = prune(&store, true).await;
    // 2,500 old rows of history, and the three rows of the two finished old jobs' history.
    assert_eq!(
        count_of(&counted, "history"),
        OLD_HISTORY as u64,
        "{counted:?}"
    );
    assert_eq!(count_of(&counted, "dead_letters"), 2, "{counted:?}");
    assert_eq!(
        count_of(&counted, "delivered_notifications"),
        2,
        "{counted:?}"
    );
    assert_eq!(count_of(&counted, "finished_attempts"), 1, "{counted:?}");
    assert_eq!(count_of(&counted, "finished_jobs"), 3, "{counted:?}");
    assert_eq!(
        count::<history::Entity>(&db).await,
        OLD_HISTORY as u64 + 2,
        "a dry run deletes nothing"
    );

    let deleted = prune(&store, false).await;
    assert_eq!(
        count_of(&deleted, "history"),
        OLD_HISTORY as u64,
        "{deleted:?}"
    );
    assert_eq!(count_of(&deleted, "finished_jobs"), 3, "{deleted:?}");

    let history_left = sorted_keys::<history::Entity>(&db, |h| h.job_id).await;
    assert_eq!(history_left, vec!["young", "young"]);
    assert_eq!(count::<dead_letters::Entity>(&db).await, 1);
    let messages = sorted_keys::<outbox::Entity>(&db, |m| m.message_id).await;
    assert_eq!(
        messages,
        vec!["delivered-young", "failed-old", "pending-old"],
        "failed and pending messages stay"
    );
    let attempts_left = sorted_keys::<attempts::Entity>(&db, |a| a.execution_id).await;
    assert_eq!(
        attempts_left,
        vec!["awaiting-old", "ended-young"],
        "an attempt awaiting its driver stays"
    );
    let jobs = sorted_keys::<executions::Entity>(&db, |e| e.execution_id).await;
    assert_eq!(
        jobs,
        vec!["done-young", "running-old"],
        "unfinished and young jobs stay"
    );
    assert_eq!(count::<queue::Entity>(&db).await, 0);

    let again = prune(&store, false).await;
    assert!(
        again.iter().all(|(_, rows)| *rows == 0),
        "nothing more to delete: {again:?}"
    );
}

async fn finished_jobs_are_kept_forever_by_default(db: TestDb) {
    write_old_and_young_records(&db).await;
    let store = pruning_store(&db, RetentionSettings::default());
    let deleted = prune(&store, false).await;
    assert!(
        !deleted.iter().any(|(name, _)| *name == "finished_jobs"),
        "{deleted:?}"
    );
    assert_eq!(count::<executions::Entity>(&db).await, 4);
    assert_eq!(
        history::Entity::find()
            .filter(history::Column::JobId.eq("young"))
            .count(&db.db)
            .await
            .unwrap(),
        2
    );
}

on_every_database!(
    retention_deletes_what_aged_out_and_keeps_the_rest,
    finished_jobs_are_kept_forever_by_default,
);

#[actix_rt::test]
async fn a_running_service_prunes_on_its_own_every_retention_every() {
    let spark = SparkServer::start().await;
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    let handle = db.db.clone();
    one_old_and_one_young_history_row(&handle).await;
    let mut settings = instance_settings(&db.url, &spark);
    settings.retention.every = Duration::from_millis(100);
    let app = start(settings, db).await;
    wait_until(
        Duration::from_secs(20),
        "the 200-day-old history row to go",
        || async { history::Entity::find().count(&handle).await.unwrap() == 1 },
    )
    .await;
    assert!(app
        .metrics()
        .await
        .contains("jobwarden_pruned_rows_total{table=\"history\"} 1"));
}

/// `jobwarden prune` with `args` on the database at `url`: its output, and its stdout as text.
fn prune_command(
    dir: &std::path::Path,
    url: &str,
    args: &[&str],
) -> (std::process::Output, String) {
    let output = crate::binary::jobwarden(dir)
        .env("JOBWARDEN__DATABASE__URL", url)
        .arg("prune")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

#[actix_rt::test]
async fn prune_dry_run_says_what_would_go_and_deletes_nothing() {
    let dir = crate::binary::workdir();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("jw.db").display());
    let db = jobwarden::store::connect(&crate::helpers::settings_for(&url).database)
        .await
        .unwrap();
    jobwarden::store::migrate(&db).await.unwrap();
    one_old_and_one_young_history_row(&db).await;

    let (output, stdout) = prune_command(dir.path(), &url, &["--dry-run"]);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("history: would delete 1 row(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("kept forever: finished_jobs"), "{stdout}");
    assert_eq!(history::Entity::find().count(&db).await.unwrap(), 2);

    let (_, stdout) = prune_command(dir.path(), &url, &[]);
    assert!(stdout.contains("history: deleted 1 row(s)"), "{stdout}");
    assert_eq!(history::Entity::find().count(&db).await.unwrap(), 1);
}

/// On SQLite, one writer at a time: the store's batches and retention's deletes take turns, so
/// no change written while a prune runs meets a locked database and is held as an outage.
#[actix_rt::test]
async fn on_sqlite_writes_during_a_prune_wait_their_turn_instead_of_meeting_a_locked_database() {
    use jobwarden::store_api::{GetStats, Source, TrackRequest, Write, WriteOp};
    let db = TestDb::fresh(Backend::Sqlite).await.unwrap();
    let old: Vec<_> = (0..50_000)
        .map(|i| history_row(&format!("old-{i}"), days_ago(200)))
        .collect();
    for chunk in old.chunks(2_000) {
        history::Entity::insert_many(chunk.to_vec())
            .exec(&db.db)
            .await
            .unwrap();
    }
    let store = pruning_store(
        &db,
        RetentionSettings {
            batch: 200,
            ..thirty_days_of_everything()
        },
    );
    let pruning = actix_rt::spawn(store.send(Prune {
        now: Utc::now(),
        dry_run: false,
    }));
    // Writes keep coming, a few at a time, for as long as the prune runs.
    let mut written = 0;
    while !pruning.is_finished() {
        let writes = (written..written + 10).map(|i| {
            store.send(Write(WriteOp::Track(TrackRequest {
                execution_id: format!("new-{i}"),
                submission_id: Some(format!("driver-new-{i}")),
                job_name: None,
                cluster: None,
                source: Source::Api,
                spec: None,
                after: Vec::new(),
                priority: 0,
                allowed: None,
            })))
        });
        for answer in futures::future::join_all(writes).await {
            assert!(answer.unwrap().is_ok());
        }
        written += 10;
    }
    let pruned = pruning.await.unwrap().unwrap().unwrap();
    assert_eq!(count_of(&pruned, "history"), 50_000);
    assert!(written > 0, "no write met the prune");
    let stats = store.send(GetStats).await.unwrap();
    assert_eq!(
        stats.retries, 0,
        "a change written during the prune was held back as if the database were away"
    );
}
