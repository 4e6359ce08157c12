//! Operator actions over HTTP: reasons on retry, cancel and signals, the
//! resolution of uncertain steps and replays, each audited with the key
//! that acted and why.

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use steadfast_core::Role;

/// The job's audit records with `action`.
async fn records(server: &TestServer, key: &str, id: &str, action: &str) -> Vec<Value> {
    let trail = server.get(&format!("/v1/audit?job_id={id}&action={action}"), key).await;
    assert_eq!(trail.status, StatusCode::OK, "{}", trail.text);
    trail.json()["records"].as_array().unwrap().clone()
}

/// The key id of a `sf_<id>_<secret>` key.
fn key_id(key: &str) -> String {
    steadfast_core::ApiKeySecret::parse(key).unwrap().key_id().to_string()
}

/// A job whose step `charge` was started by an attempt that then vanished.
async fn uncertain_job(server: &TestServer, key: &str, queue: &str) -> String {
    let job = server
        .enqueue(key, json!({"queue": queue, "payload": {"claim": 7}}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let leased = server.lease_one(key, queue, "w1").await;
    let started = server
        .post(
            &format!("/v1/jobs/{id}/steps/charge/start"),
            key,
            json!({"lease_token": leased["lease_token"]}),
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text);
    server.advance(Duration::from_secs(31));
    server.engine.run_duties_once().await.unwrap();
    // Past the retry's backoff: queued again.
    server.advance(Duration::from_secs(2));
    server.engine.run_duties_once().await.unwrap();
    let detail = server.get(&format!("/v1/jobs/{id}"), key).await.json();
    assert_eq!(detail["steps"][0]["state"], "uncertain");
    id
}

async fn retry_cancel_and_signals_take_a_reason_into_the_audit_log(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let id = server.enqueue(&admin, json!({"queue": "q", "payload": {}})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Clients that send no body at all still work.
    let bare = server
        .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), Some(&admin), None)
        .await;
    assert_eq!(bare.status, StatusCode::OK, "{}", bare.text);
    let retried = server
        .post(
            &format!("/v1/jobs/{id}/retry"),
            &admin,
            json!({"reason": "  the card was updated "}),
        )
        .await;
    assert_eq!(retried.json()["state"], "queued");
    let signalled = server
        .post(
            &format!("/v1/jobs/{id}/signals/approval"),
            &admin,
            json!({"payload": {"approved": true}, "reason": "called the customer"}),
        )
        .await;
    assert_eq!(signalled.status, StatusCode::OK, "{}", signalled.text);

    let retry = &records(&server, &admin, &id, "job.retried").await[0];
    assert_eq!(retry["summary"]["reason"], "the card was updated", "trimmed");
    assert_eq!(retry["actor"]["key_id"], key_id(&admin));
    assert!(
        records(&server, &admin, &id, "job.cancelled").await[0]["summary"]
            .get("reason")
            .is_none()
    );
    assert_eq!(
        records(&server, &admin, &id, "signal.received").await[0]["summary"]["reason"],
        "called the customer"
    );

    // A bad reason is refused and changes nothing.
    for (body, what) in [
        (json!({"reason": "   "}), "blank"),
        (json!({"reason": "x".repeat(1001)}), "too long"),
        (json!({"reason": "bell\u{7}"}), "control character"),
        (json!({"why": "typo"}), "unknown field"),
    ] {
        let refused = server.post(&format!("/v1/jobs/{id}/cancel"), &admin, body).await;
        assert_eq!(
            (refused.status, refused.code().as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            "{what}: {}",
            refused.text
        );
    }
    assert_eq!(
        server.get(&format!("/v1/jobs/{id}"), &admin).await.json()["state"],
        "queued"
    );
}

async fn an_uncertain_step_is_resolved_by_an_operator(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let worker = server.key("acme", Role::Worker).await;
    let reader = server.key("acme", Role::Reader).await;
    let stranger = server.key("globex", Role::Admin).await;
    let id = uncertain_job(&server, &admin, "claims").await;
    let path = format!("/v1/jobs/{id}/steps/charge/resolve");
    let body =
        json!({"outcome": "succeeded", "output": {"charge": "ch_9"}, "reason": "ch_9 is in the provider's dashboard"});

    for (key, status, code) in [
        (&worker, StatusCode::FORBIDDEN, "forbidden"),
        (&reader, StatusCode::FORBIDDEN, "forbidden"),
        (&stranger, StatusCode::NOT_FOUND, "not_found"),
    ] {
        let refused = server.post(&path, key, body.clone()).await;
        assert_eq!(
            (refused.status, refused.code().as_str()),
            (status, code),
            "{}",
            refused.text
        );
    }
    for bad in [
        json!({"outcome": "failed", "output": 1, "reason": "x"}),
        json!({"outcome": "maybe", "reason": "x"}),
        json!({"outcome": "succeeded"}),
        json!({"outcome": "succeeded", "reason": ""}),
    ] {
        let refused = server.post(&path, &admin, bad.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            refused.text
        );
    }
    let missing = server
        .post(&format!("/v1/jobs/{id}/steps/refund/resolve"), &admin, body.clone())
        .await;
    assert_eq!(missing.code(), "not_found");

    let resolved = server.post(&path, &admin, body.clone()).await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.text);
    let step = &resolved.json()["steps"][0];
    assert_eq!(
        (&step["state"], &step["output"]),
        (&json!("completed"), &json!({"charge": "ch_9"}))
    );
    let again = server.post(&path, &admin, body).await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (StatusCode::CONFLICT, "invalid_state")
    );

    let next = server.lease_one(&admin, "claims", "w2").await;
    assert_eq!(next["steps"], json!({"charge": {"charge": "ch_9"}}));
    assert!(
        next.get("uncertain_steps")
            .is_none_or(|u| u.as_object().unwrap().is_empty())
    );
    let record = &records(&server, &admin, &id, "step.resolved").await[0];
    assert_eq!(record["summary"]["reason"], "ch_9 is in the provider's dashboard");
    assert_eq!(record["actor"]["key_id"], key_id(&admin));

    // Failed ends the job dead, with the kind that says why.
    let other = uncertain_job(&server, &admin, "claims-2").await;
    let failed = server
        .post(
            &format!("/v1/jobs/{other}/steps/charge/resolve"),
            &admin,
            json!({"outcome": "failed", "reason": "declined"}),
        )
        .await
        .json();
    assert_eq!(
        (&failed["state"], &failed["last_error"]["kind"]),
        (&json!("dead"), &json!("step_failed"))
    );
}

