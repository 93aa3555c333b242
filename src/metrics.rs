//! The Prometheus metrics of one running application: its own registry (two applications in
//! one process count apart), bumped only by the internal events in `crate::events`.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// `outcome`: observed, failed, not_recorded, crashed.
    pub polls: IntCounterVec,
    pub poll_seconds: Histogram,
    pub polls_in_flight: IntGauge,
    /// Set at scrape time from the database.
    pub jobs: GaugeVec,
    /// Jobs jobwarden is to submit now and has not (waiting for a free place, or for the next
    /// look), by cluster (or allowed set) and priority: what an autoscaler acts on.
    pub submission_queue: GaugeVec,
    /// `source`: spark_poll, kafka_event, timeout_sweep, api.
    pub transitions: IntCounterVec,
    /// `outcome`: consumed, applied, dead_lettered.
    pub kafka_events: IntCounterVec,
    pub kafka_consumer_lag: IntGauge,
    pub store_batch_size: Histogram,
    pub store_commit_seconds: Histogram,
    pub store_retries: IntCounter,
    /// Job rows inserted or updated: grows with what happens, not with polls.
    pub store_rows_written: IntCounter,
    pub database_up: Gauge,
    /// `cluster`: `default` or a `[spark.clusters.<name>]`.
    pub spark_up: GaugeVec,
    /// `actor`: scheduler, spark_poller, kafka_listener, job_store.
    pub actor_restarts: IntCounterVec,
    pub timeouts: IntCounter,
    pub scheduler_ticks_skipped: IntCounter,
    pub poll_cycle_seconds: HistogramVec,
    /// Answers that carried no status (a master recovering).
    pub unknown_state_answers: IntCounter,
    /// `instance`: this instance's id; always 1.
    pub instance_info: GaugeVec,
    /// Poll buckets this instance holds a lease on.
    pub buckets_held: Gauge,
    /// 1 while this instance holds the leader lease (the timeout sweep runs here).
    pub leader: Gauge,
    pub live_instances: Gauge,
    /// Writes refused because the lease they were made under had passed on.
    pub fenced_writes: IntCounter,
    /// Outbox messages by `channel` and `outcome`: delivered, retrying, refused, gave_up.
    pub notifications: IntCounterVec,
    /// Changes the database refused (not outages), by `cause`.
    pub store_refused: IntCounterVec,
    /// Rows retention deleted, by `table` (the `[retention]` key).
    pub pruned_rows: IntCounterVec,
    /// Set at scrape time: 1 while a `channel`'s deliveries have failed for longer than
    /// `notifications.failing_after`.
    pub notification_channel_failing: GaugeVec,
    /// Set at scrape time: 1 while a broker connection is up, by `topic` (absent without
    /// `[kafka]`).
    pub kafka_brokers_up: GaugeVec,
    /// How long ended Spark runs ran, by `job_name` (bounded: see [`JobNameLabels`]) and
    /// `outcome`: succeeded, failed, cancelled. Observe through [`Metrics::job_ended`].
    pub job_duration: HistogramVec,
    pub job_names: JobNameLabels,
}

/// Job names that get a `job_name` label value of their own: the first
/// [`JOB_NAME_LABELS`] distinct names this process sees end, in that order; every later name
/// is `other`, and a run with no name is `unnamed`. Job names are unbounded (a name per
/// customer, per date), and each label value is a series per bucket for as long as the
/// process runs, so the label is capped rather than trusted. (Exemplars would carry the
/// name without a series each, but the `prometheus` crate has none.)
#[derive(Default)]
pub struct JobNameLabels(std::sync::Mutex<std::collections::HashSet<String>>);

/// Distinct job names with a label value of their own.
pub const JOB_NAME_LABELS: usize = 50;
/// The label value of the names past [`JOB_NAME_LABELS`].
pub const OTHER_JOB_NAMES: &str = "other";
/// The label value of runs without a job name.
pub const UNNAMED_JOB: &str = "unnamed";

