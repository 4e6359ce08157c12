//! Prometheus metrics: what background work is doing, in the units and names
//! Prometheus users expect (`steadfast_` prefix, base units, `_total`).
//!
//! Labels: `queue` (capped at [`MAX_QUEUE_LABELS`] distinct values per
//! process; the rest are counted under `_other`), `outcome`, `state`, and for
//! HTTP the route template and status. Tenants are deliberately not a label:
//! their number is unbounded, and a metric per tenant would let the series
//! count grow without limit. Per-tenant views come from the API and the audit log.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Distinct queue names that get their own label value.
pub const MAX_QUEUE_LABELS: usize = 1000;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub queue: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub queue: String,
    pub state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub commit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SloLabels {
    pub queue: String,
    pub slo: String,
    pub severity: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeldLabels {
    pub queue: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InboxLabels {
    pub kind: String,
    /// `accepted`, `duplicate` or `rejected`.
    pub outcome: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to ~9 h, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 25,
    ))
}

fn http_histogram() -> Histogram {
    // 0.1 ms to ~3 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 16,
    ))
}

/// `value` as a label value, or `_other` once `known` holds
/// [`MAX_QUEUE_LABELS`] other values.
fn bounded_label(known: &Mutex<HashSet<String>>, value: &str) -> String {
    let mut known = known.lock().expect("not poisoned");
    if known.contains(value) {
        return value.to_owned();
    }
    if known.len() < MAX_QUEUE_LABELS {
        known.insert(value.to_owned());
        return value.to_owned();
    }
    "_other".to_owned()
}

