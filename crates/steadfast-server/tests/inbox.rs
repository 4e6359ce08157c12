//! The webhook inbox over real HTTP on both backends. Signatures are
//! computed here with the `hmac` crate from each provider's specification,
//! not with the server's code; the providers' own libraries sign in
//! `crates/steadfast-cli/tests/providers.rs` (`tests/providers/`).

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Backend, TestServer};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use steadfast_core::Role;
use steadfast_server::EngineConfig;
use steadfast_server::engine::{InboxLimits, Rate};

on_both_backends!(
    stripe_events_are_verified_kept_exactly_and_made_one_job,
    github_signs_its_published_vector_and_a_replayed_body_is_a_duplicate,
    standard_webhooks_rotate_without_dropping_an_event,
    shopify_slack_and_generic_hmac_sources_verify_as_specified,
    a_hundred_concurrent_deliveries_of_one_event_make_one_job,
    a_source_never_reaches_another_tenant,
    refusals_store_nothing_and_are_audited_once_per_interval,
    events_are_listed_and_replayed_by_an_admin,
    sources_are_validated,
    secrets_expire_and_deleted_sources_refuse_deliveries,
    a_tenant_at_its_quota_still_has_its_duplicates_answered,
    a_busy_node_answers_429_with_retry_after,
);

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn now_secs(server: &TestServer) -> i64 {
    server.engine.now().as_second()
}

const STRIPE_SECRET: &str = "whsec_test_5f2b1d8c9a7e4f3b2a1c0d9e8f7a6b5c";

fn stripe_headers(secret: &str, t: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let signature = hex::encode(hmac_sha256(secret.as_bytes(), &[format!("{t}.").as_bytes(), body]));
    vec![
        ("stripe-signature", format!("t={t},v1={signature},v0=ignored")),
        ("content-type", "application/json".into()),
    ]
}

async fn create_source(server: &TestServer, admin: &str, body: Value) -> Value {
    let created = server.post("/v1/sources", admin, body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    created.json()
}

async fn stripe_source(server: &TestServer, admin: &str) -> (String, String) {
    let source = create_source(
        server,
        admin,
        json!({"name": "stripe-live", "kind": "stripe", "queue": "payments", "secret": STRIPE_SECRET}),
    )
    .await;
    assert!(source.get("secret").is_none(), "a given secret is never echoed");
    let path = source["ingest_path"].as_str().unwrap().to_owned();
    (source["id"].as_str().unwrap().to_owned(), path)
}

async fn stripe_events_are_verified_kept_exactly_and_made_one_job(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let (id, path) = stripe_source(&server, &admin).await;
    assert_eq!(path, format!("/hooks/{id}"));
    assert!(id.len() >= 32, "unguessable: {id}");

    let body = br#"{"id": "evt_1", "type": "charge.succeeded",  "data": {"object": {"amount": 2000}}}"#;
    let t = now_secs(&server);
    let first = server.hook(&path, &stripe_headers(STRIPE_SECRET, t, body), body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let first = first.json();
    assert_eq!(
        (first["duplicate"].as_bool(), first["event_id"].as_str()),
        (Some(false), Some("evt_1"))
    );
    let job_id = first["job_id"].as_str().unwrap();

    // Stripe retries with a new timestamp and signature: the same event.
    server.advance(Duration::from_secs(60));
    let retry = server
        .hook(&path, &stripe_headers(STRIPE_SECRET, now_secs(&server), body), body)
        .await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text);
    assert_eq!(retry.json()["duplicate"], true);
    assert_eq!(retry.json()["job_id"].as_str(), Some(job_id));

    let job = server.get(&format!("/v1/jobs/{job_id}"), &admin).await.json();
    assert_eq!(job["queue"], "payments");
    assert_eq!(job["payload"]["event_id"], "evt_1");
    assert_eq!(job["payload"]["source"], id.as_str());
    assert_eq!(job["payload"]["body"]["data"]["object"]["amount"], 2000);
    assert_eq!(job["payload"]["body_encoding"], "json");
    assert!(
        job["payload"]["headers"]["stripe-signature"]
            .as_str()
            .unwrap()
            .starts_with("t=")
    );
    assert_eq!(
        job["event"],
        json!({"source_id": id, "event_id": "evt_1", "replay": false})
    );
    assert_eq!(server.job_count(&admin).await, 1);

    // The same JSON re-serialised is other bytes: refused.
    let reserialized = serde_json::to_vec(&serde_json::from_slice::<Value>(body).unwrap()).unwrap();
    let t = now_secs(&server);
    let refused = server
        .hook(&path, &stripe_headers(STRIPE_SECRET, t, body), &reserialized)
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::UNAUTHORIZED, "signature_invalid".into())
    );

    // Correctly signed, but too old or too far ahead.
    for skew in [-301, 301] {
        let other = br#"{"id": "evt_2"}"#;
        let stale = server
            .hook(&path, &stripe_headers(STRIPE_SECRET, t + skew, other), other)
            .await;
        assert_eq!(
            (stale.status, stale.code()),
            (StatusCode::UNAUTHORIZED, "timestamp_out_of_tolerance".into()),
            "skew {skew}"
        );
    }
    let edge = br#"{"id": "evt_3"}"#;
    let within = server
        .hook(&path, &stripe_headers(STRIPE_SECRET, t - 300, edge), edge)
        .await;
    assert_eq!(within.status, StatusCode::OK, "300 s is within the default tolerance");

    let metrics = server.get("/metrics", &admin).await.text;
    for (outcome, n) in [("accepted", 2), ("duplicate", 1), ("rejected", 3)] {
        let line = format!("steadfast_inbox_events_total{{kind=\"stripe\",outcome=\"{outcome}\"}} {n}");
        assert!(metrics.contains(&line), "missing {line} in:\n{metrics}");
    }
}

