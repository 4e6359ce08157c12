//! `/metrics`: the counts match what was done, names follow Prometheus
//! conventions, and access needs a reader or admin key.

mod common;

use common::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;
use steadfast_core::Role;
use steadfast_server::EngineConfig;

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

async fn metrics_count_what_happened(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let reader = server.key("acme", Role::Reader).await;
    let ids: Vec<String> = enqueue_three(&server, &admin).await;
    let first = server.lease_one(&admin, "m", "w").await;
    server
        .post(
            &format!("/v1/jobs/{}/complete", first["id"].as_str().unwrap()),
            &admin,
            json!({"lease_token": first["lease_token"]}),
        )
        .await;
    let second = server.lease_one(&admin, "m", "w").await;
    let hopeless = json!({"lease_token": second["lease_token"], "error": {"message": "bad"}, "retryable": false});
    server
        .post(
            &format!("/v1/jobs/{}/fail", second["id"].as_str().unwrap()),
            &admin,
            hopeless,
        )
        .await;
    server
        .post(&format!("/v1/jobs/{}/cancel", ids[2]), &admin, json!({}))
        .await;
    server
        .post(
            "/v1/jobs",
            &admin,
            json!({"queue": "m", "payload": {}, "idempotency_key": "again"}),
        )
        .await;
    server
        .post(
            "/v1/jobs",
            &admin,
            json!({"queue": "m", "payload": {}, "idempotency_key": "again"}),
        )
        .await;

    let scrape = server.get("/metrics", &reader).await;
    assert_eq!(scrape.status, StatusCode::OK);
    assert!(
        scrape.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = scrape.text;
    assert_eq!(
        value(&text, r#"steadfast_jobs_enqueued_total{queue="m"}"#),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"steadfast_idempotent_replays_total{queue="m"}"#),
        Some(1.0)
    );
    for outcome in ["succeeded", "dead", "cancelled"] {
        let series = format!(r#"steadfast_jobs_finished_total{{queue="m",outcome="{outcome}"}}"#);
        assert_eq!(value(&text, &series), Some(1.0), "{series}");
    }
    assert_eq!(
        value(&text, r#"steadfast_job_attempts_total{queue="m",outcome="failed"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"steadfast_queue_depth{queue="m",state="queued"}"#),
        Some(1.0),
        "one job left queued"
    );
    assert_eq!(
        value(&text, r#"steadfast_job_schedule_to_start_seconds_count{queue="m"}"#),
        Some(2.0)
    );
    assert!(
        text.contains(r#"steadfast_http_requests_total{route="/v1/jobs/{id}/complete",method="POST",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains("steadfast_build_info{"));
    assert!(!text.contains(&ids[0]), "raw paths with ids never become labels");
}

async fn enqueue_three(server: &TestServer, key: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            server.enqueue(key, json!({"queue": "m", "payload": {"n": n}})).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids
}

async fn metrics_need_a_reader_or_admin_key(backend: Backend) {
    let server = TestServer::start(backend).await;
    let anonymous = server.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let producer = server.key("acme", Role::Producer).await;
    assert_eq!(server.get("/metrics", &producer).await.status, StatusCode::FORBIDDEN);
    let admin = server.key("acme", Role::Admin).await;
    assert_eq!(server.get("/metrics", &admin).await.status, StatusCode::OK);
    let openmetrics = reqwest::Client::new()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(&admin)
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    let content_type = openmetrics.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "Prometheus gets what it asks for: {content_type}"
    );
    assert!(openmetrics.text().await.unwrap().ends_with("# EOF\n"));
}

/// `record_metrics: false` (the benchmark's `--no-metrics`) really records
/// nothing, so the A/B in BENCHMARKS.md compares what it claims to.
async fn metrics_can_be_switched_off_to_measure_their_cost(backend: Backend) {
    let config = EngineConfig {
        record_metrics: false,
        ..EngineConfig::default()
    };
    let server = TestServer::start_with(backend, config).await;
    let admin = server.key("acme", Role::Admin).await;
    enqueue_three(&server, &admin).await;
    let leased = server.lease_one(&admin, "m", "w").await;
    server
        .post(
            &format!("/v1/jobs/{}/complete", leased["id"].as_str().unwrap()),
            &admin,
            json!({"lease_token": leased["lease_token"]}),
        )
        .await;
    let text = server.get("/metrics", &admin).await.text;
    for family in [
        "steadfast_jobs_enqueued_total{",
        "steadfast_jobs_finished_total{",
        "steadfast_job_attempts_total{",
        "steadfast_job_schedule_to_start_seconds_count{",
        "steadfast_http_requests_total{",
    ] {
        assert!(!text.contains(family), "{family} recorded: {text}");
    }
    // Scrape-time gauges still report the queue.
    assert_eq!(
        value(&text, r#"steadfast_queue_depth{queue="m",state="queued"}"#),
        Some(2.0),
        "{text}"
    );
}

on_both_backends!(
    metrics_count_what_happened,
    metrics_need_a_reader_or_admin_key,
    metrics_can_be_switched_off_to_measure_their_cost
);