async fn a_replay_is_a_new_job_linked_to_the_original(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let producer = server.key("acme", Role::Producer).await;
    let original = server
        .enqueue(
            &admin,
            json!({"queue": "emails", "payload": {"to": "a@example.com"}, "max_attempts": 4, "priority": 3}),
        )
        .await;
    let id = original["id"].as_str().unwrap();
    let before = server.get(&format!("/v1/jobs/{id}"), &admin).await.json();

    let refused = server
        .post(&format!("/v1/jobs/{id}/replay"), &producer, json!({"reason": "x"}))
        .await;
    assert_eq!(refused.code(), "forbidden", "replaying is an operator's (admin) action");
    let replayed = server
        .post(
            &format!("/v1/jobs/{id}/replay"),
            &admin,
            json!({"payload": {"to": "b@example.com"}, "reason": "wrong address"}),
        )
        .await;
    assert_eq!(replayed.status, StatusCode::CREATED, "{}", replayed.text);
    let replay = replayed.json();
    assert_ne!(replay["id"], original["id"]);
    assert_eq!(
        (
            &replay["replay_of"],
            &replay["payload"],
            &replay["max_attempts"],
            &replay["priority"]
        ),
        (&original["id"], &json!({"to": "b@example.com"}), &json!(4), &json!(3))
    );
    assert_eq!(server.get(&format!("/v1/jobs/{id}"), &admin).await.json(), before);
    let record = &records(&server, &admin, id, "job.replayed").await[0];
    assert_eq!(
        (
            &record["summary"]["replay"],
            &record["summary"]["reason"],
            &record["actor"]["key_id"]
        ),
        (&replay["id"], &json!("wrong address"), &json!(key_id(&admin)))
    );
    let plain = server
        .post(&format!("/v1/jobs/{id}/replay"), &admin, json!({"reason": "once more"}))
        .await
        .json();
    assert_eq!(plain["payload"], json!({"to": "a@example.com"}));
    assert_eq!(
        server
            .post(&format!("/v1/jobs/{id}/replay"), &admin, json!({"payload": 1}))
            .await
            .code(),
        "validation_failed",
        "a reason is required"
    );
}