impl JobNameLabels {
    /// The label value `name` is counted under, admitting it while there is room.
    pub fn label<'a>(&self, name: Option<&'a str>) -> &'a str {
        let Some(name) = name else {
            return UNNAMED_JOB;
        };
        let mut admitted = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if admitted.contains(name) {
            return name;
        }
        if admitted.len() < JOB_NAME_LABELS {
            admitted.insert(name.to_owned());
            return name;
        }
        OTHER_JOB_NAMES
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry; the reachability gauges start at 1 (nothing has failed yet).
    pub fn new() -> Metrics {
        let r = Registry::new();
        let latency = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let jobs = GaugeVec::new(
            Opts::new("jobwarden_jobs", "Spark executions by status"),
            &["status"],
        )
        .expect("valid metric");
        r.register(Box::new(jobs.clone())).expect("unique metric");
        let submission_queue = GaugeVec::new(
            Opts::new(
                "jobwarden_submission_queue",
                "Jobs jobwarden is to submit and has not yet, by cluster (or allowed set, a|b) and priority",
            ),
            &["cluster", "priority"],
        )
        .expect("valid metric");
        r.register(Box::new(submission_queue.clone()))
            .expect("unique metric");
        let polls_in_flight = IntGauge::new(
            "jobwarden_polls_in_flight",
            "Spark status requests in flight",
        )
        .expect("valid metric");
        r.register(Box::new(polls_in_flight.clone()))
            .expect("unique metric");
        let lag = IntGauge::new(
            "jobwarden_kafka_consumer_lag",
            "Messages behind the end of the assigned partitions (librdkafka statistics)",
        )
        .expect("valid metric");
        r.register(Box::new(lag.clone())).expect("unique metric");
        let cycle = HistogramVec::new(
            HistogramOpts::new(
                "jobwarden_poll_cycle_seconds",
                "Duration of a full poll cycle",
            )
            .buckets(vec![0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0]),
            &["kind"],
        )
        .expect("valid metric");
        r.register(Box::new(cycle.clone())).expect("unique metric");
        let instance_info = GaugeVec::new(
            Opts::new("jobwarden_instance_info", "This instance's id (always 1)"),
            &["instance"],
        )
        .expect("valid metric");
        r.register(Box::new(instance_info.clone()))
            .expect("unique metric");
        let notifications = IntCounterVec::new(
            Opts::new(
                "jobwarden_notifications_total",
                "Notification delivery attempts by channel and outcome (messages, a storm counts each)",
            ),
            &["channel", "outcome"],
        )
        .expect("valid metric");
        r.register(Box::new(notifications.clone()))
            .expect("unique metric");
        let channel_failing = GaugeVec::new(
            Opts::new(
                "jobwarden_notification_channel_failing",
                "1 while a channel's deliveries have failed for longer than notifications.failing_after",
            ),
            &["channel"],
        )
        .expect("valid metric");
        r.register(Box::new(channel_failing.clone()))
            .expect("unique metric");
        let kafka_brokers_up = GaugeVec::new(
            Opts::new(
                "jobwarden_kafka_brokers_up",
                "1 while the Kafka consumer reaches its brokers",
            ),
            &["topic"],
        )
        .expect("valid metric");
        r.register(Box::new(kafka_brokers_up.clone()))
            .expect("unique metric");
        let spark_up = GaugeVec::new(
            Opts::new("jobwarden_spark_up", "1 while the Spark cluster answers"),
            &["cluster"],
        )
        .expect("valid metric");
        r.register(Box::new(spark_up.clone()))
            .expect("unique metric");
        let job_duration = HistogramVec::new(
            HistogramOpts::new(
                "jobwarden_job_duration_seconds",
                "How long ended Spark runs ran (driver start to end), by job name (the first 50 \
                 names seen; later ones as other) and outcome",
            )
            // Batch jobs: from seconds to a day.
            .buckets(vec![
                5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1_200.0, 1_800.0, 3_600.0, 7_200.0,
                14_400.0, 28_800.0, 86_400.0,
            ]),
            &["job_name", "outcome"],
        )
        .expect("valid metric");
        r.register(Box::new(job_duration.clone()))
            .expect("unique metric");
        let m = Metrics {
            polls: counter_vec(
                &r,
                "jobwarden_polls_total",
                "Spark status polls by outcome",
                "outcome",
            ),
            poll_seconds: histogram(
                &r,
                "jobwarden_poll_duration_seconds",
                "Spark status poll latency",
                latency.clone(),
            ),
            polls_in_flight,
            jobs,
            submission_queue,
            transitions: counter_vec(
                &r,
                "jobwarden_status_transitions_total",
                "Status transitions written, by source",
                "source",
            ),
            kafka_events: counter_vec(
                &r,
                "jobwarden_kafka_events_total",
                "Kafka status events by outcome",
                "outcome",
            ),
            kafka_consumer_lag: lag,
            store_batch_size: histogram(
                &r,
                "jobwarden_store_batch_size",
                "Changes per store transaction",
                vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
            ),
            store_commit_seconds: histogram(
                &r,
                "jobwarden_store_commit_seconds",
                "Store transaction latency",
                latency,
            ),
            store_retries: counter(
                &r,
                "jobwarden_store_retries_total",
                "Store transactions retried while the database was unreachable",
            ),
            store_rows_written: counter(
                &r,
                "jobwarden_store_rows_written_total",
                "Job rows inserted or updated by the store (a change that changes nothing writes none)",
            ),
            database_up: gauge(&r, "jobwarden_database_up", "1 while the database answers"),
            spark_up,
            actor_restarts: counter_vec(
                &r,
                "jobwarden_actor_restarts_total",
                "Actors restarted after a crash",
                "actor",
            ),
            timeouts: counter(
                &r,
                "jobwarden_timeouts_total",
                "Jobs failed by the timeout sweep",
            ),
            scheduler_ticks_skipped: counter(
                &r,
                "jobwarden_scheduler_ticks_skipped_total",
                "Ticks skipped because the previous poll cycle was still running",
            ),
            poll_cycle_seconds: cycle,
            unknown_state_answers: counter(
                &r,
                "jobwarden_unknown_state_answers_total",
                "Status answers that carried no status (a master recovering)",
            ),
            instance_info,
            buckets_held: gauge(
                &r,
                "jobwarden_lease_buckets_held",
                "Poll buckets this instance holds a lease on (of 64)",
            ),
            leader: gauge(
                &r,
                "jobwarden_leader",
                "1 while this instance holds the leader lease",
            ),
            live_instances: gauge(
                &r,
                "jobwarden_live_instances",
                "Instances seen alive on this database within one lease",
            ),
            fenced_writes: counter(
                &r,
                "jobwarden_fenced_writes_total",
                "Writes refused because their lease had passed to another claim",
            ),
            notifications,
            notification_channel_failing: channel_failing,
            store_refused: counter_vec(
                &r,
                "jobwarden_store_refused_total",
                "Changes the database refused (not outages), by cause: decode, data, constraint, schema, permission, other",
                "cause",
            ),
            pruned_rows: counter_vec(
                &r,
                "jobwarden_pruned_rows_total",
                "Rows retention deleted, by [retention] key",
                "table",
            ),
            kafka_brokers_up,
            job_duration,
            job_names: JobNameLabels::default(),
            registry: r,
        };
        m.database_up.set(1.0);
        m
    }

    /// The count of one labelled counter, for readiness, stats and tests.
    pub fn count(counter: &IntCounterVec, label: &str) -> u64 {
        counter.with_label_values(&[label]).get()
    }

    /// One Spark run ended after running for `ran`.
    pub fn job_ended(&self, job_name: Option<&str>, outcome: &str, ran: std::time::Duration) {
        let name = self.job_names.label(job_name);
        self.job_duration
            .with_label_values(&[name, outcome])
            .observe(ran.as_secs_f64());
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_past_the_cap_are_counted_as_other_and_admitted_names_keep_theirs() {
        let labels = JobNameLabels::default();
        for i in 0..JOB_NAME_LABELS {
            let name = format!("job-{i}");
            assert_eq!(labels.label(Some(&name)), name);
        }
        assert_eq!(labels.label(Some("one-too-many")), OTHER_JOB_NAMES);
        assert_eq!(labels.label(Some("job-0")), "job-0");
        assert_eq!(labels.label(None), UNNAMED_JOB);
    }
}
