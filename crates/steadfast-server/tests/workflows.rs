//! Durable workflows over HTTP: steps, uncertain markers, sleeps, signals,
//! children. Time moves only by the test's hand.

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use steadfast_core::Role;

async fn started_job(server: &TestServer, key: &str, queue: &str) -> (String, Value) {
    let job = server
        .enqueue(key, json!({"queue": queue, "payload": {"claim": 7}}))
        .await;
    let leased = server.lease_one(key, queue, "w1").await;
    (job["id"].as_str().unwrap().to_owned(), leased)
}

async fn put_step(
    server: &TestServer,
    key: &str,
    id: &str,
    step: &str,
    token: &Value,
    output: Value,
) -> common::Response {
    server
        .call(
            Method::PUT,
            &format!("/v1/jobs/{id}/steps/{step}"),
            Some(key),
            Some(json!({"lease_token": token, "output": output})),
        )
        .await
}

async fn checkpoints_are_memoized_and_replayed_to_the_next_attempt(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let (id, leased) = started_job(&server, &admin, "claims").await;
    let token = &leased["lease_token"];

    let first = put_step(&server, &admin, &id, "validate", token, json!({"valid": true})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.json()["idempotency_key"], format!("{id}/validate"));
    let second = put_step(&server, &admin, &id, "validate", token, json!({"valid": false})).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(
        second.json()["output"],
        json!({"valid": true}),
        "the first checkpoint wins"
    );

    let started = server
        .post(
            &format!("/v1/jobs/{id}/steps/enrich/start"),
            &admin,
            json!({"lease_token": token}),
        )
        .await;
    assert_eq!(started.json()["state"], "started");

    // The worker vanishes; its lease lapses and the job comes back.
    server.advance(Duration::from_secs(31));
    server.engine.run_duties_once().await.unwrap();
    server.advance(Duration::from_secs(2));
    server.engine.run_duties_once().await.unwrap();
    let detail = server.get(&format!("/v1/jobs/{id}"), &admin).await.json();
    let states: Vec<_> = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].clone(), s["state"].clone()))
        .collect();
    assert_eq!(
        states,
        vec![
            (json!("validate"), json!("completed")),
            (json!("enrich"), json!("uncertain"))
        ]
    );

    let again = server.lease_one(&admin, "claims", "w2").await;
    assert_eq!(again["attempt"], 2);
    assert_eq!(again["steps"], json!({"validate": {"valid": true}}));
    let uncertain = &again["uncertain_steps"]["enrich"];
    assert_eq!(
        (uncertain["attempt"].clone(), uncertain["worker_id"].clone()),
        (json!(1), json!("w1"))
    );
    assert_eq!(uncertain["attempt_outcome"], "lease_expired");
}

