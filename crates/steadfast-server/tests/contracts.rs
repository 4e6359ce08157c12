//! Contracts over HTTP: versioned payload schemas (registration, the
//! compatibility rule, validation at enqueue and completion).

mod common;

use common::{Backend, TestServer};
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

on_both_backends!(
    a_schema_refuses_invalid_payloads_and_records_its_version,
    a_breaking_version_is_refused_unless_forced_with_a_reason,
    outputs_are_checked_against_the_version_the_payload_passed,
    malformed_schemas_are_refused,
);
