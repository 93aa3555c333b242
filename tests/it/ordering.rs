//! Ordering the jobs jobwarden submits, as the JobStore decides it on SQLite, PostgreSQL and
//! MariaDB: children wait for their parents and are released or cancelled by their ends, a
//! cluster's `max_running` hands its free places out in queue order (priority, then arrival),
//! a job allowed on several clusters goes to the freest, and two stores deciding at once never
//! take more places than a cluster has.

use std::collections::HashMap;

use actix::prelude::*;
use chrono::Utc;
use jobwarden::actors::JobStore;
use jobwarden::domain::dependency::After;
use jobwarden::domain::{JobStatus, SubmitSpec};
use jobwarden::events::Events;
use jobwarden::store::batch::Rules;
use jobwarden::store_api::{
    ActionKind, AttemptChange, Candidate, DueAction, DueActions, OpError, Source, StoreError,
    TrackRequest, Write, WriteOp, WriteOutcome,
};

use crate::helpers::{rules, TestDb};
use crate::on_every_database;
use crate::worlds::{execution, history, observed_at};

fn store_with(db: &TestDb, capacity: &[(Option<&str>, u64)]) -> Addr<JobStore> {
    store_on_pool(db, db.db.clone(), capacity)
}

fn store_on_pool(
    db: &TestDb,
    pool: sea_orm::DatabaseConnection,
    capacity: &[(Option<&str>, u64)],
) -> Addr<JobStore> {
    let settings = db.settings();
    let mut rules: Rules = rules(&settings);
    rules.capacity = capacity
        .iter()
        .map(|(c, n)| (c.map(str::to_owned), *n))
        .collect::<HashMap<_, _>>();
    JobStore::new(pool, settings.store.clone(), rules, Events::default()).launch()
}

async fn write(store: &Addr<JobStore>, op: WriteOp) -> Result<WriteOutcome, StoreError> {
    store.send(Write(op)).await?
}

fn spec() -> SubmitSpec {
    SubmitSpec::from_json(r#"{"app_resource":"file:/jobs.jar","main_class":"Nightly"}"#).unwrap()
}

/// A job for jobwarden to submit.
fn job(id: &str) -> TrackRequest {
    let mut request = TrackRequest::new(id, None, Some(spec()), Source::Api);
    request.job_name = Some(id.into());
    request
}

/// A driver someone else submitted, for jobwarden to follow.
fn followed(id: &str) -> WriteOp {
    WriteOp::Track(TrackRequest::new(
        id,
        Some(format!("driver-{id}")),
        None,
        Source::Api,
    ))
}

fn after(mut request: TrackRequest, parents: &[(&str, After)]) -> WriteOp {
    request.after = parents.iter().map(|(p, a)| ((*p).into(), *a)).collect();
    WriteOp::Track(request)
}

fn begin(id: &str, attempt: u32) -> WriteOp {
    WriteOp::BeginAttempt {
        execution_id: id.into(),
        attempt,
        mark: format!("{id}:{attempt}:m"),
        at: Utc::now(),
        candidates: Vec::new(),
    }
}

fn release(id: &str) -> WriteOp {
    WriteOp::Release {
        execution_id: id.into(),
        at: Utc::now(),
    }
}

fn ended(id: &str, status: JobStatus) -> WriteOp {
    observed_at(id, status, Utc::now())
}

async fn due(store: &Addr<JobStore>) -> Vec<DueAction> {
    store
        .send(DueActions {
            now: Utc::now(),
            limit: 100,
        })
        .await
        .unwrap()
        .unwrap()
}

fn releases(actions: &[DueAction]) -> Vec<&str> {
    actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::Release))
        .map(|a| a.execution_id.as_str())
        .collect()
}

fn submits(actions: &[DueAction]) -> Vec<&str> {
    actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::Submit { .. }))
        .map(|a| a.execution_id.as_str())
        .collect()
}

fn not_now(outcome: &Result<WriteOutcome, StoreError>) -> bool {
    matches!(outcome, Err(StoreError::Refused(OpError::NotNow(_))))
}

