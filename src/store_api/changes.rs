//! The changes other parts ask the store to make durable, what each did, and why one was
//! refused.

use chrono::{DateTime, Utc};

use crate::domain::{Applied, EventApplied, Observation, Position, StatusEvent};

/// Who caused a transition; stored in `job_status_history.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    SparkPoll,
    KafkaEvent,
    TimeoutSweep,
    Api,
    /// The application wrote the row itself (mapped tables).
    Application,
    /// jobwarden's own submissions and retries.
    Submitter,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::SparkPoll => "spark_poll",
            Source::KafkaEvent => "kafka_event",
            Source::TimeoutSweep => "timeout_sweep",
            Source::Api => "api",
            Source::Application => "application",
            Source::Submitter => "submitter",
        }
    }
}

/// Register a Spark submission to supervise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRequest {
    pub execution_id: String,
    pub submission_id: Option<String>,
    pub job_name: Option<String>,
    /// The Spark cluster it runs on; none is the default one.
    pub cluster: Option<String>,
    pub source: Source,
    /// What jobwarden is to submit for it (then `submission_id` is none).
    pub spec: Option<crate::domain::SubmitSpec>,
    /// The jobs it waits for, each with what it asks of it (jobs jobwarden submits).
    pub after: Vec<(String, crate::domain::dependency::After)>,
    /// Its priority in the submission queue (0 to `placement::MAX_PRIORITY`).
    pub priority: i32,
    /// The clusters it may be placed on (the default one as `None`); `None`: only `cluster`.
    pub allowed: Option<Vec<Option<String>>>,
}

impl TrackRequest {
    /// A job to follow or submit, with no dependencies, priority 0, on `cluster` alone.
    pub fn new(
        execution_id: impl Into<String>,
        submission_id: Option<String>,
        spec: Option<crate::domain::SubmitSpec>,
        source: Source,
    ) -> TrackRequest {
        TrackRequest {
            execution_id: execution_id.into(),
            submission_id,
            job_name: None,
            cluster: None,
            source,
            spec,
            after: Vec::new(),
            priority: 0,
            allowed: None,
        }
    }
}

/// How a submission asks to be ordered, as the API and the command line take it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderingAsked {
    /// Parents it runs after only if they succeed.
    pub after: Vec<String>,
    /// Parents it runs after whatever their outcome.
    pub after_any: Vec<String>,
    pub priority: Option<i64>,
    /// The clusters it may be placed on (`default` names the `[spark]` one).
    pub clusters: Option<Vec<String>>,
}

impl OrderingAsked {
    pub fn is_empty(&self) -> bool {
        *self == OrderingAsked::default()
    }
}

impl TrackRequest {
    /// Applies what the submission asked for its order; `known` says whether a cluster name is
    /// configured. The message of a refusal names the field and the value.
    pub fn ordered(
        mut self,
        asked: OrderingAsked,
        known: impl Fn(&str) -> bool,
    ) -> Result<TrackRequest, String> {
        use crate::domain::dependency::{registration_order, After, NewJob};
        if !asked.is_empty() && self.spec.is_none() {
            return Err(
                "after, after_any, priority and clusters order the jobs jobwarden submits: give them with submit".into(),
            );
        }
        if let Some(priority) = asked.priority {
            self.priority = crate::domain::placement::check_priority(priority)?;
        }
        let mut after: Vec<(String, After)> = Vec::new();
        for (ids, kind, field) in [
            (&asked.after, After::Success, "after"),
            (&asked.after_any, After::Any, "after_any"),
        ] {
            for id in ids {
                let id = id.trim();
                if id.is_empty() || id.len() > 191 || id.chars().any(char::is_control) {
                    return Err(format!(
                        "{field} holds {id:?}: each parent is an execution id of 1 to 191 printable characters"
                    ));
                }
                if after.iter().any(|(known, _)| known == id) {
                    return Err(format!(
                        "{field} names {id:?} twice (or in both after and after_any): name each parent once"
                    ));
                }
                after.push((id.to_owned(), kind));
            }
        }
        let parents: Vec<&str> = after.iter().map(|(id, _)| id.as_str()).collect();
        registration_order(
            &[NewJob {
                id: &self.execution_id,
                parents,
            }],
            |_| true,
        )
        .map_err(|e| e.to_string())?;
        self.after = after;
        if let Some(clusters) = asked.clusters {
            if self.cluster.is_some() {
                return Err(
                    "give cluster (one) or clusters (a set to choose from), not both".into(),
                );
            }
            if clusters.is_empty() {
                return Err("clusters must name at least one cluster (or leave it out)".into());
            }
            let mut allowed: Vec<Option<String>> = Vec::new();
            for name in clusters {
                let name = name.trim();
                let cluster = if name == crate::domain::placement::DEFAULT_CLUSTER {
                    None
                } else if known(name) {
                    Some(name.to_owned())
                } else {
                    return Err(format!(
                        "clusters names {name:?}, which is not a configured cluster: use a [spark.clusters.<name>] or \"default\""
                    ));
                };
                if !allowed.contains(&cluster) {
                    allowed.push(cluster);
                }
            }
            self.allowed = Some(allowed);
        }
        Ok(self)
    }
}