/// A job of `queue` that died with `kind`.
async fn dead_job(server: &TestServer, key: &str, queue: &str, kind: &str) -> String {
    let id = server.enqueue(key, json!({"queue": queue, "payload": {}})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let leased = server.lease_one(key, queue, "w1").await;
    let failed = server
        .post(
            &format!("/v1/jobs/{id}/fail"),
            key,
            json!({"lease_token": leased["lease_token"], "error": {"message": "no", "kind": kind}, "retryable": false}),
        )
        .await;
    assert_eq!(failed.json()["state"], "dead", "{}", failed.text);
    id
}

async fn bulk_retry_by_filter_counts_first_then_runs_in_the_background(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        steadfast_server::EngineConfig {
            bulk_batch: 2,
            ..Default::default()
        },
    )
    .await;
    let admin = server.key("acme", Role::Admin).await;
    let reader = server.key("acme", Role::Reader).await;
    let stranger = server.key("globex", Role::Admin).await;
    let mut declined = Vec::new();
    for _ in 0..5 {
        declined.push(dead_job(&server, &admin, "pay", "declined").await);
    }
    let other = dead_job(&server, &admin, "pay", "timeout").await;
    let body = |dry_run: bool| json!({"action": "retry", "filter": {"queue": "pay", "error_kind": "declined"}, "dry_run": dry_run, "reason": "the card processor is back"});

    let count = server.post("/v1/jobs/bulk", &admin, body(true)).await;
    assert_eq!(
        (count.status, count.json()["matched"].clone()),
        (StatusCode::OK, json!(5))
    );
    for (bad, what) in [
        (json!({"action": "retry", "reason": ""}), "a blank reason"),
        (
            json!({"action": "retry", "filter": {"state": "queued"}, "reason": "x"}),
            "a state retry does not apply to",
        ),
        (
            json!({"action": "cancel", "filter": {"state": "dead"}, "reason": "x"}),
            "a state cancel does not apply to",
        ),
        (
            json!({"action": "retry", "filter": {"queue": "a b"}, "reason": "x"}),
            "a bad queue name",
        ),
        (
            json!({"action": "retry", "filter": {"created_after": "2030-01-01T00:00:00Z", "created_before": "2029-01-01T00:00:00Z"}, "reason": "x"}),
            "an empty time range",
        ),
        (json!({"action": "delete", "reason": "x"}), "an unknown action"),
    ] {
        let refused = server.post("/v1/jobs/bulk", &admin, bad).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {}",
            refused.text
        );
    }
    assert_eq!(
        server.post("/v1/jobs/bulk", &reader, body(false)).await.code(),
        "forbidden"
    );

    let started = server.post("/v1/jobs/bulk", &admin, body(false)).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.text);
    let operation = started.json();
    let id = operation["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            &operation["status"],
            &operation["matched"],
            &operation["done"],
            &operation["created_by"]["key_id"]
        ),
        (&json!("running"), &json!(5), &json!(0), &json!(key_id(&admin)))
    );
    let mut passes = 0;
    while server.engine.run_bulk_once().await.unwrap() > 0 {
        passes += 1;
        let progress = server.get(&format!("/v1/bulk/{id}"), &reader).await.json();
        assert_eq!(progress["done"], json!(2 * passes), "two per batch");
    }
    let done = server.get(&format!("/v1/bulk/{id}"), &admin).await.json();
    assert_eq!(
        (&done["status"], &done["done"], &done["failed"]),
        (&json!("completed"), &json!(5), &json!(0))
    );
    assert!(done["finished_at"].is_string());
    for job in &declined {
        assert_eq!(
            server.get(&format!("/v1/jobs/{job}"), &admin).await.json()["state"],
            "queued"
        );
        let record = &records(&server, &admin, job, "job.retried").await[0];
        assert_eq!(
            (&record["summary"]["bulk_operation"], &record["summary"]["reason"]),
            (&json!(id), &json!("the card processor is back"))
        );
        assert_eq!(record["actor"]["key_id"], key_id(&admin));
    }
    assert_eq!(
        server.get(&format!("/v1/jobs/{other}"), &admin).await.json()["state"],
        "dead"
    );
    let listed = server.get("/v1/bulk", &admin).await.json();
    assert_eq!(listed["operations"][0]["id"], json!(id));
    assert_eq!(
        server.get(&format!("/v1/bulk/{id}"), &stranger).await.code(),
        "not_found"
    );
    assert_eq!(server.get("/v1/bulk/nope", &admin).await.code(), "not_found");
}

async fn a_bulk_cancel_can_be_stopped_halfway(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        steadfast_server::EngineConfig {
            bulk_batch: 2,
            ..Default::default()
        },
    )
    .await;
    let admin = server.key("acme", Role::Admin).await;
    for _ in 0..6 {
        server.enqueue(&admin, json!({"queue": "mail", "payload": {}})).await;
    }
    let started = server
        .post(
            "/v1/jobs/bulk",
            &admin,
            json!({"action": "cancel", "filter": {"queue": "mail"}, "reason": "a bad template"}),
        )
        .await
        .json();
    let id = started["id"].as_str().unwrap();
    server.engine.run_bulk_once().await.unwrap();
    let stopped = server.post(&format!("/v1/bulk/{id}/cancel"), &admin, json!({})).await;
    assert_eq!(stopped.status, StatusCode::OK, "{}", stopped.text);
    assert_eq!(
        (stopped.json()["status"].clone(), stopped.json()["done"].clone()),
        (json!("cancelled"), json!(2))
    );
    assert_eq!(server.engine.run_bulk_once().await.unwrap(), 0);
    let queued = server.get("/v1/jobs?queue=mail&state=queued", &admin).await.json();
    assert_eq!(
        queued["jobs"].as_array().unwrap().len(),
        4,
        "what was done stays done, nothing more"
    );
}

on_both_backends!(
    bulk_retry_by_filter_counts_first_then_runs_in_the_background,
    a_bulk_cancel_can_be_stopped_halfway,
    retry_cancel_and_signals_take_a_reason_into_the_audit_log,
    an_uncertain_step_is_resolved_by_an_operator,
    a_replay_is_a_new_job_linked_to_the_original,
);
