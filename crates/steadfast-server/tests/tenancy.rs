//! What a tenant may hold: the cap on unfinished jobs (`429
//! quota_exceeded`), finished jobs pruned after their retention (the
//! server's, or their queue's own), and a tenant's own request rate.

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use steadfast_core::{Role, TenantName};
use steadfast_server::EngineConfig;
use steadfast_server::engine::TenantDefaults;
use steadfast_store::TenantLimits;

const DAY: u64 = 86_400;

fn capped(max_unfinished_jobs: u64) -> EngineConfig {
    EngineConfig {
        tenants: TenantDefaults {
            max_unfinished_jobs,
            ..TenantDefaults::default()
        },
        ..EngineConfig::default()
    }
}

async fn set_limits(server: &TestServer, tenant: &str, limits: TenantLimits) {
    let tenant = server
        .store
        .tenant_by_name(&TenantName::new(tenant).unwrap())
        .await
        .unwrap()
        .unwrap();
    server
        .store
        .set_tenant_limits(tenant.id, limits, common::t0())
        .await
        .unwrap();
    server.engine.refresh_tenant_state().await.unwrap();
}

async fn finish_one(server: &TestServer, key: &str, queue: &str) -> String {
    let leased = server.lease_one(key, queue, "w").await;
    let id = leased["id"].as_str().unwrap().to_owned();
    let done = server
        .post(
            &format!("/v1/jobs/{id}/complete"),
            key,
            json!({"lease_token": leased["lease_token"]}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    id
}

async fn a_tenant_at_its_cap_gets_429_until_jobs_finish(backend: Backend) {
    let server = TestServer::start_with(backend, capped(3)).await;
    let acme = server.key("acme", Role::Admin).await;
    let globex = server.key("globex", Role::Admin).await;
    for _ in 0..3 {
        server.enqueue(&acme, json!({"queue": "q", "payload": {}})).await;
    }
    let refused = server
        .post("/v1/jobs", &acme, json!({"queue": "q", "payload": {}}))
        .await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded")
    );
    let batch = json!({"jobs": [{"queue": "q", "payload": {}}]});
    assert_eq!(
        server.post("/v1/jobs/batch", &acme, batch).await.code(),
        "quota_exceeded"
    );
    assert_eq!(server.job_count(&acme).await, 3, "nothing was created");
    server.enqueue(&globex, json!({"queue": "q", "payload": {}})).await;

    // Finished jobs stop counting once the count is taken again.
    finish_one(&server, &acme, "q").await;
    server.engine.refresh_tenant_state().await.unwrap();
    server.enqueue(&acme, json!({"queue": "q", "payload": {}})).await;

    // A tenant's own cap replaces the server's.
    set_limits(
        &server,
        "acme",
        TenantLimits {
            key_rate: None,
            max_unfinished_jobs: Some(5),
        },
    )
    .await;
    for _ in 0..2 {
        server.enqueue(&acme, json!({"queue": "q", "payload": {}})).await;
    }
    assert_eq!(
        server
            .post("/v1/jobs", &acme, json!({"queue": "q", "payload": {}}))
            .await
            .code(),
        "quota_exceeded"
    );
}

async fn a_tenant_with_its_own_rate_is_limited_by_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.key("acme", Role::Reader).await;
    let globex = server.key("globex", Role::Reader).await;
    set_limits(
        &server,
        "acme",
        TenantLimits {
            key_rate: Some((1, 2)),
            max_unfinished_jobs: None,
        },
    )
    .await;
    for _ in 0..2 {
        assert_eq!(server.get("/v1/jobs", &acme).await.status, StatusCode::OK);
    }
    let refused = server.get("/v1/jobs", &acme).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers["ratelimit-policy"], "\"key\";q=2;w=2");
    for _ in 0..3 {
        assert_eq!(
            server.get("/v1/jobs", &globex).await.status,
            StatusCode::OK,
            "the server's rate"
        );
    }
}

async fn finished_jobs_are_pruned_after_their_queues_retention(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let reader = server.key("acme", Role::Reader).await;
    let own = server
        .call(
            Method::PUT,
            "/v1/queues/reports/retention",
            Some(&admin),
            Some(json!({"retain_succeeded_secs": DAY})),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
    assert_eq!(
        own.json(),
        json!({"queue": "reports", "retain_succeeded_secs": DAY, "retain_failed_secs": null,
               "effective_succeeded_secs": DAY, "effective_failed_secs": 30 * DAY})
    );
    let read: Value = server.get("/v1/queues/reports/retention", &reader).await.json();
    assert_eq!(read["effective_succeeded_secs"], DAY);
    for (body, code) in [
        (json!({"retain_succeeded_secs": 0}), "validation_failed"),
        (json!({"retain_succeeded_secs": 315_360_001u64}), "validation_failed"),
        (json!({"keep": 1}), "validation_failed"),
    ] {
        let refused = server
            .call(Method::PUT, "/v1/queues/reports/retention", Some(&admin), Some(body))
            .await;
        assert_eq!(refused.code(), code, "{}", refused.text);
    }
    let forbidden = server
        .call(
            Method::PUT,
            "/v1/queues/reports/retention",
            Some(&reader),
            Some(json!({})),
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);

    for queue in ["reports", "emails"] {
        server.enqueue(&admin, json!({"queue": queue, "payload": {}})).await;
    }
    let report = finish_one(&server, &admin, "reports").await;
    let email = finish_one(&server, &admin, "emails").await;
    let exists = async |id: &str| server.get(&format!("/v1/jobs/{id}"), &admin).await.status == StatusCode::OK;

    server.advance(Duration::from_secs(2 * DAY));
    assert_eq!(server.engine.prune_finished_jobs().await.unwrap(), 1);
    assert!(!exists(&report).await, "the queue's own day has passed");
    assert!(exists(&email).await, "the server's week has not");

    server.advance(Duration::from_secs(6 * DAY));
    assert_eq!(server.engine.prune_finished_jobs().await.unwrap(), 1);
    assert!(!exists(&email).await);
    let trail = server.get("/v1/audit?action=jobs.pruned", &admin).await.json();
    assert_eq!(trail["records"].as_array().unwrap().len(), 2, "{trail}");
}

on_both_backends!(
    a_tenant_at_its_cap_gets_429_until_jobs_finish,
    a_tenant_with_its_own_rate_is_limited_by_it,
    finished_jobs_are_pruned_after_their_queues_retention,
);