/// A cluster an attempt may be begun on, as the Submitter sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `None` is the default cluster.
    pub cluster: Option<String>,
    /// The Submitter cannot reach it now: never chosen, named in the record.
    pub away: bool,
    /// Free cores its master reported, when read.
    pub free_cores: Option<i64>,
}

/// An event that could not be applied, kept as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeadLetter {
    pub source: String,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub error: String,
    pub received_at: DateTime<Utc>,
}

/// One change for the store to make durable.
#[derive(Debug, Clone)]
pub enum WriteOp {
    Track(TrackRequest),
    /// Start supervising a row the application inserted into its mapped table.
    Adopt {
        execution_id: String,
    },
    /// Bring a mapped queue row and jobwarden's copy of it into step (an event applied before
    /// the application inserted its row, or a status the application changed itself).
    SyncQueue {
        job_id: String,
    },
    /// A backend answered about this execution.
    Observe {
        execution_id: String,
        observation: Observation,
        /// The driver that was asked about: an answer about a driver the row no longer
        /// follows (an earlier attempt's, a relaunch's old id) changes nothing.
        asked: Option<String>,
    },
    /// A poll got no usable answer; the store's poll policy decides when to try again.
    PollFailed {
        execution_id: String,
        /// The driver that was asked about (see `Observe`).
        asked: Option<String>,
        at: DateTime<Utc>,
        error: String,
        /// The backend itself was away (never counts toward the stuck rule), rather than
        /// answering without this job.
        outage: bool,
    },
    /// Fail the job if, by its state at write time, the store's timeout policy says so.
    TimeOut {
        execution_id: String,
        now: DateTime<Utc>,
    },
    QueueEvent {
        event: StatusEvent,
        position: Option<Position>,
        received_at: DateTime<Utc>,
    },
    DeadLetter(NewDeadLetter),
    /// The outcome of one attempt to deliver outbox messages (several when grouped).
    NotificationAttempt(Attempt),
    /// Warn about the job if, by its state at write time, the warning holds (once per run).
    Warn {
        execution_id: String,
        warning: Warning,
        now: DateTime<Utc>,
    },
    /// Record attempt `attempt` before its submission request is sent, if the job still
    /// wants exactly that attempt now (not cancelled, not begun by another hand).
    BeginAttempt {
        execution_id: String,
        attempt: u32,
        mark: String,
        at: DateTime<Utc>,
        /// The clusters it may go to now; empty: those the row allows, none away. The store
        /// places it on one with a free place (see `domain::placement`), or refuses `NotNow`.
        candidates: Vec<Candidate>,
    },
    /// A waiting job looks at its parents: it waits on, joins the submission queue, or ends
    /// cancelled (`domain::dependency`).
    Release {
        execution_id: String,
        at: DateTime<Utc>,
    },
    /// The driver of an attempt is known: from Spark's answer, or found by its mark after a
    /// crash (`recovered`).
    AttemptSubmitted {
        execution_id: String,
        attempt: u32,
        submission_id: String,
        at: DateTime<Utc>,
        recovered: bool,
    },
    /// An attempt started no driver. `counts` when Spark refused the submission (the attempt is
    /// spent and the retry policy decides); otherwise (Spark out of reach, or a lost request
    /// proven to have started nothing) the attempt is withdrawn and tried again at `retry_at`.
    AttemptNotStarted {
        execution_id: String,
        attempt: u32,
        at: DateTime<Utc>,
        reason: String,
        counts: bool,
        retry_at: DateTime<Utc>,
    },
    /// An operator asks to cancel the job.
    Cancel {
        execution_id: String,
        at: DateTime<Utc>,
    },
    /// An operator asks for a new attempt of a finished job.
    Retry {
        execution_id: String,
        at: DateTime<Utc>,
    },
    /// The job's spec cannot be read, so it can never be submitted: it fails with the reason.
    SpecUnusable {
        execution_id: String,
        reason: String,
        at: DateTime<Utc>,
    },
}

