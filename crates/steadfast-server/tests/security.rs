//! Authentication, roles, tenant isolation and bad input: every refusal is a
//! 4xx with a stable code, changes nothing, and reveals nothing.

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;
use steadfast_core::{KeyId, Role};
use steadfast_server::Clock;

async fn another_tenants_key_gets_404_on_every_endpoint_that_takes_a_job_id(backend: Backend) {
    let server = TestServer::start(backend).await;
    let a = server.key("tenant-a", Role::Admin).await;
    let b = server.key("tenant-b", Role::Admin).await;
    let job = server
        .enqueue(&a, json!({"queue": "secret-queue", "payload": {"card": "4242-secret"}}))
        .await;
    let id = job["id"].as_str().unwrap();
    let leased = server.lease_one(&a, "secret-queue", "a-worker").await;
    let token = leased["lease_token"].clone();

    let attempts = [
        (Method::GET, format!("/v1/jobs/{id}"), None),
        (
            Method::POST,
            format!("/v1/jobs/{id}/heartbeat"),
            Some(json!({"lease_token": token})),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{id}/complete"),
            Some(json!({"lease_token": token})),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{id}/fail"),
            Some(json!({"lease_token": token, "error": {"message": "x"}})),
        ),
        (Method::POST, format!("/v1/jobs/{id}/retry"), Some(json!({}))),
        (Method::POST, format!("/v1/jobs/{id}/cancel"), Some(json!({}))),
    ];
    for (method, path, body) in attempts {
        let response = server.call(method.clone(), &path, Some(&b), body).await;
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            response.text
        );
        assert_eq!(response.code(), "not_found");
        for secret in [id, "4242-secret", "secret-queue", "a-worker"] {
            assert!(
                !response.text.contains(secret),
                "{method} {path} leaked {secret}: {}",
                response.text
            );
        }
    }
    let listed = server.get("/v1/jobs", &b).await;
    assert_eq!(listed.json()["jobs"], json!([]));
    let leased_by_b = server
        .post("/v1/lease", &b, json!({"queues": ["secret-queue"], "worker_id": "b"}))
        .await;
    assert_eq!(leased_by_b.json()["jobs"], json!([]));

    let detail = server.get(&format!("/v1/jobs/{id}"), &a).await.json();
    assert_eq!(detail["state"], "running", "nothing B did changed A's job");
    assert_eq!(detail["lease"]["worker_id"], "a-worker");
}