on_every_database!(
    a_child_waits_until_its_parent_succeeds_then_joins_the_submission_queue,
    a_child_whose_parent_fails_ends_cancelled_naming_the_parent,
    a_child_after_any_is_released_whatever_its_parent_ended_as,
    a_child_of_a_parent_that_ended_already_is_released_at_the_next_look,
    an_unknown_parent_is_refused_naming_it,
    a_waiting_child_cancelled_by_an_operator_cancels_its_own_children,
    a_child_whose_row_is_gone_when_its_parent_ends_is_not_offered_again,
    a_full_cluster_begins_no_attempt_and_hands_free_places_out_by_priority,
    a_job_allowed_on_two_clusters_goes_to_the_freer_one_and_says_why,
);

async fn a_child_waits_until_its_parent_succeeds_then_joins_the_submission_queue(db: TestDb) {
    let store = store_with(&db, &[]);
    write(&store, followed("ingest")).await.unwrap();
    write(&store, after(job("enrich"), &[("ingest", After::Success)]))
        .await
        .unwrap();
    assert_eq!(execution(&db, "enrich").await.status, "Waiting");
    assert!(
        due(&store).await.is_empty(),
        "nothing to do while the parent runs"
    );
    assert!(
        not_now(&write(&store, begin("enrich", 1)).await),
        "a waiting job is never begun"
    );
    write(&store, ended("ingest", JobStatus::Succeeded))
        .await
        .unwrap();
    assert_eq!(releases(&due(&store).await), ["enrich"]);
    assert_eq!(
        write(&store, release("enrich")).await.unwrap(),
        WriteOutcome::Execution(jobwarden::domain::Applied::Transitioned {
            from: JobStatus::Waiting,
            to: JobStatus::Queued
        })
    );
    let actions = due(&store).await;
    assert_eq!(submits(&actions), ["enrich"]);
    assert!(releases(&actions).is_empty(), "a child looks once per end");
    let lines = history(&db.db, "enrich").await;
    let released = lines.last().unwrap();
    assert_eq!(
        (released.from_status.as_deref(), released.to_status.as_str()),
        (Some("Waiting"), "Queued")
    );
    assert!(
        released
            .detail
            .as_deref()
            .unwrap()
            .contains("ingest Succeeded"),
        "{released:?}"
    );
}

async fn a_child_whose_parent_fails_ends_cancelled_naming_the_parent(db: TestDb) {
    let store = store_with(&db, &[]);
    write(&store, followed("left")).await.unwrap();
    write(&store, followed("right")).await.unwrap();
    write(
        &store,
        after(
            job("join"),
            &[("left", After::Success), ("right", After::Success)],
        ),
    )
    .await
    .unwrap();
    // One parent failing is enough, while the other still runs.
    write(&store, ended("right", JobStatus::Failed))
        .await
        .unwrap();
    assert_eq!(releases(&due(&store).await), ["join"]);
    write(&store, release("join")).await.unwrap();
    let row = execution(&db, "join").await;
    assert_eq!(row.status, "Cancelled");
    let reason = row.error_message.unwrap();
    assert!(reason.contains("parent right ended Failed"), "{reason}");
    assert!(
        submits(&due(&store).await).is_empty(),
        "never submitted after that"
    );
}

async fn a_child_after_any_is_released_whatever_its_parent_ended_as(db: TestDb) {
    let store = store_with(&db, &[]);
    write(&store, followed("cleanup-of")).await.unwrap();
    write(&store, after(job("cleanup"), &[("cleanup-of", After::Any)]))
        .await
        .unwrap();
    write(&store, ended("cleanup-of", JobStatus::Failed))
        .await
        .unwrap();
    write(&store, release("cleanup")).await.unwrap();
    assert_eq!(execution(&db, "cleanup").await.status, "Queued");
    assert_eq!(submits(&due(&store).await), ["cleanup"]);
}

async fn a_child_of_a_parent_that_ended_already_is_released_at_the_next_look(db: TestDb) {
    let store = store_with(&db, &[]);
    write(&store, followed("done")).await.unwrap();
    write(&store, ended("done", JobStatus::Succeeded))
        .await
        .unwrap();
    write(&store, after(job("late"), &[("done", After::Success)]))
        .await
        .unwrap();
    assert_eq!(execution(&db, "late").await.status, "Waiting");
    assert_eq!(releases(&due(&store).await), ["late"]);
    write(&store, release("late")).await.unwrap();
    assert_eq!(execution(&db, "late").await.status, "Queued");
}