/// GitHub's documentation publishes one vector: this secret and body give
/// this signature.
const GITHUB_VECTOR: (&str, &[u8], &str) = (
    "It's a Secret to Everybody",
    b"Hello, World!",
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
);

async fn github_signs_its_published_vector_and_a_replayed_body_is_a_duplicate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let (secret, body, signature) = GITHUB_VECTOR;
    let source = create_source(
        &server,
        &admin,
        json!({"name": "gh", "kind": "github", "queue": "ci", "secret": secret}),
    )
    .await;
    let path = source["ingest_path"].as_str().unwrap();
    let delivery = |id: &str| {
        vec![
            ("x-hub-signature-256", signature.to_owned()),
            ("x-github-delivery", id.to_owned()),
            ("x-github-event", "ping".to_owned()),
        ]
    };
    let first = server
        .hook(path, &delivery("72d3162e-cc78-11e3-81ab-4c9367dc0958"), body)
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.json()["event_id"], "72d3162e-cc78-11e3-81ab-4c9367dc0958");

    // A captured body sent again under a new delivery id: the id is not
    // signed, so the body's hash catches it.
    let replayed = server
        .hook(path, &delivery("8a6b4f5e-0000-11e3-81ab-4c9367dc0958"), body)
        .await;
    assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.text);
    assert_eq!(replayed.json()["duplicate"], true);
    assert_eq!(replayed.json()["job_id"], first.json()["job_id"]);
    assert_eq!(
        replayed.json()["event_id"],
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "the answer names the event that was stored"
    );

    // One body under many delivery ids at once: the body's key is locked too.
    let other: &'static [u8] = br#"{"zen":"Design for failure."}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(other);
    let signed = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let server = std::sync::Arc::new(server);
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let (server, path, signed) = (server.clone(), path.to_owned(), signed.clone());
            tokio::spawn(async move {
                let headers = [
                    ("x-hub-signature-256", signed),
                    ("x-github-delivery", format!("race-{n}")),
                ];
                server.hook(&path, &headers, other).await
            })
        })
        .collect();
    let mut jobs = std::collections::HashSet::new();
    for task in tasks {
        let response = task.await.unwrap();
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
        jobs.insert(response.json()["job_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(jobs.len(), 1, "one job for the body, whatever its delivery ids");

    let job = server
        .get(
            &format!("/v1/jobs/{}", first.json()["job_id"].as_str().unwrap()),
            &admin,
        )
        .await
        .json();
    assert_eq!(job["payload"]["body_encoding"], "base64", "not JSON");
    assert_eq!(BASE64.decode(job["payload"]["body"].as_str().unwrap()).unwrap(), body);
    assert_eq!(job["payload"]["headers"]["x-github-event"], "ping");

    let tampered = server.hook(path, &delivery("new"), b"Hello, World?").await;
    assert_eq!(tampered.code(), "signature_invalid");
    let unprefixed = vec![(
        "x-hub-signature-256",
        signature.trim_start_matches("sha256=").to_owned(),
    )];
    assert_eq!(server.hook(path, &unprefixed, body).await.code(), "signature_invalid");
}

fn standard_headers(secret: &str, id: &str, t: i64, body: &[u8], extra: &[&str]) -> Vec<(&'static str, String)> {
    let key = BASE64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let signature = BASE64.encode(hmac_sha256(&key, &[format!("{id}.{t}.").as_bytes(), body]));
    let mut signatures: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    signatures.push(format!("v1,{signature}"));
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", t.to_string()),
        ("webhook-signature", signatures.join(" ")),
    ]
}

async fn standard_webhooks_rotate_without_dropping_an_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let source = create_source(
        &server,
        &admin,
        json!({"name": "svix", "kind": "standard", "queue": "events"}),
    )
    .await;
    let old = source["secret"].as_str().expect("Steadfast made the secret").to_owned();
    assert!(old.starts_with("whsec_"));
    let (id, path) = (source["id"].as_str().unwrap(), source["ingest_path"].as_str().unwrap());

    let body = br#"{"type":"invoice.paid"}"#;
    let t = now_secs(&server);
    // Several signatures: a wrong one first, then a valid one.
    let bogus = format!("v1,{}", BASE64.encode([0u8; 32]));
    let signed = standard_headers(&old, "msg_1", t, body, &[&bogus, "v1a,ignored"]);
    assert_eq!(server.hook(path, &signed, body).await.status, StatusCode::OK);

    let rotated = server
        .post(
            &format!("/v1/sources/{id}/secrets"),
            &admin,
            json!({"retire_others_after_secs": 60}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.text);
    let new = rotated.json()["secret"].as_str().unwrap().to_owned();
    assert_eq!(rotated.json()["source"]["secrets"].as_array().unwrap().len(), 2);

    // During the grace period both secrets pass.
    for (n, secret) in [(2, &old), (3, &new)] {
        let msg = format!("msg_{n}");
        let response = server
            .hook(path, &standard_headers(secret, &msg, t, body, &[]), body)
            .await;
        assert_eq!(response.status, StatusCode::OK, "{n}: {}", response.text);
    }
    // After it, the old one fails and the new one passes.
    server.advance(Duration::from_secs(61));
    let t = now_secs(&server);
    let expired = server
        .hook(path, &standard_headers(&old, "msg_4", t, body, &[]), body)
        .await;
    assert_eq!(expired.code(), "signature_invalid");
    let current = server
        .hook(path, &standard_headers(&new, "msg_5", t, body, &[]), body)
        .await;
    assert_eq!(current.status, StatusCode::OK);

    // The signed id is the key: the same message id is a duplicate.
    let again = server
        .hook(path, &standard_headers(&new, "msg_5", t, body, &[]), body)
        .await;
    assert_eq!(again.json()["duplicate"], true);
    // A changed id breaks the signature.
    let mut forged = standard_headers(&new, "msg_5", t, body, &[]);
    forged[0].1 = "msg_6".into();
    assert_eq!(server.hook(path, &forged, body).await.code(), "signature_invalid");
}

async fn shopify_slack_and_generic_hmac_sources_verify_as_specified(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let body = br#"{"id":820982911946154508,"event_id":"Ev01","type":"event_callback"}"#;

    // Shopify: base64 over the body; the event id header is not signed.
    let shopify = create_source(
        &server,
        &admin,
        json!({"name": "shop", "kind": "shopify", "queue": "orders", "secret": "shpss_0123456789abcdef"}),
    )
    .await;
    let path = shopify["ingest_path"].as_str().unwrap();
    let signature = BASE64.encode(hmac_sha256(b"shpss_0123456789abcdef", &[body]));
    let headers = |event: &str| {
        vec![
            ("x-shopify-hmac-sha256", signature.clone()),
            ("x-shopify-event-id", event.to_owned()),
            ("x-shopify-topic", "orders/create".to_owned()),
        ]
    };
    let first = server.hook(path, &headers("e-1"), body).await;
    assert_eq!(
        (first.status, first.json()["event_id"].as_str()),
        (StatusCode::OK, Some("e-1"))
    );
    assert_eq!(server.hook(path, &headers("e-2"), body).await.json()["duplicate"], true);

    // Slack: v0 hex over "v0:{ts}:{body}"; the id is the body's event_id.
    let slack = create_source(
        &server,
        &admin,
        json!({"name": "slack", "kind": "slack", "queue": "chat", "secret": "8f742231b10e8888abcd99yyyzzz85a5"}),
    )
    .await;
    let path = slack["ingest_path"].as_str().unwrap();
    let slack_headers = |t: i64, body: &[u8]| {
        let signature = hex::encode(hmac_sha256(
            b"8f742231b10e8888abcd99yyyzzz85a5",
            &[format!("v0:{t}:").as_bytes(), body],
        ));
        vec![
            ("x-slack-signature", format!("v0={signature}")),
            ("x-slack-request-timestamp", t.to_string()),
        ]
    };
    let t = now_secs(&server);
    let event = server.hook(path, &slack_headers(t, body), body).await;
    assert_eq!(
        (event.status, event.json()["event_id"].as_str()),
        (StatusCode::OK, Some("Ev01"))
    );
    let challenge = br#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let handshake = server.hook(path, &slack_headers(t, challenge), challenge).await;
    assert_eq!(
        handshake.json(),
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    let stale = server.hook(path, &slack_headers(t - 3600, body), body).await;
    assert_eq!(stale.code(), "timestamp_out_of_tolerance");

    // Generic: sha512, base64, a prefix, a timestamp header, the id by pointer.
    let generic = create_source(
        &server,
        &admin,
        json!({"name": "acme-billing", "kind": "hmac", "queue": "billing", "secret": "generic-secret-1", "config": {
            "hmac": {"header": "X-Acme-Signature", "algorithm": "sha512", "encoding": "base64", "prefix": "s=",
                     "timestamp_header": "X-Acme-Time", "event_id_pointer": "/id"}
        }}),
    )
    .await;
    let path = generic["ingest_path"].as_str().unwrap();
    let mut mac = Hmac::<sha2::Sha512>::new_from_slice(b"generic-secret-1").unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let signed = vec![
        (
            "x-acme-signature",
            format!("s={}", BASE64.encode(mac.finalize().into_bytes())),
        ),
        ("x-acme-time", t.to_string()),
    ];
    let accepted = server.hook(path, &signed, body).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.text);
    assert_eq!(accepted.json()["event_id"], "820982911946154508");
    let mut later = signed.clone();
    later[1].1 = (t + 1).to_string();
    assert_eq!(
        server.hook(path, &later, body).await.code(),
        "signature_invalid",
        "the time is signed"
    );
}

async fn a_hundred_concurrent_deliveries_of_one_event_make_one_job(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    let admin = server.key("acme", Role::Admin).await;
    let (_, path) = stripe_source(&server, &admin).await;
    let body = br#"{"id":"evt_race"}"#.to_vec();
    let headers = stripe_headers(STRIPE_SECRET, now_secs(&server), &body);
    let deliveries: Vec<_> = (0..100)
        .map(|_| {
            let (server, path, headers, body) = (server.clone(), path.clone(), headers.clone(), body.clone());
            tokio::spawn(async move { server.hook(&path, &headers, &body).await })
        })
        .collect();
    let mut jobs = std::collections::HashSet::new();
    let mut new = 0;
    for delivery in deliveries {
        let response = delivery.await.unwrap();
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
        jobs.insert(response.json()["job_id"].as_str().unwrap().to_owned());
        new += usize::from(response.json()["duplicate"] == false);
    }
    assert_eq!((jobs.len(), new), (1, 1));
    assert_eq!(server.job_count(&admin).await, 1);
}

async fn a_source_never_reaches_another_tenant(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin_a = server.key("tenant-a", Role::Admin).await;
    let admin_b = server.key("tenant-b", Role::Admin).await;
    let (id, path) = stripe_source(&server, &admin_a).await;
    let body = br#"{"id":"evt_a"}"#;
    let delivered = server
        .hook(&path, &stripe_headers(STRIPE_SECRET, now_secs(&server), body), body)
        .await;
    assert_eq!(delivered.status, StatusCode::OK);
    assert_eq!(
        (server.job_count(&admin_a).await, server.job_count(&admin_b).await),
        (1, 0)
    );

    for (method, route) in [
        (Method::GET, format!("/v1/sources/{id}")),
        (Method::GET, format!("/v1/sources/{id}/events")),
        (Method::POST, format!("/v1/sources/{id}/events/evt_a/replay")),
        (Method::POST, format!("/v1/sources/{id}/secrets")),
        (Method::DELETE, format!("/v1/sources/{id}")),
    ] {
        let body = (method == Method::POST).then(|| json!({}));
        let response = server.call(method.clone(), &route, Some(&admin_b), body).await;
        assert_eq!(
            (response.status, response.code()),
            (StatusCode::NOT_FOUND, "not_found".into()),
            "{method} {route}"
        );
        assert!(!response.text.contains("tenant-a"), "{}", response.text);
    }
    let listed = server.get("/v1/sources", &admin_b).await.json();
    assert_eq!(listed["sources"], json!([]));
    let job_id = delivered.json()["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        server.get(&format!("/v1/jobs/{job_id}"), &admin_b).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.job_count(&admin_a).await, 1, "nothing of B's requests changed A");

    // A worker or producer of A may not manage sources.
    let producer = server.key("tenant-a", Role::Producer).await;
    let forbidden = server
        .post(
            "/v1/sources",
            &producer,
            json!({"name": "x", "kind": "github", "queue": "q"}),
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
}

async fn refusals_store_nothing_and_are_audited_once_per_interval(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let (id, path) = stripe_source(&server, &admin).await;
    let body = br#"{"id":"evt_x"}"#;
    let t = now_secs(&server);
    for _ in 0..3 {
        let forged = server
            .hook(&path, &stripe_headers("whsec_wrong_secret_value", t, body), body)
            .await;
        assert_eq!(forged.code(), "signature_invalid");
    }
    let stale = server
        .hook(&path, &stripe_headers(STRIPE_SECRET, t - 1000, body), body)
        .await;
    assert_eq!(stale.code(), "timestamp_out_of_tolerance");
    assert_eq!(
        server.hook(&path, &[], body).await.code(),
        "signature_invalid",
        "no header at all"
    );
    let unknown = server
        .hook("/hooks/src_00000000000000000000000000000000", &[], body)
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "not_found".into())
    );

    assert_eq!(server.job_count(&admin).await, 0);
    let events = server.get(&format!("/v1/sources/{id}/events"), &admin).await.json();
    assert_eq!(events["events"], json!([]));

    let audit_actions = |records: &Value| -> Vec<Value> {
        records["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "inbox.signature_rejected")
            .cloned()
            .collect()
    };
    let before = server.get("/v1/audit?limit=100", &admin).await.json();
    assert!(audit_actions(&before).is_empty(), "not one write per request");
    assert_eq!(server.engine.record_refused_deliveries().await.unwrap(), 1);
    let after = server.get("/v1/audit?limit=100", &admin).await.json();
    let records = audit_actions(&after);
    assert_eq!(records.len(), 1, "{after}");
    let summary = &records[0]["summary"];
    assert_eq!(summary["count"], 5, "{summary}");
    assert_eq!(summary["reasons"]["signature_invalid"], 4);
    assert_eq!(summary["reasons"]["timestamp_out_of_tolerance"], 1);
    assert_eq!(records[0]["target"], id.as_str());
}

async fn events_are_listed_and_replayed_by_an_admin(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let reader = server.key("acme", Role::Reader).await;
    let (id, path) = stripe_source(&server, &admin).await;
    for n in 0..3 {
        let body = format!(r#"{{"id":"evt_{n}"}}"#);
        let t = now_secs(&server);
        let response = server
            .hook(
                &path,
                &stripe_headers(STRIPE_SECRET, t, body.as_bytes()),
                body.as_bytes(),
            )
            .await;
        assert_eq!(response.status, StatusCode::OK);
    }
    let body = br#"{"id":"evt_2"}"#;
    let duplicate = server
        .hook(&path, &stripe_headers(STRIPE_SECRET, now_secs(&server), body), body)
        .await;
    assert_eq!(duplicate.json()["duplicate"], true);

    let page = server
        .get(&format!("/v1/sources/{id}/events?limit=2"), &reader)
        .await
        .json();
    let listed: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["evt_2", "evt_1"]);
    assert_eq!(page["events"][0]["duplicates"], 1);
    assert_eq!(page["events"][0]["verification"]["valid"], true);
    assert_eq!(page["events"][0]["body_bytes"], body.len());
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = server
        .get(&format!("/v1/sources/{id}/events?limit=2&cursor={cursor}"), &reader)
        .await
        .json();
    assert_eq!(rest["events"][0]["event_id"], "evt_0");
    assert!(rest.get("next_cursor").is_none());

    let replay_path = format!("/v1/sources/{id}/events/evt_1/replay");
    assert_eq!(
        server.post(&replay_path, &reader, json!({})).await.status,
        StatusCode::FORBIDDEN
    );
    let replayed = server.post(&replay_path, &admin, json!({})).await;
    assert_eq!(replayed.status, StatusCode::CREATED, "{}", replayed.text);
    let job_id = replayed.json()["job_id"].as_str().unwrap().to_owned();
    let job = server.get(&format!("/v1/jobs/{job_id}"), &admin).await.json();
    assert_eq!(
        job["event"],
        json!({"source_id": id, "event_id": "evt_1", "replay": true})
    );
    assert_eq!(job["payload"]["body"]["id"], "evt_1");
    assert_eq!(job["state"], "queued");
    assert_eq!(server.job_count(&admin).await, 4);
    let missing = server
        .post(&format!("/v1/sources/{id}/events/evt_nope/replay"), &admin, json!({}))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let audit = server.get("/v1/audit?limit=200", &admin).await.json();
    let replays: Vec<&Value> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "inbox.event_replayed")
        .collect();
    assert_eq!(replays.len(), 1);
    assert_eq!(replays[0]["actor"]["kind"], "key");
    let enqueued_by_source = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "job.enqueued" && r["actor"]["kind"] == "source")
        .count();
    assert_eq!(enqueued_by_source, 3, "deliveries are recorded as the source");
}