/// Every metric Steadfast exports, registered once.
pub struct Metrics {
    registry: Registry,
    known_queues: Mutex<HashSet<String>>,
    pub enqueued: Family<QueueLabels, Counter>,
    pub finished: Family<OutcomeLabels, Counter>,
    pub attempts: Family<OutcomeLabels, Counter>,
    pub replays: Family<QueueLabels, Counter>,
    pub schedule_to_start: Histograms<QueueLabels>,
    pub attempt_duration: Histograms<QueueLabels>,
    pub end_to_end: Histograms<QueueLabels>,
    pub queue_depth: Family<StateLabels, Gauge>,
    pub oldest_job_age: Family<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Histograms<RouteLabels>,
    pub slo_alerts: Family<SloLabels, Gauge>,
    pub inbox_events: Family<InboxLabels, Counter>,
    pub retries_deferred: Family<QueueLabels, Counter>,
    pub schedule_ticks: Family<OutcomeLabels, Counter>,
    pub producer_gaps: Counter,
    pub outbox_refused: Counter,
    pub jobs_held: Family<HeldLabels, Gauge>,
    pub breaker_state: Family<ResourceLabels, Gauge>,
    known_resources: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("steadfast");
        let metrics = Metrics {
            known_queues: Mutex::default(),
            enqueued: Family::default(),
            finished: Family::default(),
            attempts: Family::default(),
            replays: Family::default(),
            schedule_to_start: Family::new_with_constructor(latency_histogram),
            attempt_duration: Family::new_with_constructor(latency_histogram),
            end_to_end: Family::new_with_constructor(latency_histogram),
            queue_depth: Family::default(),
            oldest_job_age: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_histogram),
            slo_alerts: Family::default(),
            inbox_events: Family::default(),
            retries_deferred: Family::default(),
            schedule_ticks: Family::default(),
            producer_gaps: Counter::default(),
            outbox_refused: Counter::default(),
            jobs_held: Family::default(),
            breaker_state: Family::default(),
            known_resources: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "jobs_enqueued",
            "Jobs created by enqueue requests",
            metrics.enqueued.clone(),
        );
        registry.register(
            "jobs_finished",
            "Jobs that reached a final state, by outcome (succeeded, dead, cancelled)",
            metrics.finished.clone(),
        );
        registry.register(
            "job_attempts",
            "Attempts that ended, by outcome (succeeded, failed, lease_expired, timed_out, cancelled, suspended, released)",
            metrics.attempts.clone(),
        );
        registry.register(
            "idempotent_replays",
            "Enqueue requests answered with an existing job",
            metrics.replays.clone(),
        );
        registry.register_with_unit(
            "job_schedule_to_start",
            "From when a job was due to when an attempt started",
            Unit::Seconds,
            metrics.schedule_to_start.clone(),
        );
        registry.register_with_unit(
            "job_attempt_duration",
            "From an attempt's start to its end",
            Unit::Seconds,
            metrics.attempt_duration.clone(),
        );
        registry.register_with_unit(
            "job_end_to_end",
            "From enqueue to a final state",
            Unit::Seconds,
            metrics.end_to_end.clone(),
        );
        registry.register(
            "queue_depth",
            "Unfinished jobs by queue and state",
            metrics.queue_depth.clone(),
        );
        registry.register_with_unit(
            "queue_oldest_job_age",
            "Age of the oldest ready job (due and not started) per queue",
            Unit::Seconds,
            metrics.oldest_job_age.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            metrics.http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "HTTP request latency by route template and method",
            Unit::Seconds,
            metrics.http_duration.clone(),
        );
        registry.register(
            "slo_alert",
            "1 while an SLO's burn-rate alert of this severity fires",
            metrics.slo_alerts.clone(),
        );
        registry.register(
            "inbox_events",
            "Webhook deliveries by source kind and outcome (accepted, duplicate, rejected)",
            metrics.inbox_events.clone(),
        );
        registry.register(
            "retries_deferred",
            "Retries a queue's retry budget sent back to wait, rather than lease",
            metrics.retries_deferred.clone(),
        );
        registry.register(
            "schedule_ticks",
            "Schedule ticks handled, by the queue they enqueue to and outcome: fired, skipped_overlap, missed, failed",
            metrics.schedule_ticks.clone(),
        );
        registry.register(
            "producer_gaps",
            "Holes that opened in producers' sequence numbers (a number arrived past one not received); \
             GET /v1/producers/{id} lists what is still missing",
            metrics.producer_gaps.clone(),
        );
        registry.register(
            "outbox_refused",
            "Requests written with steadfast.enqueue (PostgreSQL) whose job was refused for good: \
             an invalid request or payload; the entry stays in the outbox with the error",
            metrics.outbox_refused.clone(),
        );
        registry.register(
            "jobs_held",
            "Ready jobs that flow control holds, by queue and reason (paused, breaker_open, concurrency, \
             key_concurrency, rate, retry_budget)",
            metrics.jobs_held.clone(),
        );
        registry.register(
            "breaker_state",
            "A resource's circuit breaker: 0 closed, 1 half-open, 2 open",
            metrics.breaker_state.clone(),
        );
        // A gauge fixed at 1 rather than OpenMetrics' `info` type, which the
        // classic text format (and `promtool check metrics`) does not know.
        let build = Family::<BuildLabels, Gauge>::default();
        let labels = BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: option_env!("STEADFAST_COMMIT").unwrap_or("unknown").to_owned(),
        };
        build.get_or_create(&labels).set(1);
        registry.register("build_info", "Steadfast's version; always 1", build);
        Metrics { registry, ..metrics }
    }

    /// The label value for `queue`, bounded in cardinality.
    pub fn queue(&self, queue: &str) -> String {
        bounded_label(&self.known_queues, queue)
    }

    /// The label value for `resource`, bounded like the queues'.
    pub fn resource(&self, resource: &str) -> String {
        bounded_label(&self.known_resources, resource)
    }

    /// Counts and times one HTTP request by route template, method and status.
    pub fn record_http(&self, route: String, method: String, status: u16, duration: Duration) {
        let labels = HttpLabels {
            route,
            method,
            status: status.to_string(),
        };
        self.http_requests.get_or_create(&labels).inc();
        let HttpLabels { route, method, .. } = labels;
        self.http_duration
            .get_or_create(&RouteLabels { route, method })
            .observe(duration.as_secs_f64());
    }

    pub fn observe(histograms: &Histograms<QueueLabels>, queue: String, duration: Duration) {
        histograms
            .get_or_create(&QueueLabels { queue })
            .observe(duration.as_secs_f64());
    }

    /// The OpenMetrics text format (what Prometheus asks for).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// The classic Prometheus text format (version 0.0.4), for scrapers and
    /// linters that do not speak OpenMetrics: counters' HELP and TYPE carry
    /// the `_total` name, and OpenMetrics-only lines (`# UNIT`, `# EOF`) go.
    pub fn encode_classic(&self) -> String {
        classic(&self.encode())
    }
}

fn classic(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(renamed.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}