async fn missing_unknown_and_revoked_keys_get_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let body = json!({"queue": "q", "payload": {}});
    let no_key = server.call(Method::POST, "/v1/jobs", None, Some(body.clone())).await;
    assert_eq!(
        (no_key.status, no_key.code().as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let garbage = server.post("/v1/jobs", "not-a-key", body.clone()).await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
    let forged = format!("{}0", &admin[..admin.len() - 1]);
    let forged = if forged == admin {
        format!("{}1", &admin[..admin.len() - 1])
    } else {
        forged
    };
    assert_eq!(
        server.post("/v1/jobs", &forged, body.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );

    let key_id = KeyId::parse(admin.split('_').nth(1).unwrap()).unwrap();
    server.store.revoke_key(&key_id, common::t0()).await.unwrap();
    let revoked = server.post("/v1/jobs", &admin, body).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        revoked.text, no_key.text,
        "revoked and missing keys are indistinguishable"
    );
}

async fn each_role_may_do_only_its_part(backend: Backend) {
    let server = TestServer::start(backend).await;
    let producer = server.key("acme", Role::Producer).await;
    let worker = server.key("acme", Role::Worker).await;
    let other_worker = server.key("acme", Role::Worker).await;
    let reader = server.key("acme", Role::Reader).await;
    let job = json!({"queue": "q", "payload": {}});

    assert_eq!(server.post("/v1/jobs", &reader, job.clone()).await.code(), "forbidden");
    assert_eq!(server.post("/v1/jobs", &worker, job.clone()).await.code(), "forbidden");
    let created = server.enqueue(&producer, job).await;
    let id = created["id"].as_str().unwrap();
    let lease = json!({"queues": ["q"], "worker_id": "w"});
    assert_eq!(
        server.post("/v1/lease", &producer, lease.clone()).await.code(),
        "forbidden"
    );
    assert_eq!(server.post("/v1/lease", &reader, lease).await.code(), "forbidden");
    assert_eq!(
        server
            .post(&format!("/v1/jobs/{id}/cancel"), &producer, json!({}))
            .await
            .code(),
        "forbidden"
    );
    assert_eq!(server.get("/v1/jobs", &worker).await.code(), "forbidden");

    assert_eq!(
        server.get(&format!("/v1/jobs/{id}"), &worker).await.code(),
        "not_found",
        "not leased by this worker yet"
    );
    server.lease_one(&worker, "q", "w").await;
    assert_eq!(
        server.get(&format!("/v1/jobs/{id}"), &worker).await.status,
        StatusCode::OK,
        "a worker reads what it leased"
    );
    assert_eq!(
        server.get(&format!("/v1/jobs/{id}"), &other_worker).await.code(),
        "not_found"
    );
    assert_eq!(
        server.get(&format!("/v1/jobs/{id}"), &reader).await.status,
        StatusCode::OK
    );
    assert_eq!(server.get("/v1/jobs", &reader).await.status, StatusCode::OK);
}

async fn bad_input_gets_a_4xx_with_a_stable_code_and_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let json_type = Some("application/json");
    let huge = format!(r#"{{"queue":"q","payload":"{}"}}"#, "x".repeat(1024 * 1024 + 1));
    let deep = format!(
        r#"{{"queue":"q","payload":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    // (path, content type, body, expected status, expected code)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/v1/jobs",
            json_type,
            b"{\"queue\":".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "/v1/jobs",
            json_type,
            b"not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "/v1/jobs",
            json_type,
            deep.into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/jobs",
            json_type,
            br#"{"queue":5,"payload":{}}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/jobs",
            json_type,
            br#"{"queue":"q"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/jobs",
            json_type,
            br#"{"queue":"q","payload":{},"priorty":1}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/jobs",
            json_type,
            br#"{"queue":"","payload":{}}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/jobs",
            json_type,
            br#"{"queue":"q","payload":{},"max_attempts":0}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/jobs",
            json_type,
            br#"{"queue":"q","payload":{},"timeout_secs":-1}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/jobs",
            json_type,
            br#"{"queue":"q","payload":{},"priority":1000}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/jobs",
            json_type,
            br#"{"queue":"q","payload":{},"run_at":"tomorrow"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/jobs",
            json_type,
            br#"{"queue":"q","payload":{},"idempotency_key":""}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/jobs",
            json_type,
            huge.into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "/v1/jobs",
            None,
            br#"{"queue":"q","payload":{}}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "/v1/jobs",
            Some("text/plain"),
            br#"{"queue":"q","payload":{}}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "/v1/jobs/batch",
            json_type,
            br#"{"jobs":[]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/lease",
            json_type,
            br#"{"queues":[],"worker_id":"w"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/lease",
            json_type,
            br#"{"queues":["q"],"worker_id":"w","max_jobs":0}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/lease",
            json_type,
            br#"{"queues":["q"],"worker_id":"w","wait_ms":999999}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/lease",
            json_type,
            br#"{"queues":["q"],"worker_id":"has space"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/v1/jobs/not-a-uuid/complete",
            json_type,
            br#"{"lease_token":"x"}"#.to_vec(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/jobs/01890a5d-ac96-774b-bcce-b302099a8057/complete",
            json_type,
            br#"{"lease_token":"x"}"#.to_vec(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/nothing-here",
            json_type,
            b"{}".to_vec(),
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
    ];
    for (path, content_type, body, status, code) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let response = server.raw(path, &admin, content_type, body).await;
        let answer = &response.text[..response.text.len().min(300)];
        assert_eq!(response.status, status, "{path} {shown}: {answer}");
        assert_eq!(response.code(), code, "{path} {shown}");
        assert!(
            !response.text.to_lowercase().contains("sqlite"),
            "no internals in {}",
            response.text
        );
    }
    let wrong_method = server.call(Method::DELETE, "/v1/jobs", Some(&admin), None).await;
    assert_eq!(
        (wrong_method.status, wrong_method.code().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    assert_eq!(server.job_count(&admin).await, 0, "no refused request created a job");
}

/// A key's last use is kept to the minute: written once for a burst of
/// requests, again only when a minute has passed.
async fn a_keys_last_use_is_noted_at_most_once_a_minute(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let key_id = steadfast_core::ApiKeySecret::parse(&admin).unwrap().key_id().clone();
    let scope = {
        let tenant = server
            .store
            .tenant_by_name(&steadfast_core::TenantName::new("acme").unwrap())
            .await
            .unwrap()
            .unwrap();
        steadfast_store::auth::local_operator(&tenant)
    };
    let last_used = async || {
        let keys = server.store.list_keys(&scope).await.unwrap();
        keys.into_iter().find(|key| key.key_id == key_id).unwrap().last_used_at
    };
    let noted = async |expected| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while last_used().await != Some(expected) {
            assert!(
                std::time::Instant::now() < deadline,
                "last use {:?}, expected {expected}",
                last_used().await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    assert_eq!(last_used().await, None);
    let first = server.clock.now();
    for _ in 0..5 {
        assert_eq!(server.get("/v1/jobs", &admin).await.status, StatusCode::OK);
    }
    noted(first).await;
    server.advance(Duration::from_secs(59));
    server.get("/v1/jobs", &admin).await;
    server.advance(Duration::from_secs(2));
    let later = server.clock.now();
    server.get("/v1/jobs", &admin).await;
    noted(later).await;
}

on_both_backends!(
    a_keys_last_use_is_noted_at_most_once_a_minute,
    another_tenants_key_gets_404_on_every_endpoint_that_takes_a_job_id,
    missing_unknown_and_revoked_keys_get_401,
    each_role_may_do_only_its_part,
    bad_input_gets_a_4xx_with_a_stable_code_and_changes_nothing,
);
