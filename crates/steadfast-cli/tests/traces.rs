//! One trace follows a job across processes: a real `steadfast serve`
//! exports over OTLP/HTTP to a receiver in this test, which decodes the
//! protobuf the way an OpenTelemetry Collector would.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::ServerProcess;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use steadfast_sdk::{Client, Worker, WorkerConfig, wire};

type Received = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP trace receiver on loopback; returns its base URL.
async fn receiver(received: Received) -> String {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| async move {
            let request = ExportTraceServiceRequest::decode(body).expect("a valid OTLP protobuf body");
            let spans = request
                .resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans);
            received.lock().unwrap().extend(spans);
            // An empty ExportTraceServiceResponse.
            ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_one_trace_from_producer_through_worker_calls() {
    let received = Received::default();
    let collector = receiver(received.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(
        &dir.path().join("data"),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            // Log each response, to check the lines carry the trace id.
            ("RUST_LOG", "info,tower_http=debug"),
        ],
    );
    let key = server.admin_key();

    // The producer's own span: the job's trace continues it.
    let (trace_id, producer_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let producer = Client::new(&server.url, &key)
        .unwrap()
        .with_traceparent(Some(&format!("00-{trace_id}-{producer_span}-01")));
    let enqueued = producer
        .enqueue(
            &serde_json::from_value::<wire::EnqueueRequest>(serde_json::json!({"queue": "traced", "payload": {}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let job_id = enqueued.job.id.to_string();

    // A worker with no trace of its own: the SDK joins the job's trace.
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let done = Arc::new(Mutex::new(Some(done)));
    let worker =
        Worker::new(Client::new(&server.url, &key).unwrap(), WorkerConfig::default()).handle("traced", move |ctx| {
            let done = done.clone();
            async move {
                let charged: u32 = ctx.step("charge", |_| async { Ok(42) }).await?;
                // Suspends the first attempt; a second attempt finishes the job.
                ctx.sleep("nap", Duration::from_millis(50)).await?;
                if let Some(done) = done.lock().unwrap().take() {
                    let _ = done.send(());
                }
                Ok(charged)
            }
        });
    let worker = tokio::spawn(worker.run_until(async {
        let _ = finished.await;
    }));
    tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let job = producer.get_job(&job_id).await.unwrap();
    assert_eq!(job.state, wire::JobState::Succeeded);

    // Every span we expect, polled with a deadline (export is batched).
    let wanted = [
        "POST /v1/jobs",
        "process traced",
        "step charge",
        "POST /v1/jobs/{id}/steps/{name}/start",
        "PUT /v1/jobs/{id}/steps/{name}",
        "POST /v1/jobs/{id}/wait",
        "POST /v1/jobs/{id}/complete",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = received.lock().unwrap().clone();
        let in_trace: Vec<Span> = spans.into_iter().filter(|s| hex(&s.trace_id) == trace_id).collect();
        let attempts = in_trace.iter().filter(|s| s.name == "process traced").count();
        if attempts == 2 && wanted.iter().all(|name| in_trace.iter().any(|s| s.name == *name)) {
            break in_trace;
        }
        assert!(
            Instant::now() < deadline,
            "spans missing from the job's trace; have {:?}",
            in_trace.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let named = |name: &str| spans.iter().find(|s| s.name == name).unwrap();

    let enqueue = named("POST /v1/jobs");
    assert_eq!(
        hex(&enqueue.parent_span_id),
        producer_span,
        "the enqueue continues the producer's span"
    );
    assert_eq!(attribute(enqueue, "http.route").as_deref(), Some("/v1/jobs"));
    assert_eq!(attribute(enqueue, "http.response.status_code").as_deref(), Some("201"));

    let attempt = |n: &str| {
        spans
            .iter()
            .find(|s| s.name == "process traced" && attribute(s, "steadfast.attempt").as_deref() == Some(n))
            .unwrap_or_else(|| panic!("no span for attempt {n}"))
    };
    let (first, second) = (attempt("1"), attempt("2"));
    for process in [first, second] {
        assert_eq!(
            process.parent_span_id, enqueue.span_id,
            "each attempt is a child of the enqueue"
        );
        assert_eq!(
            attribute(process, "messaging.message.id").as_deref(),
            Some(job_id.as_str())
        );
        assert!(process.end_time_unix_nano >= process.start_time_unix_nano);
    }
    assert_eq!(attribute(first, "steadfast.outcome").as_deref(), Some("suspended"));
    assert_eq!(attribute(second, "steadfast.outcome").as_deref(), Some("succeeded"));
    assert!(second.start_time_unix_nano >= first.end_time_unix_nano);

    // The worker's calls, and the step it ran, nest under the attempt that made them.
    for name in &wanted[2..6] {
        assert_eq!(
            named(name).parent_span_id,
            first.span_id,
            "{name} nests under the first attempt"
        );
    }
    assert_eq!(named("POST /v1/jobs/{id}/complete").parent_span_id, second.span_id);
    let step = named("step charge");
    assert_eq!(attribute(step, "steadfast.step").as_deref(), Some("charge"));
    assert!(step.start_time_unix_nano >= first.start_time_unix_nano);
    assert!(step.end_time_unix_nano <= first.end_time_unix_nano);
    // Log lines written while handling the job's requests name its trace.
    assert!(
        server.stderr().contains(&format!("trace_id={trace_id}")),
        "{}",
        server.stderr()
    );
    // Leasing serves many jobs at once, so it starts traces of its own.
    assert!(!spans.iter().any(|s| s.name == "POST /v1/lease"));
}
