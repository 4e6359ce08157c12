//! The HTTP API over loopback: the job life, idempotency, fencing, roles.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Backend, TestServer};
use reqwest::StatusCode;
use serde_json::json;
use steadfast_core::{RetryPolicy, Role};
use steadfast_server::EngineConfig;

async fn a_job_goes_from_enqueue_through_lease_to_succeeded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let body = json!({"queue": "emails", "payload": {"to": "a@example.com"}, "idempotency_key": "signup-1"});

    let first = server.post("/v1/jobs", &admin, body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let job = first.json();
    assert_eq!(job["state"], "queued");
    assert_eq!(job["payload"], json!({"to": "a@example.com"}));

    let replay = server.post("/v1/jobs", &admin, body).await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.json()["id"], job["id"]);
    assert_eq!(server.job_count(&admin).await, 1);

    let leased = server.lease_one(&admin, "emails", "worker-1").await;
    assert_eq!(leased["id"], job["id"]);
    assert_eq!(leased["attempt"], 1);
    let id = job["id"].as_str().unwrap();
    let done = server
        .post(
            &format!("/v1/jobs/{id}/complete"),
            &admin,
            json!({"lease_token": leased["lease_token"], "output": {"sent": true}}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);

    let detail = server.get(&format!("/v1/jobs/{id}"), &admin).await.json();
    assert_eq!(detail["state"], "succeeded");
    assert_eq!(detail["output"], json!({"sent": true}));
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(detail["attempts"][0]["worker_id"], "worker-1");
    assert_eq!(detail["attempts"][0]["outcome"], "succeeded");
}

async fn an_idempotency_key_reused_with_another_payload_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let producer = server.key("acme", Role::Producer).await;
    server
        .enqueue(
            &producer,
            json!({"queue": "q", "payload": {"n": 1}, "idempotency_key": "k"}),
        )
        .await;
    let reused = server
        .post(
            "/v1/jobs",
            &producer,
            json!({"queue": "q", "payload": {"n": 2}, "idempotency_key": "k"}),
        )
        .await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.code(), "idempotency_key_reused");
    let reordered = server
        .post(
            "/v1/jobs",
            &producer,
            json!({"payload": {"n": 1}, "idempotency_key": "k", "queue": "q"}),
        )
        .await;
    assert_eq!(
        reordered.status,
        StatusCode::OK,
        "field order does not change the request"
    );
    assert_eq!(server.job_count(&producer).await, 1);
}

