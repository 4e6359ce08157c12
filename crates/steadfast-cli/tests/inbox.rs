//! The webhook inbox through the real binary: the `source` commands, and
//! kill -9 during a burst of signed deliveries.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ServerProcess, all_pages, steadfast};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "whsec_cli_test_0123456789abcdef";

fn stdout(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stripe_signature(body: &[u8]) -> String {
    common::stripe_signature(SECRET, body)
}

fn source_cli(server: &ServerProcess, key: &str, args: &[&str]) -> String {
    let mut all = vec!["source"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--url", &server.url, "--key", key]);
    stdout(&steadfast(&all))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_created_listed_rotated_and_replayed_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let key = server.admin_key();
    let created: Value = serde_json::from_str(&source_cli(
        &server,
        &key,
        &["create", "--name", "gh", "--kind", "github", "--queue", "ci"],
    ))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let first_secret = created["secret"].as_str().expect("Steadfast made one").to_owned();
    assert_eq!(created["ingest_path"], format!("/hooks/{id}"));

    let refused = steadfast(&[
        "source",
        "create",
        "--name",
        "s",
        "--kind",
        "stripe",
        "--queue",
        "q",
        "--url",
        &server.url,
        "--key",
        &key,
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("secret"),
        "says what is missing"
    );

    let listed: Value = serde_json::from_str(&source_cli(&server, &key, &["list"])).unwrap();
    assert_eq!(listed["sources"][0]["id"], id.as_str());
    assert!(listed["sources"][0].get("secret").is_none(), "never shown again");

    let rotated: Value = serde_json::from_str(&source_cli(&server, &key, &["rotate", &id, "--grace", "1h"])).unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, first_secret);
    let secrets = rotated["source"]["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 2);
    assert!(
        secrets[0]["expires_at"].is_string(),
        "the old secret retires: {rotated}"
    );
    assert!(secrets[1].get("expires_at").is_none());

    // A delivery signed with the new secret, then replayed from the CLI.
    let body = br#"{"zen":"Keep it logically awesome."}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(new_secret.as_bytes()).unwrap();
    mac.update(body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let delivered = reqwest::Client::new()
        .post(format!("{}/hooks/{id}", server.url))
        .header("x-hub-signature-256", signature)
        .header("x-github-delivery", "d-1")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), 200);
    let events = source_cli(&server, &key, &["events", &id]);
    let event: Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
    assert_eq!(event["event_id"], "d-1");
    let replayed: Value = serde_json::from_str(&source_cli(&server, &key, &["replay", &id, "d-1"])).unwrap();
    assert_ne!(replayed["job_id"], event["job_id"]);
}

const ROUNDS: usize = 3;
const PRODUCERS: usize = 16;
const KILL_AFTER_ACKS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_delivery_survives_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = ServerProcess::start(&data_dir);
    let key = server.admin_key();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let created: Value = http
        .post(format!("{}/v1/sources", server.url))
        .bearer_auth(&key)
        .json(&json!({"name": "stripe", "kind": "stripe", "queue": "payments", "secret": SECRET}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = server.url.clone();
    let hook = format!("{url}{}", created["ingest_path"].as_str().unwrap());
    let source_id = created["id"].as_str().unwrap().to_owned();

    // event id -> job id, for every 2xx, over every round. Each producer
    // sends its events twice in a row, so duplicates race the kill too.
    let acknowledged: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    for round in 0..ROUNDS {
        if round > 0 {
            server = ServerProcess::start(&data_dir);
        }
        let acks_before = acknowledged.lock().unwrap().len();
        let mut producers = Vec::new();
        for producer in 0..PRODUCERS {
            let (http, hook, acknowledged) = (http.clone(), hook.replace(&url, &server.url), acknowledged.clone());
            producers.push(tokio::spawn(async move {
                for n in 0..100_000 {
                    let event_id = format!("evt_r{round}_p{producer}_{n}");
                    let body = format!(r#"{{"id":"{event_id}","type":"charge.succeeded"}}"#);
                    for _ in 0..2 {
                        let sent = http
                            .post(&hook)
                            .header("stripe-signature", stripe_signature(body.as_bytes()))
                            .body(body.clone())
                            .send()
                            .await;
                        let Ok(response) = sent else { return };
                        let status = response.status();
                        assert!(status.is_success() || status.is_server_error(), "{status}");
                        let Ok(answer) = response.json::<Value>().await else {
                            return;
                        };
                        if let Some(job_id) = answer["job_id"].as_str() {
                            let mut acknowledged = acknowledged.lock().unwrap();
                            let first = acknowledged
                                .entry(event_id.clone())
                                .or_insert_with(|| job_id.to_owned());
                            assert_eq!(first, job_id, "a duplicate names the first delivery's job");
                        }
                    }
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while acknowledged.lock().unwrap().len() < acks_before + KILL_AFTER_ACKS {
            assert!(Instant::now() < deadline, "the burst made no progress");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        server.kill_9();
        for producer in producers {
            producer.await.unwrap();
        }
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let server = ServerProcess::start(&data_dir);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let events_path = format!("/v1/sources/{source_id}/events");
    for event in all_pages(&http, &server.url, &key, &events_path, "events").await {
        *seen.entry(event["event_id"].as_str().unwrap().to_owned()).or_default() += 1;
        let job: Value = http
            .get(format!("{}/v1/jobs/{}", server.url, event["job_id"].as_str().unwrap()))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            job["payload"]["event_id"], event["event_id"],
            "each event's job is there"
        );
    }
    // Every job in the queue is one stored event's, and every event has one.
    let mut job_ids = HashSet::new();
    for job in all_pages(&http, &server.url, &key, "/v1/jobs?queue=payments", "jobs").await {
        assert!(
            job_ids.insert(job["id"].as_str().unwrap().to_owned()),
            "a job listed twice"
        );
    }
    assert_eq!(job_ids.len(), seen.len(), "one job per stored event, no orphan");
    let lost: Vec<&String> = acknowledged.keys().filter(|id| !seen.contains_key(*id)).collect();
    let doubled: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "acknowledged {}, stored {}, lost {}, doubled {}",
        acknowledged.len(),
        seen.len(),
        lost.len(),
        doubled.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(doubled.is_empty(), "stored twice: {doubled:?}");

    // The dedup keys survived too: every acknowledged event is a duplicate now.
    let some: HashSet<&String> = acknowledged.keys().take(50).collect();
    for event_id in some {
        let body = format!(r#"{{"id":"{event_id}","type":"charge.succeeded"}}"#);
        let again: Value = http
            .post(format!("{}{}", server.url, created["ingest_path"].as_str().unwrap()))
            .header("stripe-signature", stripe_signature(body.as_bytes()))
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(again["duplicate"], true, "{event_id}");
        assert_eq!(again["job_id"].as_str(), acknowledged.get(event_id).map(String::as_str));
    }
}
