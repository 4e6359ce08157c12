//! Flow control over HTTP: queue policies, resources and breakers, held
//! jobs in `GET /v1/queues`, `/fail` with `retry_after_ms`, and the
//! metrics, on a real server over each backend with a manual clock.

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use steadfast_core::Role;

on_both_backends!(
    a_policy_is_set_by_merge_patch_read_back_and_refused_when_out_of_bounds,
    queues_list_their_policy_counts_busiest_keys_and_held_jobs,
    a_waiting_worker_gets_the_slot_a_finished_job_frees,
    resources_are_configured_read_listed_and_deleted,
    a_failure_may_ask_for_a_wait_and_a_rate_limit_spends_no_attempt,
    the_flow_metrics_show_held_jobs_breakers_and_deferred_retries,
    singletons_answer_with_their_job_and_refuse_a_replace_once_it_runs,
    many_workers_never_hold_more_than_key_concurrency_of_a_key,
);

async fn put(server: &TestServer, path: &str, key: &str, body: Value) -> common::Response {
    server.call(Method::PUT, path, Some(key), Some(body)).await
}

async fn a_policy_is_set_by_merge_patch_read_back_and_refused_when_out_of_bounds(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let reader = server.key("acme", Role::Reader).await;
    let first = put(
        &server,
        "/v1/queues/sync/policy",
        &admin,
        json!({"key_concurrency": 2, "concurrency": 8}),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let second = put(
        &server,
        "/v1/queues/sync/policy",
        &admin,
        json!({"concurrency": null, "rate": {"limit": 100, "period_ms": 1000}, "fairness": "flow_key",
               "weights": {"acme": 3}, "retry_budget": {"ratio": 0.1}}),
    )
    .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    let policy = server.get("/v1/queues/sync/policy", &reader).await.json();
    assert_eq!(policy["queue"], "sync");
    assert_eq!(policy["key_concurrency"], 2, "left out: kept");
    assert_eq!(policy["concurrency"], Value::Null, "null: removed");
    assert_eq!(
        policy["rate"],
        json!({"limit": 100, "period_ms": 1000, "burst": 100}),
        "burst defaults to limit"
    );
    assert_eq!(policy["weights"], json!({"acme": 3}));
    assert_eq!(policy["retry_budget"], json!({"ratio": 0.1, "min_per_sec": 1.0}));
    assert_eq!(policy["paused"], false);

    for (body, field) in [
        (json!({"concurrency": 0}), "concurrency"),
        (json!({"key_rate": {"limit": 1, "period_ms": 0}}), "key_rate.period_ms"),
        (json!({"retry_budget": {"ratio": -1}}), "retry_budget.ratio"),
        (json!({"fairness": null}), "weights"),
        (json!({"weights": {"": 2}}), "weights"),
        (json!({"fairness": "round_robin"}), ""),
        (json!({"paused": true, "surprise": 1}), ""),
    ] {
        let refused = put(&server, "/v1/queues/sync/policy", &admin, body.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            refused.text
        );
        assert!(refused.text.contains(field), "{body}: {}", refused.text);
    }
    assert_eq!(
        server.get("/v1/queues/sync/policy", &reader).await.json(),
        policy,
        "refusals change nothing"
    );
    let forbidden = put(&server, "/v1/queues/sync/policy", &reader, json!({"paused": true})).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let bad_queue = put(
        &server,
        "/v1/queues/no%20spaces/policy",
        &admin,
        json!({"paused": true}),
    )
    .await;
    assert_eq!(bad_queue.status, StatusCode::UNPROCESSABLE_ENTITY);

    let audit = server.get("/v1/audit?action=queue.policy_set", &admin).await.json();
    assert_eq!(audit["records"].as_array().unwrap().len(), 2, "{audit}");
    let other = server.key("globex", Role::Admin).await;
    assert_eq!(
        server.get("/v1/queues/sync/policy", &other).await.json()["key_concurrency"],
        Value::Null
    );
}

async fn queues_list_their_policy_counts_busiest_keys_and_held_jobs(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let worker = server.key("acme", Role::Worker).await;
    for key in ["a", "a", "a", "b"] {
        server
            .enqueue(&admin, json!({"queue": "sync", "payload": {}, "flow_key": key}))
            .await;
    }
    server.enqueue(&admin, json!({"queue": "mail", "payload": {}})).await;
    put(&server, "/v1/queues/sync/policy", &admin, json!({"key_concurrency": 1})).await;
    put(&server, "/v1/queues/mail/policy", &admin, json!({"paused": true})).await;
    let leased = server
        .post(
            "/v1/lease",
            &worker,
            json!({"queues": ["sync", "mail"], "worker_id": "w", "max_jobs": 10}),
        )
        .await
        .json();
    assert_eq!(
        leased["jobs"].as_array().unwrap().len(),
        2,
        "one per key; mail is paused"
    );

    let list = server.get("/v1/queues", &admin).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let queues = list.json()["queues"].as_array().unwrap().clone();
    let names: Vec<&str> = queues.iter().map(|q| q["queue"].as_str().unwrap()).collect();
    assert_eq!(names, ["mail", "sync"]);
    assert_eq!(queues[0]["held"]["paused"], 1);
    assert_eq!(queues[0]["policy"]["paused"], true);
    let sync = &queues[1];
    assert_eq!(
        sync["counts"],
        json!({"scheduled": 0, "queued": 2, "running": 2, "waiting": 0})
    );
    assert_eq!(sync["held"]["key_concurrency"], 2);
    assert_eq!(
        sync["busiest_keys"],
        json!([{"flow_key": "a", "running": 1}, {"flow_key": "b", "running": 1}])
    );
    let bad = server
        .post(
            "/v1/jobs",
            &admin,
            json!({"queue": "sync", "payload": {}, "flow_key": "tab\there"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    assert!(bad.text.contains("flow_key"));
}

async fn a_waiting_worker_gets_the_slot_a_finished_job_frees(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let worker = server.key("acme", Role::Worker).await;
    put(&server, "/v1/queues/render/policy", &admin, json!({"concurrency": 1})).await;
    for _ in 0..2 {
        server.enqueue(&admin, json!({"queue": "render", "payload": {}})).await;
    }
    let first = server.lease_one(&worker, "render", "w1").await;
    // A second worker long-polls; the held queue gives it nothing until the
    // first job completes and frees the slot, before its 20 s wait ends.
    let waiting = {
        let url = format!("{}/v1/lease", server.url);
        let worker = worker.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(worker)
                .json(&json!({"queues": ["render"], "worker_id": "w2", "wait_ms": 20_000}))
                .send()
                .await
                .unwrap();
            (response.json::<Value>().await.unwrap(), started.elapsed())
        })
    };
    let id = first["id"].as_str().unwrap();
    let token = first["lease_token"].as_str().unwrap();
    let done = server
        .post(
            &format!("/v1/jobs/{id}/complete"),
            &worker,
            json!({"lease_token": token, "output": 1}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    let (second, waited) = waiting.await.unwrap();
    assert_eq!(second["jobs"].as_array().unwrap().len(), 1, "{second}");
    assert!(
        waited < Duration::from_secs(20),
        "the freed slot, not the wait's end, answered"
    );
}

async fn resources_are_configured_read_listed_and_deleted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let reader = server.key("acme", Role::Reader).await;
    let breaker = json!({"failure_ratio": 0.5, "min_requests": 2, "window_secs": 60, "open_secs": 30,
                         "half_open_probes": 1});
    let created = put(
        &server,
        "/v1/resources/stripe",
        &admin,
        json!({"breaker": breaker, "concurrency": 4, "rate": {"limit": 100, "period_ms": 1000}}),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    let read = server.get("/v1/resources/stripe", &reader).await.json();
    assert_eq!(read["state"], "closed");
    assert_eq!(read["breaker"], breaker);
    assert_eq!(read["window"]["requests"], 0);
    assert_eq!(read["opened_at"], Value::Null);

    // Two timeouts open it; its jobs wait without spending attempts.
    let worker = server.key("acme", Role::Worker).await;
    for _ in 0..3 {
        server
            .enqueue(&admin, json!({"queue": "pay", "payload": {}, "resource": "stripe"}))
            .await;
    }
    for _ in 0..2 {
        let job = server.lease_one(&worker, "pay", "w").await;
        let failed = server
            .post(
                &format!("/v1/jobs/{}/fail", job["id"].as_str().unwrap()),
                &worker,
                json!({"lease_token": job["lease_token"], "error": {"message": "slow", "kind": "timeout"}}),
            )
            .await;
        assert_eq!(failed.status, StatusCode::OK, "{}", failed.text);
    }
    let open = server.get("/v1/resources/stripe", &reader).await.json();
    assert_eq!(open["state"], "open", "{open}");
    assert_eq!(open["window"]["failures"], 2);
    let none = server
        .post("/v1/lease", &worker, json!({"queues": ["pay"], "worker_id": "w"}))
        .await
        .json();
    assert_eq!(none["jobs"], json!([]));
    let queues = server.get("/v1/queues", &reader).await.json();
    assert!(
        queues["queues"][0]["held"]["breaker_open"].as_u64().unwrap() >= 1,
        "{queues}"
    );
    server.advance(Duration::from_secs(31));
    assert_eq!(
        server.get("/v1/resources/stripe", &reader).await.json()["state"],
        "half_open"
    );

    let listed = server.get("/v1/resources", &reader).await.json();
    assert_eq!(listed["resources"].as_array().unwrap().len(), 1);
    for (body, field) in [
        (
            json!({"breaker": {"failure_ratio": 0, "min_requests": 1, "window_secs": 1, "open_secs": 1,
                            "half_open_probes": 1}}),
            "failure_ratio",
        ),
        (json!({"concurrency": 0}), "concurrency"),
        (json!({"rate": {"limit": 1, "period_ms": 1, "burst": 0}}), "rate.burst"),
    ] {
        let refused = put(&server, "/v1/resources/stripe", &admin, body.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            refused.text
        );
        assert!(refused.text.contains(field), "{}", refused.text);
    }
    let forbidden = put(&server, "/v1/resources/stripe", &reader, json!({})).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let deleted = server
        .call(Method::DELETE, "/v1/resources/stripe", Some(&admin), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get("/v1/resources/stripe", &reader).await.status,
        StatusCode::NOT_FOUND
    );
    let again = server
        .call(Method::DELETE, "/v1/resources/stripe", Some(&admin), None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(
        server.get("/v1/resources/no%20such", &reader).await.status,
        StatusCode::NOT_FOUND
    );
    let other = server.key("globex", Role::Reader).await;
    assert_eq!(server.get("/v1/resources", &other).await.json()["resources"], json!([]));
}

async fn a_failure_may_ask_for_a_wait_and_a_rate_limit_spends_no_attempt(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let worker = server.key("acme", Role::Worker).await;
    let job = server
        .enqueue(&admin, json!({"queue": "api", "payload": {}, "max_attempts": 1}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let leased = server.lease_one(&worker, "api", "w").await;
    let too_long = server
        .post(
            &format!("/v1/jobs/{id}/fail"),
            &worker,
            json!({"lease_token": leased["lease_token"], "error": {"message": "429"}, "retry_after_ms": 86_400_001u64}),
        )
        .await;
    assert_eq!(too_long.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", too_long.text);
    let failed = server
        .post(
            &format!("/v1/jobs/{id}/fail"),
            &worker,
            json!({"lease_token": leased["lease_token"], "error": {"message": "429", "kind": "rate_limited"},
                   "retry_after_ms": 45_000}),
        )
        .await
        .json();
    assert_eq!(failed["state"], "scheduled", "{failed}");
    assert_eq!(failed["attempts_left"], 1, "the rate-limited attempt is not spent");
    let run_at: jiff::Timestamp = failed["run_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(run_at, common::t0() + jiff::SignedDuration::from_secs(45));
}

async fn the_flow_metrics_show_held_jobs_breakers_and_deferred_retries(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let worker = server.key("acme", Role::Worker).await;
    put(&server, "/v1/queues/mail/policy", &admin, json!({"paused": true})).await;
    server.enqueue(&admin, json!({"queue": "mail", "payload": {}})).await;
    put(
        &server,
        "/v1/resources/smtp",
        &admin,
        json!({"breaker": {"failure_ratio": 1, "min_requests": 1,
        "window_secs": 60, "open_secs": 60, "half_open_probes": 1}}),
    )
    .await;
    // A retry budget of nothing: the failed job's retry is deferred.
    put(
        &server,
        "/v1/queues/fragile/policy",
        &admin,
        json!({"retry_budget": {"ratio": 0, "min_per_sec": 0}}),
    )
    .await;
    server
        .enqueue(&admin, json!({"queue": "fragile", "payload": {}, "resource": "smtp"}))
        .await;
    let job = server.lease_one(&worker, "fragile", "w").await;
    // A failure of a kind that says nothing about the downstream: the
    // breaker stays closed, and the retry is held only by the budget.
    let failed = server
        .post(
            &format!("/v1/jobs/{}/fail", job["id"].as_str().unwrap()),
            &worker,
            json!({"lease_token": job["lease_token"], "error": {"message": "bad row", "kind": "invalid_input"}}),
        )
        .await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.text);
    server.advance(Duration::from_secs(3600));
    server.engine.run_duties_once().await.unwrap();
    let none = server
        .post("/v1/lease", &worker, json!({"queues": ["fragile"], "worker_id": "w"}))
        .await
        .json();
    assert_eq!(none["jobs"], json!([]), "the retry is deferred");

    let metrics = server.get("/metrics", &admin).await.text;
    assert!(
        metrics.contains(r#"steadfast_jobs_held{queue="mail",reason="paused"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"steadfast_retries_deferred_total{queue="fragile"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"steadfast_breaker_state{resource="smtp"} 0"#),
        "{metrics}"
    );
}

async fn singletons_answer_with_their_job_and_refuse_a_replace_once_it_runs(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let worker = server.key("acme", Role::Worker).await;
    let body = |v: u32, mode: &str| json!({"queue": "sync", "payload": {"v": v}, "singleton": {"key": "acct-1", "mode": mode}});
    let created = server.post("/v1/jobs", &admin, body(1, "skip")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let skipped = server.post("/v1/jobs", &admin, body(2, "skip")).await;
    assert_eq!(skipped.status, StatusCode::OK);
    assert_eq!(skipped.headers["steadfast-singleton"], "skipped");
    assert_eq!(skipped.json()["id"], created.json()["id"]);
    assert_eq!(skipped.json()["payload"], json!({"v": 1}));
    assert_eq!(skipped.json()["singleton_key"], "acct-1");
    let replaced = server.post("/v1/jobs", &admin, body(3, "replace")).await;
    assert_eq!(replaced.headers["steadfast-singleton"], "replaced");
    assert_eq!(replaced.json()["payload"], json!({"v": 3}));

    server.lease_one(&worker, "sync", "w").await;
    let refused = server.post("/v1/jobs", &admin, body(4, "replace")).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert_eq!(refused.code(), "singleton_running");
    let batch = server
        .post(
            "/v1/jobs/batch",
            &admin,
            json!({"jobs": [{"queue": "other", "payload": {}}, body(5, "replace")]}),
        )
        .await;
    assert_eq!(batch.status, StatusCode::CONFLICT, "{}", batch.text);
    assert!(batch.text.contains("jobs[1]"), "{}", batch.text);
    assert_eq!(server.job_count(&admin).await, 1, "a refused batch creates nothing");

    for (bad, field) in [
        (json!({"queue": "q", "payload": {}, "debounce_ms": 100}), "debounce_ms"),
        (
            json!({"queue": "q", "payload": {}, "singleton": {"key": "k", "mode": "skip"}, "debounce_ms": 100}),
            "singleton.mode",
        ),
        (
            json!({"queue": "q", "payload": {}, "singleton": {"key": "k"}, "debounce_ms": 100, "debounce_max_ms": 50}),
            "debounce_max_ms",
        ),
        (
            json!({"queue": "q", "payload": {}, "singleton": {"key": ""}}),
            "singleton.key",
        ),
        (
            json!({"queue": "q", "payload": {}, "singleton": {"key": "k"}, "debounce_ms": 100, "run_at": "2030-01-01T00:00:00Z"}),
            "run_at",
        ),
        (
            json!({"queue": "q", "payload": {}, "singleton": {"key": "k", "mode": "merge"}}),
            "",
        ),
    ] {
        let response = server.post("/v1/jobs", &admin, bad.clone()).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            response.text
        );
        assert!(response.text.contains(field), "{bad}: {}", response.text);
    }
    let debounced = server
        .post(
            "/v1/jobs",
            &admin,
            json!({"queue": "d", "payload": {}, "singleton": {"key": "k"}, "debounce_ms": 5000}),
        )
        .await
        .json();
    assert_eq!(debounced["state"], "scheduled");
    let run_at: jiff::Timestamp = debounced["run_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(run_at, common::t0() + jiff::SignedDuration::from_secs(5));
}

/// Eight workers lease concurrently from a queue with `key_concurrency: 2`
/// and random keys: counted from the workers' side (a job counts from the
/// moment its lease is answered until just before its completion is sent),
/// no key ever has more than two.
async fn many_workers_never_hold_more_than_key_concurrency_of_a_key(backend: Backend) {
    const JOBS: usize = 240;
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let worker = server.key("acme", Role::Worker).await;
    put(
        &server,
        "/v1/queues/hammer/policy",
        &admin,
        json!({"key_concurrency": 2}),
    )
    .await;
    let jobs: Vec<Value> = (0..JOBS)
        .map(|i| json!({"queue": "hammer", "payload": {}, "flow_key": format!("k{}", (i * 31) % 5)}))
        .collect();
    assert_eq!(
        server
            .post("/v1/jobs/batch", &admin, json!({"jobs": jobs}))
            .await
            .status,
        StatusCode::CREATED
    );
    let held: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> = Default::default();
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let mut workers = Vec::new();
    for w in 0..8 {
        let (url, key, http) = (server.url.clone(), worker.clone(), http.clone());
        let (held, most, done) = (held.clone(), most.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while done.load(std::sync::atomic::Ordering::SeqCst) < JOBS && std::time::Instant::now() < deadline {
                let body = json!({"queues": ["hammer"], "worker_id": format!("w{w}"), "max_jobs": 1 + w % 3,
                                  "wait_ms": 100});
                let leased: Value = http
                    .post(format!("{url}/v1/lease"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let jobs = leased["jobs"].as_array().cloned().unwrap_or_default();
                for job in &jobs {
                    let mut held = held.lock().unwrap();
                    let n = held.entry(job["flow_key"].as_str().unwrap().to_owned()).or_default();
                    *n += 1;
                    most.fetch_max(*n, std::sync::atomic::Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
                for job in &jobs {
                    *held.lock().unwrap().get_mut(job["flow_key"].as_str().unwrap()).unwrap() -= 1;
                    let id = job["id"].as_str().unwrap();
                    let completed = http
                        .post(format!("{url}/v1/jobs/{id}/complete"))
                        .bearer_auth(&key)
                        .json(&json!({"lease_token": job["lease_token"], "output": 1}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(completed.status(), StatusCode::OK);
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), JOBS, "every job ran");
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&most), "a key had {most} jobs held at once");
}