async fn concurrent_duplicate_enqueues_create_one_job(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    let producer = server.key("acme", Role::Producer).await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (server, producer) = (server.clone(), producer.clone());
        tasks.push(tokio::spawn(async move {
            let response = server
                .post(
                    "/v1/jobs",
                    &producer,
                    json!({"queue": "q", "payload": {}, "idempotency_key": "once"}),
                )
                .await;
            assert!(response.status.is_success(), "{}", response.text);
            (response.status, response.json()["id"].as_str().unwrap().to_owned())
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for task in tasks {
        let (status, id) = task.await.unwrap();
        created += usize::from(status == StatusCode::CREATED);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1, "every answer names the same job");
    assert_eq!(created, 1, "exactly one answer is 201");
    assert_eq!(server.job_count(&producer).await, 1);
}

async fn a_worker_paused_past_its_lease_cannot_complete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let worker = server.key("acme", Role::Worker).await;
    let producer = server.key("acme", Role::Producer).await;
    let job = server.enqueue(&producer, json!({"queue": "q", "payload": {}})).await;
    let id = job["id"].as_str().unwrap();
    let first = server.lease_one(&worker, "q", "zombie").await;

    // The worker stalls; its lease (30 s) lapses.
    server.advance(Duration::from_secs(31));
    let late = server
        .post(
            &format!("/v1/jobs/{id}/complete"),
            &worker,
            json!({"lease_token": first["lease_token"]}),
        )
        .await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert_eq!(late.code(), "lease_lost");
    let beat = server
        .post(
            &format!("/v1/jobs/{id}/heartbeat"),
            &worker,
            json!({"lease_token": first["lease_token"]}),
        )
        .await;
    assert_eq!(beat.code(), "lease_lost");

    let report = server.engine.run_duties_once().await.unwrap();
    assert_eq!(report.expired, 1);
    let detail = server.get(&format!("/v1/jobs/{id}"), &producer).await.json();
    assert_eq!(detail["attempts"][0]["outcome"], "lease_expired");
    server.advance(Duration::from_secs(2));
    server.engine.run_duties_once().await.unwrap();

    let second = server.lease_one(&worker, "q", "healthy").await;
    assert_eq!(second["attempt"], 2);
    let zombie = server
        .post(
            &format!("/v1/jobs/{id}/complete"),
            &worker,
            json!({"lease_token": first["lease_token"], "output": "zombie"}),
        )
        .await;
    assert_eq!(
        zombie.code(),
        "lease_lost",
        "the old holder never overwrites the new attempt"
    );
    let done = server
        .post(
            &format!("/v1/jobs/{id}/complete"),
            &worker,
            json!({"lease_token": second["lease_token"], "output": "fresh"}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    let detail = server.get(&format!("/v1/jobs/{id}"), &producer).await.json();
    assert_eq!(detail["output"], "fresh");
}

async fn failures_back_off_then_die_and_an_operator_can_retry(backend: Backend) {
    let policy = RetryPolicy {
        base: Duration::from_secs(10),
        cap: Duration::from_secs(10),
    };
    let server = TestServer::start_with(
        backend,
        EngineConfig {
            retry: policy,
            ..EngineConfig::default()
        },
    )
    .await;
    let admin = server.key("acme", Role::Admin).await;
    let job = server
        .enqueue(&admin, json!({"queue": "q", "payload": {}, "max_attempts": 2}))
        .await;
    let id = job["id"].as_str().unwrap();
    let fail = |token: serde_json::Value| json!({"lease_token": token, "error": {"message": "503 from provider", "kind": "http"}});

    let first = server.lease_one(&admin, "q", "w").await;
    let after = server
        .post(
            &format!("/v1/jobs/{id}/fail"),
            &admin,
            fail(first["lease_token"].clone()),
        )
        .await
        .json();
    assert!(after["state"] == "scheduled" || after["state"] == "queued", "{after}");
    server.advance(Duration::from_secs(10));
    server.engine.run_duties_once().await.unwrap();
    let second = server.lease_one(&admin, "q", "w").await;
    let dead = server
        .post(
            &format!("/v1/jobs/{id}/fail"),
            &admin,
            fail(second["lease_token"].clone()),
        )
        .await
        .json();
    assert_eq!(dead["state"], "dead");
    assert_eq!(dead["last_error"]["message"], "503 from provider");

    let retried = server.post(&format!("/v1/jobs/{id}/retry"), &admin, json!({})).await;
    assert_eq!(retried.json()["state"], "queued", "{}", retried.text);
    let third = server.lease_one(&admin, "q", "w").await;
    assert_eq!(third["attempt"], 3);
    let hopeless =
        json!({"lease_token": third["lease_token"], "error": {"message": "invalid card"}, "retryable": false});
    let dead = server
        .post(&format!("/v1/jobs/{id}/fail"), &admin, hopeless)
        .await
        .json();
    assert_eq!(dead["state"], "dead", "retryable: false is dead at once");
    let history = server.get(&format!("/v1/jobs/{id}"), &admin).await.json();
    assert_eq!(history["attempts"].as_array().unwrap().len(), 3);
}

async fn cancel_fences_the_running_worker(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let job = server.enqueue(&admin, json!({"queue": "q", "payload": {}})).await;
    let id = job["id"].as_str().unwrap();
    let leased = server.lease_one(&admin, "q", "w").await;
    let cancelled = server.post(&format!("/v1/jobs/{id}/cancel"), &admin, json!({})).await;
    assert_eq!(cancelled.json()["state"], "cancelled");
    let late = server
        .post(
            &format!("/v1/jobs/{id}/complete"),
            &admin,
            json!({"lease_token": leased["lease_token"]}),
        )
        .await;
    assert_eq!(late.code(), "lease_lost");
    let again = server.post(&format!("/v1/jobs/{id}/cancel"), &admin, json!({})).await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (StatusCode::CONFLICT, "invalid_state")
    );
}

async fn a_long_poll_is_woken_by_an_enqueue(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    let admin = server.key("acme", Role::Admin).await;
    let waiter = {
        let (server, admin) = (server.clone(), admin.clone());
        tokio::spawn(async move {
            server
                .post(
                    "/v1/lease",
                    &admin,
                    json!({"queues": ["late"], "worker_id": "w", "wait_ms": 20000}),
                )
                .await
        })
    };
    // Enqueue only once the lease request is parked; poll until then.
    let job = server
        .enqueue(&admin, json!({"queue": "late", "payload": {"n": 1}}))
        .await;
    let response = waiter.await.unwrap();
    let jobs = response.json()["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 1, "the waiting lease got the job: {}", response.text);
    assert_eq!(jobs[0]["id"], job["id"]);
}

async fn scheduled_jobs_run_at_their_time_and_priority_orders_leases(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let later = common::t0().saturating_add(Duration::from_secs(3600)).unwrap();
    let scheduled = server
        .enqueue(
            &admin,
            json!({"queue": "q", "payload": {}, "run_at": later.to_string()}),
        )
        .await;
    assert_eq!(scheduled["state"], "scheduled");
    let low = server
        .enqueue(&admin, json!({"queue": "q", "payload": {}, "priority": -5}))
        .await;
    let high = server
        .enqueue(&admin, json!({"queue": "q", "payload": {}, "priority": 10}))
        .await;
    assert_eq!(server.lease_one(&admin, "q", "w").await["id"], high["id"]);
    assert_eq!(server.lease_one(&admin, "q", "w").await["id"], low["id"]);
    let empty = server
        .post("/v1/lease", &admin, json!({"queues": ["q"], "worker_id": "w"}))
        .await
        .json();
    assert_eq!(empty["jobs"], json!([]));
    server.advance(Duration::from_secs(3600));
    assert_eq!(server.engine.run_duties_once().await.unwrap().promoted, 1);
    assert_eq!(server.lease_one(&admin, "q", "w").await["id"], scheduled["id"]);
}

async fn batches_are_all_or_nothing_and_bounded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let producer = server.key("acme", Role::Producer).await;
    let good = |n: u32| json!({"queue": "q", "payload": {"n": n}});
    let created = server
        .post("/v1/jobs/batch", &producer, json!({"jobs": [good(1), good(2)]}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json()["jobs"].as_array().unwrap().len(), 2);

    let with_bad = json!({"jobs": [good(3), good(4), {"queue": "bad queue", "payload": {}}]});
    let refused = server.post("/v1/jobs/batch", &producer, with_bad).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("jobs[2].queue"),
        "{}",
        refused.text
    );

    let too_many: Vec<_> = (0..1001).map(good).collect();
    let refused = server
        .post("/v1/jobs/batch", &producer, json!({"jobs": too_many}))
        .await;
    assert_eq!(refused.code(), "batch_too_large");
    assert_eq!(
        server.job_count(&producer).await,
        2,
        "nothing from a refused batch exists"
    );
}

async fn listing_pages_through_every_job_with_filters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let mut ids = Vec::new();
    for n in 0..7 {
        let queue = if n % 2 == 0 { "even" } else { "odd" };
        ids.push(
            server
                .enqueue(&admin, json!({"queue": queue, "payload": {"n": n}}))
                .await["id"]
                .clone(),
        );
    }
    let mut seen = Vec::new();
    let mut path = "/v1/jobs?limit=3".to_owned();
    for _ in 0..10 {
        let page = server.get(&path, &admin).await.json();
        seen.extend(page["jobs"].as_array().unwrap().iter().map(|j| j["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/jobs?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    let odd = server.get("/v1/jobs?queue=odd&state=queued", &admin).await.json();
    assert_eq!(odd["jobs"].as_array().unwrap().len(), 3);
    for bad in [
        "/v1/jobs?limit=0",
        "/v1/jobs?limit=501",
        "/v1/jobs?state=lost",
        "/v1/jobs?cursor=zz",
        "/v1/jobs?color=red",
    ] {
        let response = server.get(bad, &admin).await;
        assert_eq!(
            response.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            response.text
        );
        assert_eq!(response.code(), "validation_failed");
    }
}

async fn health_readiness_and_the_openapi_document(backend: Backend) {
    let server = TestServer::start(backend).await;
    let health = server.call(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );
    let ready = server.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK);
    let spec = server
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await
        .json();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/jobs",
        "/v1/jobs/batch",
        "/v1/jobs/{id}",
        "/v1/lease",
        "/v1/jobs/{id}/heartbeat",
        "/v1/jobs/{id}/complete",
        "/v1/jobs/{id}/fail",
        "/v1/jobs/{id}/retry",
        "/v1/jobs/{id}/cancel",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is documented");
    }
    server.engine.start_draining();
    let draining = server.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (draining.status, draining.json()["status"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("draining"))
    );
}

/// The committed OpenAPI document must match the code. Regenerate with
/// `UPDATE_OPENAPI=1 cargo test -p steadfast-server --test api`.
#[test]
fn the_committed_openapi_document_is_current() {
    let generated = serde_json::to_string_pretty(&steadfast_server::api::openapi()).unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale; regenerate it with UPDATE_OPENAPI=1"
    );
}

async fn batched_completions_stand_alone_and_a_malformed_batch_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let stranger = server.key("globex", Role::Admin).await;
    for n in 0..3 {
        server.enqueue(&admin, json!({"queue": "q", "payload": {"n": n}})).await;
    }
    let leased = server
        .post(
            "/v1/lease",
            &admin,
            json!({"queues": ["q"], "worker_id": "w", "max_jobs": 3}),
        )
        .await
        .json();
    let jobs = leased["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    server.enqueue(&stranger, json!({"queue": "q", "payload": {}})).await;
    let theirs = server.lease_one(&stranger, "q", "w").await;
    let completion = |job: &serde_json::Value, token: &serde_json::Value| json!({"id": job["id"], "lease_token": token, "output": {"ok": true}});

    let too_deep = (0..100).fold(json!(1), |inner, _| json!([inner]));
    let malformed = json!({"completions": [
        completion(&jobs[0], &jobs[0]["lease_token"]),
        {"id": jobs[1]["id"], "lease_token": jobs[1]["lease_token"], "output": too_deep},
    ]});
    let refused = server.post("/v1/jobs/batch/complete", &admin, malformed).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
    let too_many: Vec<_> = (0..1001)
        .map(|_| completion(&jobs[0], &jobs[0]["lease_token"]))
        .collect();
    let refused = server
        .post("/v1/jobs/batch/complete", &admin, json!({"completions": too_many}))
        .await;
    assert_eq!(refused.code(), "batch_too_large");
    let empty = server
        .post("/v1/jobs/batch/complete", &admin, json!({"completions": []}))
        .await;
    assert_eq!(empty.code(), "validation_failed");
    let twice = json!({"completions": [
        completion(&jobs[0], &jobs[0]["lease_token"]),
        completion(&jobs[0], &jobs[0]["lease_token"]),
    ]});
    let refused = server.post("/v1/jobs/batch/complete", &admin, twice).await;
    assert_eq!(
        refused.code(),
        "validation_failed",
        "a job twice in one batch: {}",
        refused.text
    );
    let first = server
        .get(&format!("/v1/jobs/{}", jobs[0]["id"].as_str().unwrap()), &admin)
        .await;
    assert_eq!(first.json()["state"], "running", "a refused batch changed nothing");

    let batch = json!({"completions": [
        completion(&jobs[0], &jobs[0]["lease_token"]),
        completion(&jobs[1], &json!("not-the-token")),
        completion(&jobs[2], &jobs[2]["lease_token"]),
        completion(&theirs, &theirs["lease_token"]),
    ]});
    let reply = server.post("/v1/jobs/batch/complete", &admin, batch).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let results = reply.json()["results"].as_array().unwrap().clone();
    let outcome = |r: &serde_json::Value| r["state"].as_str().or(r["error"]["code"].as_str()).unwrap().to_owned();
    assert_eq!(
        results.iter().map(outcome).collect::<Vec<_>>(),
        ["succeeded", "lease_lost", "succeeded", "not_found"]
    );
    assert_eq!(results[1]["id"], jobs[1]["id"], "results follow the request order");
    let path = |id: &serde_json::Value| format!("/v1/jobs/{}", id.as_str().unwrap());
    let first = server.get(&path(&jobs[0]["id"]), &admin).await.json();
    assert_eq!(first["output"], json!({"ok": true}));
    let second = server.get(&path(&jobs[1]["id"]), &admin).await.json();
    assert_eq!(second["state"], "running");
    let other_tenant = server.get(&path(&theirs["id"]), &stranger).await.json();
    assert_eq!(other_tenant["state"], "running", "another tenant's job is out of reach");
}

on_both_backends!(
    batched_completions_stand_alone_and_a_malformed_batch_changes_nothing,
    a_job_goes_from_enqueue_through_lease_to_succeeded,
    an_idempotency_key_reused_with_another_payload_is_refused,
    concurrent_duplicate_enqueues_create_one_job,
    a_worker_paused_past_its_lease_cannot_complete,
    failures_back_off_then_die_and_an_operator_can_retry,
    cancel_fences_the_running_worker,
    a_long_poll_is_woken_by_an_enqueue,
    scheduled_jobs_run_at_their_time_and_priority_orders_leases,
    batches_are_all_or_nothing_and_bounded,
    listing_pages_through_every_job_with_filters,
    health_readiness_and_the_openapi_document,
);

/// Job ids and lease tokens come from the injected randomness (and the
/// clock): two servers with the same seed and time hand out the same ones,
/// and another seed gives others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_and_lease_tokens_come_from_the_injected_randomness() {
    let run = async |seed: u64| {
        let config = EngineConfig {
            random: std::sync::Arc::new(steadfast_server::SeededRandom::new(seed)),
            ..EngineConfig::default()
        };
        let server = TestServer::start_with(Backend::Sqlite, config).await;
        let key = server.key("acme", Role::Admin).await;
        let job = server.enqueue(&key, json!({"queue": "q", "payload": {}})).await;
        let leased = server.lease_one(&key, "q", "w").await;
        (job["id"].clone(), leased["lease_token"].clone())
    };
    let first = run(7).await;
    assert_eq!(run(7).await, first);
    let other = run(8).await;
    assert_ne!(other.0, first.0);
    assert_ne!(other.1, first.1);
}