async fn batched_step_operations_stand_alone_and_a_malformed_batch_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let stranger = server.key("globex", Role::Admin).await;
    let (a, leased_a) = started_job(&server, &admin, "claims").await;
    let (b, leased_b) = started_job(&server, &admin, "claims").await;
    let (theirs, leased_theirs) = started_job(&server, &stranger, "claims").await;
    let op = |id: &str, token: &Value, step: &str, action: &str| json!({"id": id, "lease_token": token, "step": step, "action": action});
    let checkpoint = |id: &str, token: &Value, step: &str, output: Value| json!({"id": id, "lease_token": token, "step": step, "action": "checkpoint", "output": output});
    let (ta, tb) = (&leased_a["lease_token"], &leased_b["lease_token"]);

    // Malformed batches are refused whole, naming the item.
    let too_deep = (0..100).fold(json!(1), |inner, _| json!([inner]));
    for (body, code) in [
        (json!({"steps": []}), "validation_failed"),
        (
            json!({"steps": [op(&a, ta, "ok", "start"), op(&a, ta, "no spaces", "start")]}),
            "validation_failed",
        ),
        (
            json!({"steps": [op(&a, ta, "ok", "start"), checkpoint(&b, tb, "s", too_deep)]}),
            "validation_failed",
        ),
        (
            json!({"steps": [{"id": a, "lease_token": ta, "step": "s", "action": "start", "output": 1}]}),
            "validation_failed",
        ),
        (json!({"steps": [op(&a, ta, "s", "finish")]}), "validation_failed"),
        (
            json!({"steps": (0..1001).map(|_| op(&a, ta, "s", "start")).collect::<Vec<_>>()}),
            "batch_too_large",
        ),
    ] {
        let refused = server.post("/v1/jobs/batch/steps", &admin, body).await;
        assert_eq!(refused.code(), code, "{}", refused.text);
        assert!(refused.status.is_client_error());
    }
    let untouched = server.get(&format!("/v1/jobs/{a}"), &admin).await.json();
    assert_eq!(untouched["steps"], json!([]), "a refused batch changed nothing");

    let batch = json!({"steps": [
        op(&a, ta, "charge", "start"),
        checkpoint(&a, ta, "charge", json!({"charged": 1})),
        op(&b, &json!("not-the-token"), "charge", "start"),
        checkpoint(&theirs, &leased_theirs["lease_token"], "charge", json!(2)),
        checkpoint(&a, ta, "charge", json!({"charged": 2})),
    ]});
    let reply = server.post("/v1/jobs/batch/steps", &admin, batch).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let results = reply.json()["results"].as_array().unwrap().clone();
    let outcome = |r: &Value| {
        r["info"]["state"]
            .as_str()
            .or(r["error"]["code"].as_str())
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        results.iter().map(outcome).collect::<Vec<_>>(),
        ["started", "completed", "lease_lost", "not_found", "completed"]
    );
    assert_eq!(results[2]["id"], json!(b), "results follow the request order");
    assert_eq!(
        (results[1]["first"].clone(), results[4]["first"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(
        results[4]["info"]["output"],
        json!({"charged": 1}),
        "the first checkpoint wins"
    );
    assert_eq!(results[1]["info"]["idempotency_key"], format!("{a}/charge"));

    let detail = server.get(&format!("/v1/jobs/{a}"), &admin).await.json();
    assert_eq!(detail["steps"][0]["output"], json!({"charged": 1}));
    let other = server.get(&format!("/v1/jobs/{theirs}"), &stranger).await.json();
    assert_eq!(other["steps"], json!([]), "another tenant's job is out of reach");
    let reader = server.key("acme", Role::Reader).await;
    let forbidden = server
        .post(
            "/v1/jobs/batch/steps",
            &reader,
            json!({"steps": [op(&a, ta, "x", "start")]}),
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
}

async fn a_sleep_parks_the_job_without_a_lease_until_the_timer_fires(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let (id, leased) = started_job(&server, &admin, "naps").await;
    let body = json!({"lease_token": leased["lease_token"], "step": "sleep:cool-off", "sleep_ms": 60_000});
    let waited = server.post(&format!("/v1/jobs/{id}/wait"), &admin, body).await;
    assert_eq!(waited.json(), json!({"suspended": true}), "{}", waited.text);
    let detail = server.get(&format!("/v1/jobs/{id}"), &admin).await.json();
    assert_eq!(detail["state"], "waiting");
    assert!(detail.get("lease").is_none(), "a waiting job holds no lease");
    assert_eq!(detail["wait"]["step"], "sleep:cool-off");
    assert_eq!(detail["attempts"][0]["outcome"], "suspended");

    server.advance(Duration::from_secs(59));
    assert_eq!(server.engine.run_duties_once().await.unwrap().promoted, 0);
    server.advance(Duration::from_secs(1));
    assert_eq!(server.engine.run_duties_once().await.unwrap().promoted, 1);
    let resumed = server.lease_one(&admin, "naps", "w").await;
    assert_eq!(resumed["steps"]["sleep:cool-off"], json!({"outcome": "slept"}));
    assert_eq!(resumed["attempt"], 2);
}

async fn a_signal_wait_gets_the_payload_or_times_out(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let producer = server.key("acme", Role::Producer).await;
    let worker = server.key("acme", Role::Worker).await;

    let (id, leased) = started_job(&server, &admin, "approvals").await;
    let wait =
        json!({"lease_token": leased["lease_token"], "step": "approval", "signal": "approve", "timeout_secs": 3600});
    assert_eq!(
        server.post(&format!("/v1/jobs/{id}/wait"), &admin, wait).await.json()["suspended"],
        true
    );
    let refused = server
        .post(
            &format!("/v1/jobs/{id}/signals/approve"),
            &worker,
            json!({"payload": {}}),
        )
        .await;
    assert_eq!(refused.code(), "forbidden", "workers do not send signals");
    let signalled = server
        .post(
            &format!("/v1/jobs/{id}/signals/approve"),
            &producer,
            json!({"payload": {"by": "ana"}}),
        )
        .await;
    assert_eq!(signalled.json()["woke"], true, "{}", signalled.text);
    assert_eq!(signalled.json()["job"]["state"], "queued");
    let resumed = server.lease_one(&admin, "approvals", "w").await;
    assert_eq!(
        resumed["steps"]["approval"],
        json!({"outcome": "signal", "payload": {"by": "ana"}})
    );

    let (id, leased) = started_job(&server, &admin, "approvals").await;
    let wait =
        json!({"lease_token": leased["lease_token"], "step": "approval", "signal": "approve", "timeout_secs": 30});
    server.post(&format!("/v1/jobs/{id}/wait"), &admin, wait).await;
    server.advance(Duration::from_secs(30));
    server.engine.run_duties_once().await.unwrap();
    let timed_out = server.lease_one(&admin, "approvals", "w").await;
    assert_eq!(timed_out["steps"]["approval"], json!({"outcome": "timed_out"}));
}

async fn a_signal_that_arrives_before_the_wait_is_not_lost(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let (id, leased) = started_job(&server, &admin, "early").await;
    let early = server
        .post(&format!("/v1/jobs/{id}/signals/go"), &admin, json!({"payload": 42}))
        .await
        .json();
    assert_eq!(early["woke"], false);
    let wait = json!({"lease_token": leased["lease_token"], "step": "gate", "signal": "go"});
    let waited = server.post(&format!("/v1/jobs/{id}/wait"), &admin, wait).await.json();
    assert_eq!(waited["suspended"], false);
    assert_eq!(waited["step"]["output"], json!({"outcome": "signal", "payload": 42}));
    let detail = server.get(&format!("/v1/jobs/{id}"), &admin).await.json();
    assert!(detail["signals"][0]["consumed_at"].is_string());

    let other = server.key("other", Role::Admin).await;
    let foreign = server
        .post(&format!("/v1/jobs/{id}/signals/go"), &other, json!({}))
        .await;
    assert_eq!(foreign.code(), "not_found");
}

async fn a_child_enqueued_twice_is_one_child_with_lineage(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let (id, leased) = started_job(&server, &admin, "parents").await;
    let body = json!({"lease_token": leased["lease_token"], "step": "notify", "job": {"queue": "emails", "payload": {"to": "x"}}});
    let first = server
        .post(&format!("/v1/jobs/{id}/children"), &admin, body.clone())
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let again = server.post(&format!("/v1/jobs/{id}/children"), &admin, body).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["id"], first.json()["id"]);
    let child = first.json();
    assert_eq!(child["parent"], json!({"id": id, "step": "notify"}));
    assert_eq!(child["idempotency_key"], format!("{id}/notify"));
    let parent = server.get(&format!("/v1/jobs/{id}"), &admin).await.json();
    assert_eq!(parent["children"].as_array().unwrap().len(), 1);
    assert_eq!(parent["children"][0]["id"], child["id"]);
    assert_eq!(parent["children"][0]["step"], "notify");
}

async fn workflow_requests_are_validated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let (id, leased) = started_job(&server, &admin, "v").await;
    let token = leased["lease_token"].clone();
    let both = json!({"lease_token": token, "step": "s", "sleep_ms": 10, "signal": "x"});
    let neither = json!({"lease_token": token, "step": "s"});
    let timeout_without_signal = json!({"lease_token": token, "step": "s", "sleep_ms": 10, "timeout_secs": 5});
    let far = json!({"lease_token": token, "step": "s", "sleep_ms": u64::MAX});
    let bad_step = json!({"lease_token": token, "step": "has space", "sleep_ms": 10});
    for body in [both, neither, timeout_without_signal, far, bad_step] {
        let response = server.post(&format!("/v1/jobs/{id}/wait"), &admin, body.clone()).await;
        assert_eq!(response.code(), "validation_failed", "{body}: {}", response.text);
    }
    let bad_name = put_step(&server, &admin, &id, "bad%20name", &token, json!(1)).await;
    assert_eq!(bad_name.code(), "validation_failed");
    let keyed =
        json!({"lease_token": token, "step": "c", "job": {"queue": "q", "payload": {}, "idempotency_key": "mine"}});
    assert_eq!(
        server
            .post(&format!("/v1/jobs/{id}/children"), &admin, keyed)
            .await
            .code(),
        "validation_failed"
    );
    let detail = server.get(&format!("/v1/jobs/{id}"), &admin).await.json();
    assert_eq!(
        (detail["state"].clone(), detail["steps"].clone()),
        (json!("running"), json!([])),
        "nothing changed"
    );
}

on_both_backends!(
    checkpoints_are_memoized_and_replayed_to_the_next_attempt,
    batched_step_operations_stand_alone_and_a_malformed_batch_changes_nothing,
    a_sleep_parks_the_job_without_a_lease_until_the_timer_fires,
    a_signal_wait_gets_the_payload_or_times_out,
    a_signal_that_arrives_before_the_wait_is_not_lost,
    a_child_enqueued_twice_is_one_child_with_lineage,
    workflow_requests_are_validated,
);
