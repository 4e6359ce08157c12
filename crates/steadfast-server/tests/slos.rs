//! SLOs and burn-rate alerts with an injected clock: an alert pages, is
//! delivered through a durable notification job, and clears.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, TestServer};
use serde_json::{Value, json};
use steadfast_core::Role;
use steadfast_protocol::tls::test_ca::TestCa;
use steadfast_protocol::tls::{TrustedRoots, rustls};
use steadfast_server::EngineConfig;
use steadfast_server::engine::DeliveryLimits;
use steadfast_server::serve::ServeOptions;

/// A webhook receiver on loopback that keeps what it is sent.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    receiver_with(None).await
}

/// [`receiver`], over TLS with `tls`.
async fn receiver_with(tls: Option<Arc<rustls::ServerConfig>>) -> (String, Arc<Mutex<Vec<Value>>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let options = ServeOptions {
        tls,
        ..ServeOptions::default()
    };
    tokio::spawn(steadfast_server::serve::serve(
        listener,
        app,
        options,
        std::future::pending(),
    ));
    (url, received)
}

/// Runs `n` jobs on `queue` to success or (non-retryable) death.
async fn finish(server: &TestServer, key: &str, queue: &str, n: usize, succeed: bool) {
    for _ in 0..n {
        server.enqueue(key, json!({"queue": queue, "payload": {}})).await;
        let leased = server.lease_one(key, queue, "w").await;
        let id = leased["id"].as_str().unwrap();
        if succeed {
            server
                .post(
                    &format!("/v1/jobs/{id}/complete"),
                    key,
                    json!({"lease_token": leased["lease_token"]}),
                )
                .await;
        } else {
            let body =
                json!({"lease_token": leased["lease_token"], "error": {"message": "declined"}, "retryable": false});
            server.post(&format!("/v1/jobs/{id}/fail"), key, body).await;
        }
    }
}

async fn slo(server: &TestServer, key: &str) -> Value {
    let list = server.get("/v1/slos", key).await.json();
    list["slos"][0].clone()
}

