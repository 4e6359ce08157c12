//! OpenTelemetry traces, exported over OTLP/HTTP when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and the other `OTEL_*` variables are
//! honoured by the exporter). Without it nothing is installed: the spans
//! below go to OpenTelemetry's no-op tracer and cost next to nothing.
//!
//! One trace follows a job: the producer's `traceparent` is the parent of the
//! enqueue request's span; that span's context is stored with the job and
//! handed to workers on lease; workers send it back as `traceparent` on every
//! call for the job, so their requests (heartbeats, steps, completion) join
//! the trace; and the server adds a span for each attempt (`process <queue>`,
//! from lease to end) following the OpenTelemetry messaging conventions.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceId, Tracer as _};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use sha2::{Digest, Sha256};
use steadfast_core::{Attempt, Job, JobId, Step, Timestamp};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Installs the OTLP exporter if `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn init_from_env() -> Option<SdkTracerProvider> {
    std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT")?;
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("OpenTelemetry export disabled: {error}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("steadfast")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .with_id_generator(Ids::default())
        .build();
    global::set_tracer_provider(provider.clone());
    EXPORTING.store(true, Ordering::Relaxed);
    Some(provider)
}

/// Whether spans are exported (an exporter is installed).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: when not, span-only work can be skipped.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

thread_local! {
    /// The id the next span started on this thread must have.
    static CHOSEN_SPAN_ID: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// Random ids, except where a span's id had to be known before it started:
/// an attempt's span is recorded when the attempt ends, but its id is handed
/// to the worker at lease so the worker's calls nest under it.
#[derive(Debug, Default)]
struct Ids(RandomIdGenerator);

impl IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
        self.0.new_trace_id()
    }

    fn new_span_id(&self) -> SpanId {
        CHOSEN_SPAN_ID.take().unwrap_or_else(|| self.0.new_span_id())
    }
}

/// The span id of attempt `attempt` of job `id`: derived, so lease and
/// attempt end agree on it without storing it.
fn attempt_span_id(id: JobId, attempt: u32) -> SpanId {
    let digest = Sha256::new()
        .chain_update(b"steadfast attempt span")
        .chain_update(id.0.as_bytes())
        .chain_update(attempt.to_be_bytes())
        .finalize();
    let bytes: [u8; 8] = digest[..8].try_into().expect("8 bytes");
    match SpanId::from_bytes(bytes) {
        SpanId::INVALID => SpanId::from_bytes([0, 0, 0, 0, 0, 0, 0, 1]),
        id => id,
    }
}

/// The trace context handed to the worker with a lease: the attempt's span
/// when spans are exported, else the job's stored context unchanged.
pub fn lease_traceparent(job: &Job) -> Option<String> {
    let stored = job.traceparent.as_ref()?;
    if !EXPORTING.load(Ordering::Relaxed) {
        return Some(stored.clone());
    }
    let parent = from_traceparent(stored);
    let parent = parent.span();
    let parent = parent.span_context();
    let attempt = SpanContext::new(
        parent.trace_id(),
        attempt_span_id(job.id, job.attempt),
        parent.trace_flags(),
        true,
        parent.trace_state().clone(),
    );
    to_traceparent(&Context::new().with_remote_span_context(attempt)).or_else(|| Some(stored.clone()))
}

/// The `tracing` layer that turns Steadfast's spans (one per HTTP request)
/// into OpenTelemetry spans exported by `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use opentelemetry::trace::TracerProvider as _;
    tracing_opentelemetry::layer().with_tracer(provider.tracer("steadfast"))
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The trace context a request carries in `traceparent`.
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

fn from_traceparent(traceparent: &str) -> Context {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

fn to_traceparent(context: &Context) -> Option<String> {
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// Makes the current tracing span a child of the request's `traceparent`,
/// and records its trace id for the logs.
pub fn adopt_parent(span: &tracing::Span, headers: &HeaderMap) {
    let parent = extract(headers);
    let incoming = to_traceparent(&parent);
    if incoming.is_some() {
        let _ = span.set_parent(parent);
    }
    // When spans are exported the request's own context names the trace
    // (a new one if the caller sent none); otherwise the caller's does.
    if let Some(traceparent) = to_traceparent(&span.context()).or(incoming) {
        span.record("trace_id", tracing::field::display(&traceparent[3..35]));
    }
}

/// Names an exported span (the request span is named after its route once
/// routing has matched one).
pub fn rename(span: &tracing::Span, name: String) {
    span.context().span().update_name(name);
}

/// The context to store with a job enqueued by the current request: the
/// request's span when spans are exported, else the caller's `traceparent`.
pub fn job_traceparent(headers: &HeaderMap) -> Option<String> {
    to_traceparent(&tracing::Span::current().context()).or_else(|| to_traceparent(&extract(headers)))
}

fn system_time(at: Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(at.as_millisecond().max(0) as u64)
}

/// Records an ended attempt as a `process <queue>` span in the job's trace.
pub fn attempt_span(job: &Job, attempt: &Attempt) {
    let Some(traceparent) = &job.traceparent else { return };
    let parent = from_traceparent(traceparent);
    if !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    let tracer = global::tracer("steadfast");
    CHOSEN_SPAN_ID.set(Some(attempt_span_id(job.id, attempt.number)));
    let mut span = tracer
        .span_builder(format!("process {}", job.queue))
        .with_kind(SpanKind::Consumer)
        .with_start_time(system_time(attempt.started_at))
        .with_attributes([
            KeyValue::new("messaging.system", "steadfast"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", job.queue.to_string()),
            KeyValue::new("messaging.message.id", job.id.to_string()),
            KeyValue::new("steadfast.attempt", i64::from(attempt.number)),
            KeyValue::new("steadfast.outcome", attempt.outcome.as_str()),
            KeyValue::new("steadfast.worker_id", attempt.worker_id.to_string()),
        ])
        .start_with_context(&tracer, &parent);
    CHOSEN_SPAN_ID.set(None);
    span.end_with_timestamp(system_time(attempt.ended_at));
}

/// Records a checkpointed step as a `step <name>` span, a child of the
/// attempt that ran it: `traceparent` when the request gave one per step (a
/// batch), else the caller's `traceparent` header.
pub fn step_span(headers: &HeaderMap, traceparent: Option<&str>, job: JobId, step: &Step) {
    let Some(completed_at) = step.completed_at else { return };
    if !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    let parent = traceparent.map_or_else(|| extract(headers), from_traceparent);
    if !parent.span().span_context().is_valid() {
        return;
    }
    let tracer = global::tracer("steadfast");
    let mut span = tracer
        .span_builder(format!("step {}", step.name.as_str()))
        .with_kind(SpanKind::Internal)
        .with_start_time(system_time(step.started_at))
        .with_attributes([
            KeyValue::new("messaging.message.id", job.to_string()),
            KeyValue::new("steadfast.step", step.name.as_str().to_owned()),
            KeyValue::new("steadfast.attempt", i64::from(step.attempt)),
        ])
        .start_with_context(&tracer, &parent);
    span.end_with_timestamp(system_time(completed_at));
}
