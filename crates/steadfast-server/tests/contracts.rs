//! Contracts over HTTP: versioned payload schemas (registration, the
//! compatibility rule, validation at enqueue and completion) and schedules
//! (ticks fired once each, overlap, catch-up, pause and resume) and
//! producer sequence numbers (replays, holes).

mod common;

use std::time::Duration;

use common::{Backend, TestServer, t0};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use steadfast_core::Role;

fn order_schema() -> Value {
    json!({
        "type": "object",
        "required": ["order_id"],
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "integer", "minimum": 0}
        }
    })
}

async fn put_schema(server: &TestServer, key: &str, queue: &str, version: &str, body: Value) -> common::Response {
    server
        .call(
            Method::PUT,
            &format!("/v1/queues/{queue}/schemas/{version}"),
            Some(key),
            Some(body),
        )
        .await
}

/// `(pointer, rule)` of each violation in an error answer, sorted.
fn violations(response: &common::Response) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = response.json()["error"]["violations"]
        .as_array()
        .unwrap_or_else(|| panic!("no violations: {}", response.text))
        .iter()
        .map(|v| {
            (
                v["pointer"].as_str().unwrap().to_owned(),
                v["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

async fn a_schema_refuses_invalid_payloads_and_records_its_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let producer = server.key("acme", Role::Producer).await;

    let refused = put_schema(&server, &producer, "orders", "1", json!({"schema": order_schema()})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    let created = put_schema(&server, &admin, "orders", "1", json!({"schema": order_schema()})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json()["version"], 1);
    let again = put_schema(&server, &admin, "orders", "1", json!({"schema": order_schema()})).await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "the same content again is a replay: {}",
        again.text
    );

    let valid = server
        .enqueue(
            &producer,
            json!({"queue": "orders", "payload": {"order_id": "o1", "amount": 5}}),
        )
        .await;
    assert_eq!(valid["schema_version"], 1);

    let before = server.job_count(&admin).await;
    let invalid = server
        .post(
            "/v1/jobs",
            &producer,
            json!({"queue": "orders", "payload": {"amount": -5}}),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", invalid.text);
    assert_eq!(invalid.code(), "payload_invalid");
    assert_eq!(violations(&invalid), pairs(&[("", "required"), ("/amount", "minimum")]));
    let batch = server
        .post(
            "/v1/jobs/batch",
            &producer,
            json!({"jobs": [
                {"queue": "orders", "payload": {"order_id": "o2"}},
                {"queue": "orders", "payload": {"order_id": 3}}
            ]}),
        )
        .await;
    assert_eq!(batch.code(), "payload_invalid", "{}", batch.text);
    assert!(
        batch.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("jobs[1]."),
        "{}",
        batch.text
    );
    assert_eq!(violations(&batch), pairs(&[("/order_id", "type")]));
    let unknown = server
        .post(
            "/v1/jobs",
            &producer,
            json!({"queue": "orders", "payload": {"order_id": "o4"}, "schema_version": 7}),
        )
        .await;
    assert_eq!(unknown.code(), "payload_invalid", "{}", unknown.text);
    assert_eq!(violations(&unknown), pairs(&[("", "schema_version")]));
    assert_eq!(server.job_count(&admin).await, before, "nothing was created");

    // A queue without a schema takes anything, and says no version.
    let free = server
        .enqueue(&producer, json!({"queue": "other", "payload": [1, "x"]}))
        .await;
    assert!(free.get("schema_version").is_none(), "{free}");
    let named = server
        .post(
            "/v1/jobs",
            &producer,
            json!({"queue": "other", "payload": {}, "schema_version": 1}),
        )
        .await;
    assert_eq!(named.code(), "payload_invalid", "{}", named.text);

    // A replay with a new payload is checked like an enqueue.
    let id = valid["id"].as_str().unwrap();
    let bad_replay = server
        .post(
            &format!("/v1/jobs/{id}/replay"),
            &admin,
            json!({"payload": {"order_id": 1}, "reason": "fix"}),
        )
        .await;
    assert_eq!(bad_replay.code(), "payload_invalid", "{}", bad_replay.text);
    let replay = server
        .post(
            &format!("/v1/jobs/{id}/replay"),
            &admin,
            json!({"payload": {"order_id": "o1b"}, "reason": "fix"}),
        )
        .await;
    assert_eq!(replay.status, StatusCode::CREATED, "{}", replay.text);
    assert_eq!(replay.json()["schema_version"], 1);
}

async fn a_breaking_version_is_refused_unless_forced_with_a_reason(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    put_schema(&server, &admin, "orders", "1", json!({"schema": order_schema()})).await;

    let mut breaking = order_schema();
    breaking["required"] = json!(["order_id", "currency"]);
    breaking["properties"]["amount"]["type"] = json!("string");
    let refused = put_schema(&server, &admin, "orders", "2", json!({"schema": breaking})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert_eq!(refused.code(), "schema_incompatible");
    assert_eq!(
        violations(&refused),
        pairs(&[
            ("/properties/amount/type", "type_narrowed"),
            ("/required", "required_added")
        ])
    );

    let mut wider = order_schema();
    wider["properties"]["note"] = json!({"type": "string"});
    let compatible = put_schema(&server, &admin, "orders", "2", json!({"schema": wider})).await;
    assert_eq!(compatible.status, StatusCode::CREATED, "{}", compatible.text);
    let latest = server
        .enqueue(&admin, json!({"queue": "orders", "payload": {"order_id": "a"}}))
        .await;
    assert_eq!(latest["schema_version"], 2);
    let pinned = server
        .enqueue(
            &admin,
            json!({"queue": "orders", "payload": {"order_id": "b"}, "schema_version": 1}),
        )
        .await;
    assert_eq!(pinned["schema_version"], 1);

    // Versions never change and only go up.
    let changed = put_schema(&server, &admin, "orders", "2", json!({"schema": order_schema()})).await;
    assert_eq!(
        (changed.status, changed.code()),
        (StatusCode::CONFLICT, "invalid_state".into())
    );
    let lower = put_schema(&server, &admin, "orders", "1", json!({"schema": wider_than_all()})).await;
    assert_eq!(lower.status, StatusCode::CONFLICT, "{}", lower.text);

    let unexplained = put_schema(
        &server,
        &admin,
        "orders",
        "3",
        json!({"schema": breaking, "force": true}),
    )
    .await;
    assert_eq!(unexplained.code(), "validation_failed", "{}", unexplained.text);
    let forced = put_schema(
        &server,
        &admin,
        "orders",
        "3",
        json!({"schema": breaking, "force": true, "reason": "currency is mandatory from today"}),
    )
    .await;
    assert_eq!(forced.status, StatusCode::CREATED, "{}", forced.text);
    assert_eq!(forced.json()["forced"], true);
    let trail = server
        .get("/v1/audit?action=queue.schema_registered", &admin)
        .await
        .json();
    let records = trail["records"].as_array().unwrap();
    assert_eq!(records.len(), 3, "{trail}");
    let last = records.iter().find(|r| r["summary"]["version"] == 3).unwrap();
    assert_eq!(last["summary"]["forced"], true);
    assert_eq!(last["summary"]["reason"], "currency is mandatory from today");
    assert_eq!(last["summary"]["breaking"].as_array().unwrap().len(), 2, "{last}");

    let old_shape = server
        .post(
            "/v1/jobs",
            &admin,
            json!({"queue": "orders", "payload": {"order_id": "c"}}),
        )
        .await;
    assert_eq!(old_shape.code(), "payload_invalid", "{}", old_shape.text);

    let all = server.get("/v1/schemas", &admin).await.json();
    let versions: Vec<_> = all["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].clone())
        .collect();
    assert_eq!(versions, vec![json!(1), json!(2), json!(3)]);
    let one = server.get("/v1/queues/orders/schemas/2", &admin).await;
    assert_eq!(one.json()["schema"], wider);
    let none = server.get("/v1/schemas?queue=other", &admin).await.json();
    assert_eq!(none["schemas"], json!([]));

    // Another tenant sees none of it.
    let stranger = server.key("globex", Role::Admin).await;
    assert_eq!(server.get("/v1/schemas", &stranger).await.json()["schemas"], json!([]));
    assert_eq!(
        server.get("/v1/queues/orders/schemas/2", &stranger).await.status,
        StatusCode::NOT_FOUND
    );
    server
        .enqueue(&stranger, json!({"queue": "orders", "payload": 42}))
        .await;
}

fn wider_than_all() -> Value {
    json!({})
}

async fn outputs_are_checked_against_the_version_the_payload_passed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let worker = server.key("acme", Role::Worker).await;
    let registered = put_schema(
        &server,
        &admin,
        "charges",
        "1",
        json!({"schema": {"type": "object"}, "output_schema": {"type": "object", "required": ["receipt"]}}),
    )
    .await;
    assert_eq!(registered.status, StatusCode::CREATED, "{}", registered.text);
    for _ in 0..3 {
        server.enqueue(&admin, json!({"queue": "charges", "payload": {}})).await;
    }
    let leased = server.lease_one(&worker, "charges", "w1").await;
    let id = leased["id"].as_str().unwrap();
    let token = &leased["lease_token"];
    let refused = server
        .post(
            &format!("/v1/jobs/{id}/complete"),
            &worker,
            json!({"lease_token": token, "output": {"ok": true}}),
        )
        .await;
    assert_eq!(refused.code(), "output_invalid", "{}", refused.text);
    assert_eq!(violations(&refused), pairs(&[("", "required")]));
    assert_eq!(
        server.get(&format!("/v1/jobs/{id}"), &admin).await.json()["state"],
        "running"
    );
    let done = server
        .post(
            &format!("/v1/jobs/{id}/complete"),
            &worker,
            json!({"lease_token": token, "output": {"receipt": "r1"}}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);

    // In a batch, each completion stands alone.
    let a = server.lease_one(&worker, "charges", "w1").await;
    let b = server.lease_one(&worker, "charges", "w1").await;
    let batch = server
        .post(
            "/v1/jobs/batch/complete",
            &worker,
            json!({"completions": [
                {"id": a["id"], "lease_token": a["lease_token"], "output": {"receipt": "r2"}},
                {"id": b["id"], "lease_token": b["lease_token"], "output": "nope"}
            ]}),
        )
        .await;
    assert_eq!(batch.status, StatusCode::OK, "{}", batch.text);
    let results = batch.json()["results"].as_array().unwrap().clone();
    assert!(results[0].get("error").is_none(), "{}", batch.text);
    assert_eq!(results[1]["error"]["code"], "output_invalid", "{}", batch.text);
    assert_eq!(results[1]["error"]["violations"][0]["rule"], "type", "{}", batch.text);
    let states: Vec<_> = [&a, &b]
        .iter()
        .map(|job| job["id"].as_str().unwrap().to_owned())
        .collect();
    let first = server.get(&format!("/v1/jobs/{}", states[0]), &admin).await.json();
    let second = server.get(&format!("/v1/jobs/{}", states[1]), &admin).await.json();
    assert_eq!(
        (first["state"].clone(), second["state"].clone()),
        (json!("succeeded"), json!("running"))
    );
}

async fn malformed_schemas_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    for (version, body) in [
        ("1", json!({"schema": {"type": "nonsense"}})),
        ("1", json!({"schema": {"$ref": "https://example.com/schema.json"}})),
        ("1", json!({"schema": 5})),
        ("1", json!({"schema": {"maxLength": "x"}})),
        ("1", json!({"schema": {"description": "x".repeat(70_000)}})),
        ("0", json!({"schema": {}})),
        ("abc", json!({"schema": {}})),
        ("2147483648", json!({"schema": {}})),
    ] {
        let refused = put_schema(&server, &admin, "orders", version, body).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{version}: {}",
            refused.text
        );
        assert_eq!(refused.code(), "validation_failed", "{}", refused.text);
    }
    assert_eq!(server.get("/v1/schemas", &admin).await.json()["schemas"], json!([]));
}

async fn put_schedule(server: &TestServer, key: &str, name: &str, body: Value) -> common::Response {
    server
        .call(Method::PUT, &format!("/v1/schedules/{name}"), Some(key), Some(body))
        .await
}

/// The jobs of `queue`, oldest first.
async fn jobs_of(server: &TestServer, key: &str, queue: &str) -> Vec<Value> {
    let page = server
        .get(&format!("/v1/jobs?queue={queue}&limit=500"), key)
        .await
        .json();
    let mut jobs = page["jobs"].as_array().unwrap().clone();
    jobs.reverse();
    jobs
}

/// The job a node made for a tick (`schedule:{name}:{tick_ms}`, the tick's
/// own fingerprint) before it died, the tick unrecorded: straight through
/// the store, as the engine would have.
async fn tick_job_made_by_a_node_that_died(server: &TestServer, name: &str, tick_ms: i64, payload: Value) -> Value {
    use steadfast_server::engine::{Fingerprinted, fingerprint};
    let tenant = server
        .store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .find(|tenant| tenant.name.as_str() == "acme")
        .unwrap();
    let spec = steadfast_core::lifecycle::EnqueueRequest {
        queue: "reports".into(),
        payload: payload.to_string(),
        idempotency_key: Some(format!("schedule:{name}:{tick_ms}")),
        ..Default::default()
    }
    .validate(
        server.engine.limits(),
        fingerprint(&Fingerprinted {
            queue: "reports",
            payload: &payload,
            max_attempts: None,
            timeout_secs: None,
            run_at: None,
            priority: None,
        }),
        server.engine.now(),
    )
    .unwrap();
    let scope = steadfast_store::auth::system(&tenant);
    let made = server.engine.enqueue(&scope, vec![spec]).await.unwrap();
    json!({"id": made[0].job.id.to_string()})
}

fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

fn at_minutes(n: i64) -> String {
    (t0() + jiff::SignedDuration::from_mins(n)).to_string()
}

async fn a_schedule_fires_each_tick_once_and_skips_overlapping_ones(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let reader = server.key("acme", Role::Reader).await;
    let body = json!({"cron": "*/5 * * * *", "queue": "reports", "payload": {"kind": "digest"}});
    assert_eq!(
        put_schedule(&server, &reader, "digest", body.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    let created = put_schedule(&server, &admin, "digest", body.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let created = created.json();
    assert_eq!(created["timezone"], "UTC");
    assert_eq!(
        (created["overlap"].clone(), created["catch_up"].clone()),
        (json!("skip"), json!("none"))
    );
    let expected: Vec<Value> = (1..=5).map(|n| json!(at_minutes(5 * n))).collect();
    assert_eq!(created["next_fire_times"], json!(expected));
    assert_eq!(
        put_schedule(&server, &admin, "digest", body).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.get("/v1/schedules/digest", &reader).await.json()["name"],
        "digest"
    );

    // Before the tick nothing fires; at it, one job, however often the duty runs.
    server.advance(minutes(4));
    assert_eq!(server.engine.run_schedules_once().await.unwrap(), 0);
    server.advance(minutes(1));
    let (a, b) = tokio::join!(server.engine.run_schedules_once(), server.engine.run_schedules_once());
    assert_eq!(a.unwrap() + b.unwrap(), 1, "the tick is recorded once");
    assert_eq!(server.engine.run_schedules_once().await.unwrap(), 0);
    let jobs = jobs_of(&server, &admin, "reports").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let tick_ms = (t0() + jiff::SignedDuration::from_mins(5)).as_millisecond();
    assert_eq!(jobs[0]["idempotency_key"], format!("schedule:digest:{tick_ms}"));
    assert_eq!(jobs[0]["payload"], json!({"kind": "digest"}));
    let schedule = server.get("/v1/schedules/digest", &admin).await.json();
    assert_eq!(schedule["last_outcome"], "fired");
    assert_eq!(schedule["last_job_id"], jobs[0]["id"]);

    // The first job is still queued at the next tick: `skip` passes over it.
    server.advance(minutes(5));
    assert_eq!(server.engine.run_schedules_once().await.unwrap(), 1);
    assert_eq!(jobs_of(&server, &admin, "reports").await.len(), 1);
    let schedule = server.get("/v1/schedules/digest", &admin).await.json();
    assert_eq!(schedule["last_outcome"], "skipped_overlap");
    let worker = server.key("acme", Role::Worker).await;
    let leased = server.lease_one(&worker, "reports", "w1").await;
    let done = server
        .post(
            &format!("/v1/jobs/{}/complete", leased["id"].as_str().unwrap()),
            &worker,
            json!({"lease_token": leased["lease_token"]}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    server.advance(minutes(5));
    server.engine.run_schedules_once().await.unwrap();
    assert_eq!(
        jobs_of(&server, &admin, "reports").await.len(),
        2,
        "fires again once the job finished"
    );

    // Clients may not use a schedule's keys.
    let tick_ms = (t0() + jiff::SignedDuration::from_mins(20)).as_millisecond();
    let forged = server
        .post(
            "/v1/jobs",
            &admin,
            json!({"queue": "reports", "payload": {"kind": "digest"}, "idempotency_key": format!("schedule:digest:{tick_ms}")}),
        )
        .await;
    assert_eq!(forged.code(), "validation_failed", "{}", forged.text);
    // A node that made the tick's job and died before recording it: the
    // next pass finds the job by its key instead of making another.
    let orphan = tick_job_made_by_a_node_that_died(&server, "digest", tick_ms, json!({"kind": "digest"})).await;
    let allow = json!({"cron": "*/5 * * * *", "queue": "reports", "payload": {"kind": "digest"}, "overlap": "allow"});
    assert_eq!(
        put_schedule(&server, &admin, "digest", allow).await.status,
        StatusCode::OK
    );
    server.advance(minutes(5));
    server.engine.run_schedules_once().await.unwrap();
    let jobs = jobs_of(&server, &admin, "reports").await;
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    let schedule = server.get("/v1/schedules/digest", &admin).await.json();
    assert_eq!(schedule["last_job_id"], orphan["id"]);

    let records = server.get("/v1/audit?action=schedule.set", &admin).await.json();
    assert_eq!(records["records"].as_array().unwrap().len(), 3);
    assert_eq!(
        server
            .call(Method::DELETE, "/v1/schedules/digest", Some(&admin), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.get("/v1/schedules/digest", &admin).await.status,
        StatusCode::NOT_FOUND
    );
    server.advance(minutes(5));
    server.engine.run_schedules_once().await.unwrap();
    assert_eq!(
        jobs_of(&server, &admin, "reports").await.len(),
        3,
        "a deleted schedule fires nothing"
    );
}

async fn missed_ticks_fire_once_with_catch_up_and_never_while_paused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    for (name, catch_up) in [("skipper", "none"), ("catcher", "latest")] {
        let body =
            json!({"cron": "0 * * * *", "queue": name, "payload": {}, "catch_up": catch_up, "timezone": "Asia/Tokyo"});
        assert_eq!(
            put_schedule(&server, &admin, name, body).await.status,
            StatusCode::CREATED
        );
    }
    // No node ran from before 09:00 to 11:30: the ticks of 09, 10 and 11 passed.
    server.advance(minutes(3 * 60 + 30));
    assert_eq!(server.engine.run_schedules_once().await.unwrap(), 2);
    assert_eq!(jobs_of(&server, &admin, "skipper").await.len(), 0);
    let caught = jobs_of(&server, &admin, "catcher").await;
    assert_eq!(caught.len(), 1, "one job for the latest missed tick");
    let latest_ms = (t0() + jiff::SignedDuration::from_hours(3)).as_millisecond();
    assert_eq!(caught[0]["idempotency_key"], format!("schedule:catcher:{latest_ms}"));
    let skipper = server.get("/v1/schedules/skipper", &admin).await.json();
    assert_eq!(skipper["last_outcome"], "missed");
    assert_eq!(skipper["next_fire_times"][0], json!(at_minutes(4 * 60)));

    let paused = server.post("/v1/schedules/skipper/pause", &admin, json!({})).await;
    assert_eq!(paused.json()["paused"], true, "{}", paused.text);
    assert_eq!(paused.json()["next_fire_times"], json!([]));
    server.advance(minutes(60));
    server.engine.run_schedules_once().await.unwrap();
    assert_eq!(jobs_of(&server, &admin, "skipper").await.len(), 0, "paused");
    server.advance(minutes(10));
    let resumed = server
        .post("/v1/schedules/skipper/resume", &admin, json!({}))
        .await
        .json();
    assert_eq!(
        resumed["next_fire_times"][0],
        json!(at_minutes(5 * 60)),
        "the first tick after now"
    );
    server.advance(minutes(20));
    server.engine.run_schedules_once().await.unwrap();
    assert_eq!(jobs_of(&server, &admin, "skipper").await.len(), 1);
    let actions: Vec<Value> = server.get("/v1/audit?action=schedule.paused", &admin).await.json()["records"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(actions.len(), 1);
}

async fn bad_schedules_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    put_schema(
        &server,
        &admin,
        "typed",
        "1",
        json!({"schema": {"type": "object", "required": ["id"]}}),
    )
    .await;
    for (body, code) in [
        (json!({"cron": "* * * *", "queue": "q"}), "validation_failed"),
        (json!({"cron": "0 0 30 2 *", "queue": "q"}), "validation_failed"),
        (
            json!({"cron": "* * * * *", "queue": "q", "timezone": "Mars/Olympus"}),
            "validation_failed",
        ),
        (json!({"cron": "* * * * *", "queue": "bad queue"}), "validation_failed"),
        (
            json!({"cron": "* * * * *", "queue": "q", "overlap": "sometimes"}),
            "validation_failed",
        ),
        (
            json!({"cron": "* * * * *", "queue": "typed", "payload": {}}),
            "payload_invalid",
        ),
    ] {
        let refused = put_schedule(&server, &admin, "nightly", body.clone()).await;
        assert_eq!(refused.code(), code, "{body}: {}", refused.text);
    }
    assert_eq!(
        put_schedule(&server, &admin, "bad name", json!({"cron": "* * * * *", "queue": "q"}))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(server.get("/v1/schedules", &admin).await.json()["schedules"], json!([]));
    assert_eq!(
        server.post("/v1/schedules/none/pause", &admin, json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    // Another tenant's schedules are not there.
    put_schedule(&server, &admin, "mine", json!({"cron": "* * * * *", "queue": "q"})).await;
    let stranger = server.key("globex", Role::Admin).await;
    assert_eq!(
        server.get("/v1/schedules/mine", &stranger).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .call(Method::DELETE, "/v1/schedules/mine", Some(&stranger), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

async fn send(server: &TestServer, key: &str, producer: &str, sequence: i64, payload: Value) -> common::Response {
    server
        .post(
            "/v1/jobs",
            key,
            json!({"queue": "telemetry", "payload": payload, "producer": {"id": producer, "sequence": sequence}}),
        )
        .await
}

async fn a_producers_numbers_are_replays_when_repeated_and_holes_are_listed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server.key("acme", Role::Producer).await;
    let mut first = Vec::new();
    for sequence in 1..=3 {
        let sent = send(&server, &key, "edge-7", sequence, json!({"n": sequence})).await;
        assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.text);
        first.push(sent.json()["id"].clone());
    }
    let seen = server.get("/v1/producers/edge-7", &key).await.json();
    assert_eq!(
        (seen["highest_sequence"].clone(), seen["missing"].clone()),
        (json!(3), json!([]))
    );

    let again = send(&server, &key, "edge-7", 2, json!({"n": 2})).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json()["id"], first[1]);
    let changed = send(&server, &key, "edge-7", 2, json!({"n": 99})).await;
    assert_eq!(changed.code(), "idempotency_key_reused", "{}", changed.text);

    // 4 and 5 were lost on the way.
    assert_eq!(
        send(&server, &key, "edge-7", 6, json!({})).await.status,
        StatusCode::CREATED
    );
    let holed = server.get("/v1/producers/edge-7", &key).await.json();
    assert_eq!(holed["missing"], json!([{"start": 4, "end": 5}]));
    assert_eq!(
        (holed["missing_count"].clone(), holed["gaps_total"].clone()),
        (json!(2), json!(1))
    );
    let admin = server.key("acme", Role::Admin).await;
    let metrics = server.get("/metrics", &admin).await.text;
    assert!(metrics.contains("steadfast_producer_gaps_total 1"), "{metrics}");

    // A late delivery fills a hole; a batch can carry numbers too.
    assert_eq!(
        send(&server, &key, "edge-7", 5, json!({})).await.status,
        StatusCode::CREATED
    );
    let batch = server
        .post(
            "/v1/jobs/batch",
            &key,
            json!({"jobs": [
                {"queue": "telemetry", "payload": {}, "producer": {"id": "edge-7", "sequence": 4}},
                {"queue": "telemetry", "payload": {}, "producer": {"id": "edge-7", "sequence": 7}},
                {"queue": "telemetry", "payload": {}, "producer": {"id": "edge-8", "sequence": 1}}
            ]}),
        )
        .await;
    assert_eq!(batch.status, StatusCode::CREATED, "{}", batch.text);
    let whole = server.get("/v1/producers/edge-7", &key).await.json();
    assert_eq!(
        (whole["highest_sequence"].clone(), whole["missing"].clone()),
        (json!(7), json!([]))
    );
    assert_eq!(whole["gaps_total"], 1, "a filled hole still counts as one that opened");
    let listed = server.get("/v1/producers?limit=1", &key).await.json();
    assert_eq!(listed["producers"][0]["id"], "edge-7");
    assert_eq!(listed["next_after"], "edge-7");
    let rest = server.get("/v1/producers?after=edge-7", &key).await.json();
    assert_eq!(rest["producers"][0]["id"], "edge-8");

    for (body, field) in [
        (
            json!({"queue": "t", "payload": {}, "producer": {"id": "e", "sequence": 0}}),
            "producer.sequence",
        ),
        (
            json!({"queue": "t", "payload": {}, "producer": {"id": "e f", "sequence": 1}}),
            "producer.id",
        ),
        (
            json!({"queue": "t", "payload": {}, "producer": {"id": "e", "sequence": 1}, "idempotency_key": "k"}),
            "idempotency_key",
        ),
        // A producer's numbers cannot be taken by a key in their form.
        (
            json!({"queue": "t", "payload": {}, "idempotency_key": "producer:edge-7:8"}),
            "idempotency_key",
        ),
    ] {
        let refused = server.post("/v1/jobs", &key, body).await;
        assert_eq!(refused.code(), "validation_failed", "{}", refused.text);
        assert!(
            refused.json()["error"]["message"].as_str().unwrap().starts_with(field),
            "{}",
            refused.text
        );
    }
    let stranger = server.key("globex", Role::Admin).await;
    assert_eq!(
        server.get("/v1/producers/edge-7", &stranger).await.status,
        StatusCode::NOT_FOUND
    );
}

on_both_backends!(
    a_producers_numbers_are_replays_when_repeated_and_holes_are_listed,
    a_schedule_fires_each_tick_once_and_skips_overlapping_ones,
    missed_ticks_fire_once_with_catch_up_and_never_while_paused,
    bad_schedules_are_refused,
    a_schema_refuses_invalid_payloads_and_records_its_version,
    a_breaking_version_is_refused_unless_forced_with_a_reason,
    outputs_are_checked_against_the_version_the_payload_passed,
    malformed_schemas_are_refused,
);