/// An early warning about a job that has not ended badly (yet).
#[derive(Debug, Clone, PartialEq)]
pub enum Warning {
    /// Unconfirmed for half of `stuck_timeout`.
    StuckSoon,
    /// Running `factor` × longer than `usual`, the 95th percentile of `runs` past successes.
    RunningLong {
        usual: std::time::Duration,
        runs: usize,
        factor: f64,
    },
}

/// One delivery attempt of the outbox messages `ids` to their channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub ids: Vec<i64>,
    /// The grouped message they went out in, kept so a retry sends the same group.
    pub group_id: Option<String>,
    pub result: AttemptResult,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    Delivered,
    /// Not delivered this time (timeout, refused connection, 5xx); tried again at `next_at`.
    Retry {
        next_at: DateTime<Utc>,
        error: String,
    },
    /// The receiver refused it for good (4xx), with its answer.
    Refused {
        error: String,
    },
    /// Undelivered for longer than `notifications.give_up_after`.
    GaveUp {
        error: String,
    },
}

impl WriteOp {
    /// The source a transition caused by this change is counted under, if it can cause one.
    pub fn source(&self) -> Option<Source> {
        match self {
            WriteOp::Track(request) => Some(request.source),
            WriteOp::Adopt { .. } | WriteOp::SyncQueue { .. } => Some(Source::Application),
            WriteOp::Observe { .. } => Some(Source::SparkPoll),
            WriteOp::TimeOut { .. } => Some(Source::TimeoutSweep),
            WriteOp::QueueEvent { .. } => Some(Source::KafkaEvent),
            WriteOp::BeginAttempt { .. }
            | WriteOp::Release { .. }
            | WriteOp::AttemptSubmitted { .. }
            | WriteOp::AttemptNotStarted { .. }
            | WriteOp::SpecUnusable { .. } => Some(Source::Submitter),
            WriteOp::Cancel { .. } | WriteOp::Retry { .. } => Some(Source::Api),
            WriteOp::PollFailed { .. }
            | WriteOp::DeadLetter(_)
            | WriteOp::NotificationAttempt(_)
            | WriteOp::Warn { .. } => None,
        }
    }
}

/// What a change must be ordered against when the store writes batches side by side: the job
/// it is about, or everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope<'a> {
    Execution(&'a str),
    Queue(&'a str),
    /// The change reads beyond its own job (a dead letter's duplicate check, a delivery's
    /// outbox rows, a relaunch's successor ids): nothing is written beside it.
    Everything,
}

impl WriteOp {
    /// See [`Scope`].
    pub fn scope(&self) -> Scope<'_> {
        match self {
            WriteOp::Observe { observation, .. } if !observation.successors.is_empty() => {
                Scope::Everything
            }
            WriteOp::QueueEvent { event, .. } => Scope::Queue(&event.job_id),
            WriteOp::SyncQueue { job_id } => Scope::Queue(job_id),
            WriteOp::DeadLetter(_) | WriteOp::NotificationAttempt(_) => Scope::Everything,
            _ => self
                .execution_id()
                .map_or(Scope::Everything, Scope::Execution),
        }
    }
}

