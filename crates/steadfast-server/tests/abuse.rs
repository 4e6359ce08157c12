//! Abuse limits, with the engine's manual clock: a key over its rate gets
//! `429 rate_limited` with the rate limit headers; failed authentications
//! cost no durable write per request (they are counted, and written once
//! per interval) and are limited per client address.

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use reqwest::StatusCode;
use steadfast_core::Role;
use steadfast_server::EngineConfig;
use steadfast_server::engine::{AbuseLimits, Rate};
use steadfast_store::AuditQuery;
use steadfast_store::auth;

fn limited(key_rate: Rate, auth_failure_rate: Rate) -> EngineConfig {
    EngineConfig {
        abuse: AbuseLimits {
            key_rate,
            auth_failure_rate,
            ..AbuseLimits::default()
        },
        ..EngineConfig::default()
    }
}

async fn a_key_over_its_rate_gets_429_with_the_rate_limit_headers(backend: Backend) {
    let generous = Rate::new(1000, 1000).unwrap();
    let server = TestServer::start_with(backend, limited(Rate::new(1, 3).unwrap(), generous)).await;
    let busy = server.key("acme", Role::Reader).await;
    let other = server.key("acme", Role::Reader).await;
    for remaining in [2, 1, 0] {
        let ok = server.get("/v1/jobs", &busy).await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.headers["ratelimit-policy"], "\"key\";q=3;w=3");
        let state = ok.headers["ratelimit"].to_str().unwrap();
        assert!(state.starts_with(&format!("\"key\";r={remaining};t=")), "{state}");
    }
    let refused = server.get("/v1/jobs", &busy).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(refused.headers["ratelimit"], "\"key\";r=0;t=1");
    assert_eq!(
        server.get("/v1/jobs", &other).await.status,
        StatusCode::OK,
        "each key has its own rate"
    );

    server.advance(Duration::from_secs(1));
    assert_eq!(
        server.get("/v1/jobs", &busy).await.status,
        StatusCode::OK,
        "the rate earns a request back"
    );
}

/// Records of `action` in the system chain and in acme's chain.
async fn failures_recorded(server: &TestServer) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let query = AuditQuery {
        action: Some("auth.failed".into()),
        limit: 100,
        ..AuditQuery::default()
    };
    let acme = server
        .store
        .tenant_by_name(&steadfast_core::TenantName::new("acme").unwrap())
        .await
        .unwrap()
        .unwrap();
    let summaries = async |scope| {
        let records = server.store.audit_records(&scope, query.clone()).await.unwrap().records;
        records
            .iter()
            .map(|record| serde_json::from_str(&record.summary).unwrap())
            .collect::<Vec<serde_json::Value>>()
    };
    (
        summaries(auth::system_chain_operator()).await,
        summaries(auth::local_operator(&acme)).await,
    )
}

async fn failed_authentications_are_counted_not_written_per_request(backend: Backend) {
    let generous = Rate::new(1000, 1000).unwrap();
    let server = TestServer::start_with(backend, limited(generous, generous)).await;
    let admin = server.key("acme", Role::Admin).await;
    let last = if admin.ends_with('0') { '1' } else { '0' };
    let wrong_secret = format!("{}{last}", &admin[..admin.len() - 1]);
    for n in 0..40 {
        let unknown = format!("sfk_{n:016x}_{}", "a".repeat(64));
        assert_eq!(server.get("/v1/jobs", &unknown).await.status, StatusCode::UNAUTHORIZED);
    }
    for _ in 0..5 {
        assert_eq!(
            server.get("/v1/jobs", &wrong_secret).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        server.get("/v1/jobs", "not a key").await.status,
        StatusCode::UNAUTHORIZED
    );
    let (system, acme) = failures_recorded(&server).await;
    assert!(
        system.is_empty() && acme.is_empty(),
        "no failure was written on its own"
    );

    assert_eq!(server.engine.record_auth_failures().await.unwrap(), 2);
    let (system, acme) = failures_recorded(&server).await;
    assert_eq!(system.len(), 1, "{system:?}");
    assert_eq!(system[0]["count"], 41, "unknown and malformed keys, counted together");
    assert_eq!(system[0]["addresses"][0]["address"], "127.0.0.1");
    assert_eq!(acme.len(), 1, "{acme:?}");
    assert_eq!(
        acme[0]["count"], 5,
        "a wrong secret for a real key is its tenant's record"
    );
    assert_eq!(
        server.engine.record_auth_failures().await.unwrap(),
        0,
        "nothing new, nothing written"
    );
}

async fn a_client_that_keeps_failing_is_rate_limited(backend: Backend) {
    let generous = Rate::new(1000, 1000).unwrap();
    let server = TestServer::start_with(backend, limited(generous, Rate::new(1, 5).unwrap())).await;
    let admin = server.key("acme", Role::Admin).await;
    let unknown = format!("sfk_{:016x}_{}", 7, "a".repeat(64));
    for _ in 0..5 {
        assert_eq!(server.get("/v1/jobs", &unknown).await.status, StatusCode::UNAUTHORIZED);
    }
    let refused = server.get("/v1/jobs", &unknown).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(refused.headers["ratelimit-policy"], "\"auth-failures\";q=5;w=5");
    assert!(refused.headers.contains_key("retry-after"));
    // A valid key is not a failure: it still gets through.
    assert_eq!(server.get("/v1/jobs", &admin).await.status, StatusCode::OK);
    server.advance(Duration::from_secs(1));
    assert_eq!(server.get("/v1/jobs", &unknown).await.status, StatusCode::UNAUTHORIZED);
}

on_both_backends!(
    a_key_over_its_rate_gets_429_with_the_rate_limit_headers,
    failed_authentications_are_counted_not_written_per_request,
    a_client_that_keeps_failing_is_rate_limited,
);
