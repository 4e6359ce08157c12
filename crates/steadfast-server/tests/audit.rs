//! The audit log over HTTP: what is recorded, who may read it, signed
//! checkpoints and verification.

mod common;

use common::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;
use steadfast_core::Role;
use steadfast_protocol::AuditCheckpoint;
use steadfast_server::engine::audit::verify_checkpoint;

async fn job_trail(server: &TestServer, key: &str, id: &str) -> Vec<serde_json::Value> {
    let trail = server.get(&format!("/v1/audit?job_id={id}"), key).await;
    assert_eq!(trail.status, StatusCode::OK, "{}", trail.text);
    trail.json()["records"].as_array().unwrap().clone()
}

async fn a_jobs_lineage_answers_where_it_came_from_and_what_it_produced(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let reader = server.key("acme", Role::Reader).await;
    let response = server
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&admin),
            Some(json!({"queue": "q", "payload": {"n": 1}})),
        )
        .await;
    let id = response.json()["id"].as_str().unwrap().to_owned();
    let leased = server.lease_one(&admin, "q", "w1").await;
    let token = leased["lease_token"].clone();
    let child = json!({"lease_token": token, "step": "fan-out", "job": {"queue": "kids", "payload": {}}});
    let child_id = server
        .post(&format!("/v1/jobs/{id}/children"), &admin, child)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .post(
            &format!("/v1/jobs/{id}/complete"),
            &admin,
            json!({"lease_token": token, "output": {"total": 42}}),
        )
        .await;

    let trail = job_trail(&server, &reader, &id).await;
    let actions: Vec<_> = trail.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["job.enqueued", "job.leased", "child.spawned", "job.succeeded"]
    );
    assert_eq!(trail[0]["actor"]["kind"], "key");
    assert!(trail[0]["actor"]["key_id"].is_string());
    assert_eq!(trail[2]["summary"]["child"], child_id.as_str());
    assert_eq!(trail[3]["summary"]["output"], json!({"total": 42}));
    let child_trail = job_trail(&server, &reader, &child_id).await;
    assert_eq!(
        child_trail[0]["summary"]["parent"],
        json!({"job_id": id, "step": "fan-out"})
    );
}

async fn only_admins_and_readers_read_the_log_of_their_own_tenant(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    server.enqueue(&admin, json!({"queue": "q", "payload": {}})).await;
    for role in [Role::Producer, Role::Worker] {
        let key = server.key("acme", role).await;
        assert_eq!(server.get("/v1/audit", &key).await.code(), "forbidden", "{role}");
        assert_eq!(server.get("/v1/audit/head", &key).await.code(), "forbidden", "{role}");
    }
    let reader = server.key("acme", Role::Reader).await;
    assert_eq!(
        server.get("/v1/audit/verify", &reader).await.code(),
        "forbidden",
        "verification is for admins"
    );
    let other = server.key("globex", Role::Admin).await;
    let theirs = server.get("/v1/audit", &other).await.json();
    let actions: Vec<_> = theirs["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].clone())
        .collect();
    assert!(
        !actions.contains(&json!("job.enqueued")),
        "another tenant's chain holds none of acme's records"
    );
    for bad in [
        "/v1/audit?limit=0",
        "/v1/audit?since=yesterday",
        "/v1/audit?job_id=nope",
        "/v1/audit?cursor=x",
    ] {
        assert_eq!(server.get(bad, &admin).await.code(), "validation_failed", "{bad}");
    }
}

async fn checkpoints_are_signed_and_the_chain_verifies(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    server.enqueue(&admin, json!({"queue": "q", "payload": {}})).await;
    let head = server.get("/v1/audit/head", &admin).await;
    let checkpoint: AuditCheckpoint = serde_json::from_str(&head.text).unwrap();
    let signer = server.engine.config().audit_signer.as_ref().unwrap().public_key_hex();
    let vouched = verify_checkpoint(&checkpoint, &[signer]).expect("a valid signature");
    assert_eq!(vouched.seq, checkpoint.seq);
    let verification = server.get("/v1/audit/verify", &admin).await.json();
    assert_eq!(verification["intact"], true);
    assert_eq!(verification["head_seq"], checkpoint.seq);
}

async fn failed_authentication_and_request_ids_are_recorded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let wrong_secret = format!("{}{}", &admin[..admin.len() - 4], "0000");
    let refused = server
        .post("/v1/jobs", &wrong_secret, json!({"queue": "q", "payload": {}}))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // Counted, then written with the interval's other failures of the key.
    server.engine.record_auth_failures().await.unwrap();
    let failures = server.get("/v1/audit?action=auth.failed", &admin).await.json();
    assert_eq!(failures["records"].as_array().unwrap().len(), 1);

    let traced = reqwest::Client::new()
        .post(format!("{}/v1/jobs", server.url))
        .bearer_auth(&admin)
        .header("x-request-id", "req-from-the-client")
        .json(&json!({"queue": "q", "payload": {}}))
        .send()
        .await
        .unwrap();
    let id = traced.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let trail = job_trail(&server, &admin, &id).await;
    assert_eq!(trail[0]["request_id"], "req-from-the-client");
}

on_both_backends!(
    a_jobs_lineage_answers_where_it_came_from_and_what_it_produced,
    only_admins_and_readers_read_the_log_of_their_own_tenant,
    checkpoints_are_signed_and_the_chain_verifies,
    failed_authentication_and_request_ids_are_recorded,
);