impl WriteOp {
    /// The execution this change is about, if it is about one.
    pub fn execution_id(&self) -> Option<&str> {
        match self {
            WriteOp::Track(r) => Some(&r.execution_id),
            WriteOp::Adopt { execution_id }
            | WriteOp::Observe { execution_id, .. }
            | WriteOp::PollFailed { execution_id, .. }
            | WriteOp::TimeOut { execution_id, .. }
            | WriteOp::Warn { execution_id, .. }
            | WriteOp::BeginAttempt { execution_id, .. }
            | WriteOp::Release { execution_id, .. }
            | WriteOp::AttemptSubmitted { execution_id, .. }
            | WriteOp::AttemptNotStarted { execution_id, .. }
            | WriteOp::Cancel { execution_id, .. }
            | WriteOp::Retry { execution_id, .. }
            | WriteOp::SpecUnusable { execution_id, .. } => Some(execution_id),
            WriteOp::QueueEvent { .. }
            | WriteOp::SyncQueue { .. }
            | WriteOp::DeadLetter(_)
            | WriteOp::NotificationAttempt(_) => None,
        }
    }

    /// The queue job this change is about, if it is about one.
    pub fn queue_job_id(&self) -> Option<&str> {
        match self {
            WriteOp::QueueEvent { event, .. } => Some(&event.job_id),
            WriteOp::SyncQueue { job_id } => Some(job_id),
            _ => None,
        }
    }
}

/// What a change did, known once it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// `created` is false when an existing row without a submission id was given one.
    Tracked {
        created: bool,
    },
    Execution(Applied),
    Queue(EventApplied),
    /// `duplicate` when the same topic/partition/offset was already dead-lettered.
    DeadLettered {
        duplicate: bool,
    },
    /// A delivery attempt's outcome is recorded.
    AttemptRecorded,
    /// `sent` when the warning held (it reaches the outbox once per run, however often asked).
    Warned {
        sent: bool,
    },
    /// An attempt is recorded, withdrawn, or given its driver.
    Attempt(AttemptChange),
    /// A cancel was taken: the job ended at once, or its driver is to be killed.
    CancelTaken {
        ended: bool,
        submission_id: Option<String>,
    },
    /// A new attempt of a finished job is due.
    RetryTaken {
        attempt: u32,
    },
}

/// What an attempt write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptChange {
    /// Recorded, on this cluster (`None`: the default one).
    Begun {
        cluster: Option<String>,
    },
    Submitted,
    /// Withdrawn: it started nothing and is tried again later.
    Withdrawn,
    /// Spent: the job retries (`retry_at`) or ends.
    Spent {
        retry_at: Option<DateTime<Utc>>,
    },
}

impl WriteOutcome {
    /// Whether a job's status moved (or a job appeared).
    pub fn transitioned(&self) -> bool {
        matches!(
            self,
            WriteOutcome::Execution(Applied::Transitioned { .. })
                | WriteOutcome::Queue(EventApplied::Transitioned { .. })
                | WriteOutcome::Tracked { created: true }
                | WriteOutcome::CancelTaken { ended: true, .. }
                | WriteOutcome::RetryTaken { .. }
        )
    }
}

/// Why one change was refused (the rest of its batch is unaffected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("execution {execution_id} is already tracked")]
    Duplicate { execution_id: String },
    #[error("no execution {execution_id}")]
    UnknownExecution { execution_id: String },
    #[error("rows of {table} are inserted by the application; jobwarden picks each new row up by itself")]
    ApplicationRows { table: String },
    #[error("row {id} of {table} is unreadable: {reason}")]
    CorruptRow {
        table: String,
        id: String,
        reason: String,
    },
    #[error("the database refused the change: {0}")]
    Refused(String),
    /// The job is not in a state that allows the action (with what it is in, and what to do).
    #[error("{0}")]
    NotNow(String),
    /// A dependency that cannot be: an unknown parent, or a job waiting for itself.
    #[error("{0}")]
    Dependency(String),
    /// The lease the change was made under passed to another instance (or another claim).
    #[error("stale write refused: bucket {bucket} is now held by {holder} (token {token}), not by this instance under token {ours}")]
    Fenced {
        bucket: u16,
        holder: String,
        token: i64,
        ours: i64,
    },
}