async fn an_unknown_parent_is_refused_naming_it(db: TestDb) {
    let store = store_with(&db, &[]);
    let refused = write(&store, after(job("orphan"), &[("ghost", After::Success)])).await;
    let Err(StoreError::Refused(OpError::Dependency(message))) = refused else {
        panic!("{refused:?}")
    };
    assert!(message.contains("\"ghost\""), "{message}");
    let row = entity::spark_job_executions::Entity::find_by_id("orphan".to_owned())
        .one(&db.db)
        .await
        .unwrap();
    assert!(row.is_none(), "nothing registered");
}

async fn a_waiting_child_cancelled_by_an_operator_cancels_its_own_children(db: TestDb) {
    let store = store_with(&db, &[]);
    write(&store, followed("root")).await.unwrap();
    write(&store, after(job("middle"), &[("root", After::Success)]))
        .await
        .unwrap();
    write(&store, after(job("leaf"), &[("middle", After::Success)]))
        .await
        .unwrap();
    write(
        &store,
        WriteOp::Cancel {
            execution_id: "middle".into(),
            at: Utc::now(),
        },
    )
    .await
    .unwrap();
    assert_eq!(execution(&db, "middle").await.status, "Cancelled");
    assert_eq!(releases(&due(&store).await), ["leaf"]);
    write(&store, release("leaf")).await.unwrap();
    let leaf = execution(&db, "leaf").await;
    assert_eq!(leaf.status, "Cancelled");
    assert!(leaf
        .error_message
        .unwrap()
        .contains("parent middle ended Cancelled"),);
}

async fn a_child_whose_row_is_gone_when_its_parent_ends_is_not_offered_again(db: TestDb) {
    let store = store_with(&db, &[]);
    write(&store, followed("slow")).await.unwrap();
    write(&store, after(job("dropped"), &[("slow", After::Success)]))
        .await
        .unwrap();
    // Cancelled while it waited, then deleted (as retention does with ended rows).
    write(
        &store,
        WriteOp::Cancel {
            execution_id: "dropped".into(),
            at: Utc::now(),
        },
    )
    .await
    .unwrap();
    entity::spark_job_executions::Entity::delete_by_id("dropped".to_owned())
        .exec(&db.db)
        .await
        .unwrap();
    write(&store, ended("slow", JobStatus::Succeeded))
        .await
        .unwrap();
    assert_eq!(releases(&due(&store).await), ["dropped"]);
    assert_eq!(
        write(&store, release("dropped")).await.unwrap(),
        WriteOutcome::Execution(jobwarden::domain::Applied::Refreshed)
    );
    assert!(releases(&due(&store).await).is_empty(), "offered once only");
}

async fn a_full_cluster_begins_no_attempt_and_hands_free_places_out_by_priority(db: TestDb) {
    let store = store_with(&db, &[(None, 2)]);
    // One place taken by a driver someone else submitted.
    write(&store, followed("theirs")).await.unwrap();
    for (id, priority) in [("low", 0), ("high", 5), ("mid", 2)] {
        let mut request = job(id);
        request.priority = priority;
        write(&store, WriteOp::Track(request)).await.unwrap();
    }
    // One free place: only the highest priority is offered, and only it may begin.
    assert_eq!(submits(&due(&store).await), ["high"]);
    assert!(not_now(&write(&store, begin("low", 1)).await));
    assert!(not_now(&write(&store, begin("mid", 1)).await));
    assert_eq!(
        write(&store, begin("high", 1)).await.unwrap(),
        WriteOutcome::Attempt(AttemptChange::Begun { cluster: None })
    );
    // Full now (the attempt on its way counts): nothing more is offered or begun.
    assert!(submits(&due(&store).await).is_empty());
    let refused = write(&store, begin("mid", 1)).await;
    let Err(StoreError::Refused(OpError::NotNow(why))) = refused else {
        panic!("{refused:?}")
    };
    assert!(why.contains("2 of 2 running"), "{why}");
    // A place frees: the next in the queue gets it.
    write(&store, ended("theirs", JobStatus::Succeeded))
        .await
        .unwrap();
    assert_eq!(submits(&due(&store).await), ["mid"]);
}