async fn sources_are_validated(backend: Backend) {
    let config = EngineConfig {
        inbox: InboxLimits {
            max_body_bytes: 64,
            source_rate: Rate::new(1, 3).unwrap(),
            ..InboxLimits::default()
        },
        ..EngineConfig::default()
    };
    let server = TestServer::start_with(backend, config).await;
    let admin = server.key("acme", Role::Admin).await;
    for (body, expected) in [
        (
            json!({"name": "s", "kind": "stripe", "queue": "q"}),
            "validation_failed",
        ),
        (
            json!({"name": "s", "kind": "paypal", "queue": "q"}),
            "validation_failed",
        ),
        (
            json!({"name": "s", "kind": "github", "queue": "q", "secret": "short"}),
            "validation_failed",
        ),
        (
            json!({"name": "s", "kind": "github", "queue": "q", "tolerance_secs": 0}),
            "validation_failed",
        ),
        (
            json!({"name": "s", "kind": "github", "queue": "q", "config": {"hmac": {}}}),
            "validation_failed",
        ),
        (json!({"name": "s", "kind": "hmac", "queue": "q"}), "validation_failed"),
        (
            json!({"name": "s", "kind": "standard", "queue": "q", "secret": "whsec_!!notbase64!!"}),
            "validation_failed",
        ),
        (
            json!({"name": "s", "kind": "github", "queue": "q", "surprise": 1}),
            "validation_failed",
        ),
    ] {
        let response = server.post("/v1/sources", &admin, body.clone()).await;
        assert_eq!(
            (response.status, response.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, expected.into()),
            "{body}"
        );
    }
    assert_eq!(
        server.get("/v1/sources", &admin).await.json()["sources"],
        json!([]),
        "nothing was created"
    );
    let source = create_source(&server, &admin, json!({"name": "gh", "kind": "github", "queue": "q"})).await;
    assert_eq!(source["secret"].as_str().unwrap().len(), 64, "256 random bits in hex");
    let again = server
        .post(
            "/v1/sources",
            &admin,
            json!({"name": "gh", "kind": "github", "queue": "q"}),
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "invalid_state".into())
    );

    let path = source["ingest_path"].as_str().unwrap();
    let too_big = server.hook(path, &[], &[b'x'; 65]).await;
    assert_eq!(
        (too_big.status, too_big.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );
    // The source's rate: a burst of 3, then 429 with Retry-After.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(server.hook(path, &[], b"{}").await.status);
    }
    let limited = server.hook(path, &[], b"{}").await;
    assert_eq!(
        statuses,
        [StatusCode::UNAUTHORIZED; 3],
        "the oversized body was not counted"
    );
    assert_eq!(
        (limited.status, limited.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited".into())
    );
    assert!(limited.headers.get("retry-after").is_some());
}