fn severities(slo: &Value) -> Vec<String> {
    slo["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["severity"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_burning_budget_pages_notifies_and_clears(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let (hook, received) = receiver().await;
    let created = server
        .post(
            "/v1/slos",
            &admin,
            json!({"name": "payments-success", "queue": "pay", "objective": 0.99, "notify_url": hook}),
        )
        .await;
    assert_eq!(created.status, reqwest::StatusCode::CREATED, "{}", created.text);

    // Half the jobs die: the budget burns 50 times too fast in every window.
    finish(&server, &admin, "pay", 10, true).await;
    finish(&server, &admin, "pay", 10, false).await;
    assert_eq!(server.engine.evaluate_slos().await.unwrap(), 1);
    let state = slo(&server, &admin).await;
    assert_eq!(severities(&state), ["page", "ticket"]);
    assert!(
        (state["burn_rates"]["5m"].as_f64().unwrap() - 50.0).abs() < 1e-6,
        "{state}"
    );
    assert!(state["budget_remaining"].as_f64().unwrap() < 0.0);
    let scrape = server.get("/metrics", &admin).await.text;
    assert!(
        scrape.contains(r#"steadfast_slo_alert{queue="pay",slo="payments-success",severity="page"} 1"#),
        "{scrape}"
    );

    assert_eq!(
        server
            .engine
            .deliver_notifications(&reqwest::Client::new())
            .await
            .unwrap(),
        1
    );
    let first = received.lock().unwrap()[0].clone();
    assert_eq!(first["raised"], json!(["page", "ticket"]));
    assert_eq!(first["slo"]["name"], "payments-success");

    // 31 minutes later only successes: the 5- and 30-minute windows are
    // clean, so the page clears; the 2-hour window still holds the failures,
    // so the ticket stays.
    server.advance(Duration::from_secs(31 * 60));
    finish(&server, &admin, "pay", 100, true).await;
    assert_eq!(server.engine.evaluate_slos().await.unwrap(), 1);
    assert_eq!(severities(&slo(&server, &admin).await), ["ticket"]);
    server
        .engine
        .deliver_notifications(&reqwest::Client::new())
        .await
        .unwrap();
    assert_eq!(received.lock().unwrap()[1]["cleared"], json!(["page"]));

    // Three days on, every alerting window is clean.
    server.advance(Duration::from_secs(3 * 86_400 + 60));
    finish(&server, &admin, "pay", 1, true).await;
    assert_eq!(server.engine.evaluate_slos().await.unwrap(), 1);
    assert!(severities(&slo(&server, &admin).await).is_empty());
    assert_eq!(
        server.engine.evaluate_slos().await.unwrap(),
        0,
        "no change, no new notification"
    );

    let trail = server.get("/v1/audit?action=slo.alert", &admin).await.json();
    assert_eq!(
        trail["records"].as_array().unwrap().len(),
        3,
        "each alert change is audited"
    );
}

/// One delivery pass delivers nothing, and the notification waits for its
/// retry with the failure recorded.
async fn delivery_fails_and_waits_for_a_retry(server: &TestServer, key: &str) {
    let delivered = server
        .engine
        .deliver_notifications(&reqwest::Client::new())
        .await
        .unwrap();
    assert_eq!(delivered, 0);
    let notifications = server.get("/v1/jobs?queue=steadfast.notifications", key).await.json();
    let job = &notifications["jobs"][0];
    assert!(job["state"] == "scheduled" || job["state"] == "queued", "{job}");
    assert_eq!(job["last_error"]["kind"], "notification");
}

async fn a_notification_that_fails_is_retried_not_lost(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let unreachable = format!("http://127.0.0.1:{}/hook", common::free_port());
    server
        .post(
            "/v1/slos",
            &admin,
            json!({"name": "s", "queue": "q", "objective": 0.9, "notify_url": unreachable}),
        )
        .await;
    finish(&server, &admin, "q", 5, false).await;
    server.engine.evaluate_slos().await.unwrap();
    delivery_fails_and_waits_for_a_retry(&server, &admin).await;
}

/// A notification URL served over TLS with a certificate from a private
/// CA is delivered to when, and only when, the server trusts that CA.
async fn an_https_receiver_is_reached_through_the_trusted_roots(backend: Backend) {
    let ca = TestCa::new("notifications test CA");
    let config = EngineConfig {
        outbound_roots: Some(TrustedRoots::from_pem(ca.pem.as_bytes()).unwrap()),
        ..EngineConfig::default()
    };
    let server = TestServer::start_with(backend, config).await;
    let admin = server.key("acme", Role::Admin).await;
    let dir = tempfile::tempdir().unwrap();
    let files = ca.issue(&["localhost"]).write(dir.path(), "receiver");
    let tls = steadfast_server::serve::tls_config(&files.cert, &files.key).unwrap();
    let (hook, received) = receiver_with(Some(tls)).await;
    let hook = hook.replace("http://127.0.0.1", "https://localhost");
    let slo = json!({"name": "s", "queue": "q", "objective": 0.9, "notify_url": hook});
    server.post("/v1/slos", &admin, slo).await;
    finish(&server, &admin, "q", 5, false).await;
    assert_eq!(server.engine.evaluate_slos().await.unwrap(), 1);

    // A client that trusts only the system's roots refuses the receiver.
    delivery_fails_and_waits_for_a_retry(&server, &admin).await;
    assert!(received.lock().unwrap().is_empty());

    server.advance(Duration::from_secs(3600));
    assert_eq!(server.engine.run_duties_once().await.unwrap().promoted, 1);
    let delivered = server
        .engine
        .deliver_notifications(&server.engine.outbound_http())
        .await
        .unwrap();
    let jobs = server.get("/v1/jobs?queue=steadfast.notifications", &admin).await.text;
    assert_eq!(delivered, 1, "{jobs}");
    assert_eq!(received.lock().unwrap()[0]["slo"]["name"], "s");
}

/// A receiver that reads each request and never answers, holding every
/// connection open; says each time a request arrives.
async fn silent_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use tokio::io::AsyncReadExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut connection, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 64 * 1024];
            let _ = connection.read(&mut request).await;
            let _ = arrived.send(());
            held.push(connection);
        }
    });
    (url, arrivals)
}

/// A server whose deliveries time out after `timeout`, and tenant acme's
/// admin key, with an SLO on queue `q` that notifies a silent receiver.
async fn silenced(
    backend: Backend,
    timeout: Duration,
) -> (TestServer, String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let config = EngineConfig {
        delivery: DeliveryLimits {
            timeout,
            ..DeliveryLimits::default()
        },
        ..EngineConfig::default()
    };
    let server = TestServer::start_with(backend, config).await;
    let acme = server.key("acme", Role::Admin).await;
    let (silent, arrivals) = silent_receiver().await;
    let slo = json!({"name": "s", "queue": "q", "objective": 0.9, "notify_url": silent});
    server.post("/v1/slos", &acme, slo).await;
    (server, acme, arrivals)
}