async fn a_job_allowed_on_two_clusters_goes_to_the_freer_one_and_says_why(db: TestDb) {
    let store = store_with(&db, &[(Some("east"), 1), (Some("west"), 3)]);
    let mut busy = TrackRequest::new("busy", Some("driver-busy".into()), None, Source::Api);
    busy.cluster = Some("west".into());
    write(&store, WriteOp::Track(busy)).await.unwrap();
    let mut anywhere = job("anywhere");
    anywhere.allowed = Some(vec![Some("east".into()), Some("west".into())]);
    write(&store, WriteOp::Track(anywhere)).await.unwrap();
    // east has 1 free place, west 2 (3 less the busy one): west.
    assert_eq!(
        write(&store, begin("anywhere", 1)).await.unwrap(),
        WriteOutcome::Attempt(AttemptChange::Begun {
            cluster: Some("west".into())
        })
    );
    let row = execution(&db, "anywhere").await;
    assert_eq!(row.cluster.as_deref(), Some("west"));
    let placed = history(&db.db, "anywhere")
        .await
        .into_iter()
        .find_map(|h| h.detail.filter(|d| d.contains("placed on")))
        .expect("a history line says where and why");
    assert!(
        placed.contains("placed on west: 1 of 3 running") && placed.contains("east: 0 of 1"),
        "{placed}"
    );
    // A cluster the Submitter finds away is never chosen, whatever its room.
    let mut second = job("second");
    second.allowed = Some(vec![Some("east".into()), Some("west".into())]);
    write(&store, WriteOp::Track(second)).await.unwrap();
    let away_west = WriteOp::BeginAttempt {
        execution_id: "second".into(),
        attempt: 1,
        mark: "second:1:m".into(),
        at: Utc::now(),
        candidates: vec![
            Candidate {
                cluster: Some("east".into()),
                away: false,
                free_cores: None,
            },
            Candidate {
                cluster: Some("west".into()),
                away: true,
                free_cores: None,
            },
        ],
    };
    assert_eq!(
        write(&store, away_west).await.unwrap(),
        WriteOutcome::Attempt(AttemptChange::Begun {
            cluster: Some("east".into())
        })
    );
}

mod two_stores_beginning_at_once_never_take_more_places_than_the_cluster_has {
    use crate::helpers::{run_on, Backend};

    #[actix_rt::test]
    async fn postgres() {
        run_on(Backend::Postgres, super::two_stores_race).await
    }

    #[actix_rt::test]
    async fn mariadb() {
        run_on(Backend::MariaDb, super::two_stores_race).await
    }
}

/// Two instances' stores, each on its own connections, asked to begin every one of twenty
/// jobs at the same moment on a cluster with three places.
async fn two_stores_race(db: TestDb) {
    let first = store_with(&db, &[(None, 3)]);
    let other_pool = sea_orm::Database::connect(db.url.as_str()).await.unwrap();
    let second = store_on_pool(&db, other_pool, &[(None, 3)]);
    let ids: Vec<String> = (0..20).map(|i| format!("race-{i:02}")).collect();
    for id in &ids {
        write(&first, WriteOp::Track(job(id))).await.unwrap();
    }
    let mut asks = Vec::new();
    for id in &ids {
        for store in [&first, &second] {
            asks.push(store.send(Write(begin(id, 1))));
        }
    }
    let answers = futures::future::join_all(asks).await;
    let begun = answers
        .into_iter()
        .filter(|a| {
            matches!(
                a,
                Ok(Ok(WriteOutcome::Attempt(AttemptChange::Begun { .. })))
            )
        })
        .count();
    assert_eq!(begun, 3, "exactly the cluster's three places were taken");
    let attempts = entity::spark_job_attempts::Entity::find()
        .count(&db.db)
        .await
        .unwrap();
    assert_eq!(attempts, 3);
}

use sea_orm::{EntityTrait, PaginatorTrait};