async fn secrets_expire_and_deleted_sources_refuse_deliveries(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let (id, path) = stripe_source(&server, &admin).await;

    // Stripe makes its secrets: a rotation must carry the new one.
    let made = server
        .post(&format!("/v1/sources/{id}/secrets"), &admin, json!({}))
        .await;
    assert_eq!(
        (made.status, made.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed".into())
    );
    assert!(made.text.contains("secret"), "{}", made.text);

    // A second secret that expires on its own in a minute.
    let expires_at = server.engine.now().checked_add(Duration::from_secs(60)).unwrap();
    let second = "whsec_second_0123456789abcdef";
    let added = server
        .post(
            &format!("/v1/sources/{id}/secrets"),
            &admin,
            json!({"secret": second, "expires_at": expires_at.to_string()}),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    assert!(added.json().get("secret").is_none(), "a given secret is never echoed");
    let body = br#"{"id":"evt_second"}"#;
    let t = now_secs(&server);
    assert_eq!(
        server.hook(&path, &stripe_headers(second, t, body), body).await.status,
        StatusCode::OK
    );
    server.advance(Duration::from_secs(60));
    let t = now_secs(&server);
    let late = br#"{"id":"evt_late"}"#;
    assert_eq!(
        server.hook(&path, &stripe_headers(second, t, late), late).await.code(),
        "signature_invalid"
    );
    assert_eq!(
        server
            .hook(&path, &stripe_headers(STRIPE_SECRET, t, late), late)
            .await
            .status,
        StatusCode::OK
    );

    // Ids that could name no source never reach storage.
    for bad in ["/hooks/%00", "/hooks/src_%00", "/hooks/..%2f..%2fv1"] {
        let response = server.hook(bad, &[], b"{}").await;
        assert_eq!(
            (response.status, response.code()),
            (StatusCode::NOT_FOUND, "not_found".into()),
            "{bad}"
        );
    }
    for bad in ["/v1/sources/%00", &format!("/v1/sources/{id}/events/%00/replay")] {
        let method = if bad.ends_with("replay") {
            Method::POST
        } else {
            Method::GET
        };
        let response = server.call(method, bad, Some(&admin), None).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{bad}: {}", response.text);
    }

    // Deleted: refused at once on this node; its events stay listed.
    let deleted = server
        .call(Method::DELETE, &format!("/v1/sources/{id}"), Some(&admin), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let after = br#"{"id":"evt_after_delete"}"#;
    let refused = server
        .hook(&path, &stripe_headers(STRIPE_SECRET, t, after), after)
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    assert_eq!(
        server.get(&format!("/v1/sources/{id}"), &admin).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.job_count(&admin).await, 2);
}

async fn a_tenant_at_its_quota_still_has_its_duplicates_answered(backend: Backend) {
    let mut config = EngineConfig::default();
    config.tenants.max_unfinished_jobs = 1;
    let server = TestServer::start_with(backend, config).await;
    let admin = server.key("acme", Role::Admin).await;
    let (_, path) = stripe_source(&server, &admin).await;
    let t = now_secs(&server);
    let body = br#"{"id":"evt_q1"}"#;
    assert_eq!(
        server
            .hook(&path, &stripe_headers(STRIPE_SECRET, t, body), body)
            .await
            .status,
        StatusCode::OK
    );
    let again = server.hook(&path, &stripe_headers(STRIPE_SECRET, t, body), body).await;
    assert_eq!(
        (again.status, again.json()["duplicate"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let new = br#"{"id":"evt_q2"}"#;
    let refused = server.hook(&path, &stripe_headers(STRIPE_SECRET, t, new), new).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded".into())
    );
    assert!(refused.headers.get("retry-after").is_some());
    assert_eq!(server.job_count(&admin).await, 1);
}

async fn a_busy_node_answers_429_with_retry_after(backend: Backend) {
    let config = EngineConfig {
        inbox: InboxLimits {
            max_in_flight: 0,
            ..InboxLimits::default()
        },
        ..EngineConfig::default()
    };
    let server = TestServer::start_with(backend, config).await;
    let admin = server.key("acme", Role::Admin).await;
    let (_, path) = stripe_source(&server, &admin).await;
    let body = br#"{"id":"evt_busy"}"#;
    let busy = server
        .hook(&path, &stripe_headers(STRIPE_SECRET, now_secs(&server), body), body)
        .await;
    assert_eq!(
        (busy.status, busy.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited".into())
    );
    assert_eq!(busy.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(server.job_count(&admin).await, 0);
}