/// While one tenant's notification waits on a receiver that never
/// answers, another tenant's notification is delivered, its scheduled job
/// is promoted and its lapsed lease expires: the duties run apart, and one
/// delivery holds up none of them.
async fn a_receiver_that_never_answers_holds_up_no_other_duty(backend: Backend) {
    // Longer than the test: the delivery is in flight throughout.
    let (server, acme, mut arrivals) = silenced(backend, Duration::from_secs(600)).await;
    let globex = server.key("globex", Role::Admin).await;
    finish(&server, &acme, "q", 5, false).await;
    assert_eq!(server.engine.evaluate_slos().await.unwrap(), 1);

    let duties = tokio::spawn(server.engine.clone().run_duties());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    tokio::time::timeout_at(deadline, arrivals.recv())
        .await
        .expect("the notification reached the receiver in time")
        .expect("the receiver is running");

    // With that delivery hanging, another tenant's notification goes out.
    let (listening, received) = receiver().await;
    let slo = json!({"name": "s", "queue": "q", "objective": 0.9, "notify_url": listening});
    server.post("/v1/slos", &globex, slo).await;
    finish(&server, &globex, "q", 5, false).await;
    // (The SLO duty may have raised it already.)
    server.engine.evaluate_slos().await.unwrap();
    while received.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other tenant's notification waited on the hanging one"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // And its timers and leases.
    let later = common::t0().saturating_add(Duration::from_secs(60)).unwrap();
    let scheduled = server
        .enqueue(
            &globex,
            json!({"queue": "g", "payload": {}, "run_at": later.to_string()}),
        )
        .await;
    server.enqueue(&globex, json!({"queue": "h", "payload": {}})).await;
    let leased = server.lease_one(&globex, "h", "w").await;
    server.clock.advance(Duration::from_secs(120));
    let state = async |id: &Value| {
        let path = format!("/v1/jobs/{}", id.as_str().unwrap());
        server.get(&path, &globex).await.json()["state"].clone()
    };
    while state(&scheduled["id"]).await != "queued" || state(&leased["id"]).await == "running" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other tenant's timer or lease expiry waited on the delivery"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its lease outlasts its timeout, so the clock's jump did not lapse it:
    // still the first delivery in flight, no second one beside it.
    assert!(arrivals.try_recv().is_err(), "the hanging notification was sent again");
    // Draining would wait out the hanging delivery (600 s here).
    duties.abort();
}

/// A delivery attempt that outlasts its timeout fails like any attempt,
/// and goes back through the retry policy.
async fn a_delivery_that_outlasts_its_timeout_fails_and_is_retried(backend: Backend) {
    let (server, admin, _arrivals) = silenced(backend, Duration::from_millis(200)).await;
    finish(&server, &admin, "q", 5, false).await;
    server.engine.evaluate_slos().await.unwrap();
    delivery_fails_and_waits_for_a_retry(&server, &admin).await;
}

/// One pass delivers at most `per_tenant` of a tenant's notifications and
/// at most `concurrency` in all; the rest wait for a later pass.
async fn deliveries_are_bounded_per_tenant_and_in_all(backend: Backend) {
    let config = EngineConfig {
        delivery: DeliveryLimits {
            concurrency: 3,
            per_tenant: 2,
            ..DeliveryLimits::default()
        },
        ..EngineConfig::default()
    };
    let server = TestServer::start_with(backend, config).await;
    let mut received = Vec::new();
    for (tenant, slos) in [("acme", 3), ("globex", 2)] {
        let key = server.key(tenant, Role::Admin).await;
        let (url, kept) = receiver().await;
        for n in 0..slos {
            let slo = json!({"name": format!("s{n}"), "queue": "q", "objective": 0.9, "notify_url": url});
            server.post("/v1/slos", &key, slo).await;
        }
        finish(&server, &key, "q", 5, false).await;
        received.push(kept);
    }
    assert_eq!(server.engine.evaluate_slos().await.unwrap(), 5);
    let http = reqwest::Client::new();
    let counts = || received.iter().map(|r| r.lock().unwrap().len()).collect::<Vec<_>>();

    assert_eq!(server.engine.deliver_notifications(&http).await.unwrap(), 3);
    assert!(counts().iter().all(|&n| n <= 2), "{:?}", counts());
    assert_eq!(server.engine.deliver_notifications(&http).await.unwrap(), 2);
    assert_eq!(counts(), [3, 2]);
}

async fn slo_requests_are_validated_and_roles_enforced(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.key("acme", Role::Admin).await;
    let reader = server.key("acme", Role::Reader).await;
    for bad in [
        json!({"name": "s", "queue": "q", "objective": 1.0}),
        json!({"name": "s", "queue": "q", "objective": 0}),
        json!({"name": "has space", "queue": "q", "objective": 0.9}),
        json!({"name": "s", "queue": "q", "objective": 0.9, "window_days": 365}),
        json!({"name": "s", "queue": "q", "objective": 0.9, "notify_url": "ftp://x"}),
        json!({"name": "s", "queue": "q", "objective": 0.9, "latency_threshold_ms": 0}),
    ] {
        assert_eq!(
            server.post("/v1/slos", &admin, bad.clone()).await.code(),
            "validation_failed",
            "{bad}"
        );
    }
    let body = json!({"name": "s", "queue": "q", "objective": 0.9});
    assert_eq!(server.post("/v1/slos", &reader, body.clone()).await.code(), "forbidden");
    assert_eq!(
        server.post("/v1/slos", &admin, body.clone()).await.status,
        reqwest::StatusCode::CREATED
    );
    assert_eq!(
        server.post("/v1/slos", &admin, body).await.code(),
        "invalid_state",
        "names are unique"
    );
    assert_eq!(
        server.get("/v1/slos", &reader).await.json()["slos"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

on_both_backends!(
    a_burning_budget_pages_notifies_and_clears,
    a_receiver_that_never_answers_holds_up_no_other_duty,
    an_https_receiver_is_reached_through_the_trusted_roots,
    a_delivery_that_outlasts_its_timeout_fails_and_is_retried,
    deliveries_are_bounded_per_tenant_and_in_all,
    a_notification_that_fails_is_retried_not_lost,
    slo_requests_are_validated_and_roles_enforced,
);
