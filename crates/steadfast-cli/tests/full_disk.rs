//! A full filesystem in the middle of an enqueue burst, on a real server
//! whose data dir is a size-capped tmpfs: writes answer `503
//! storage_full` with nothing half-done, reads keep working, the server
//! takes writes again by itself once space returns, no acknowledged job is
//! lost, and SQLite's `PRAGMA integrity_check` passes afterwards.
//!
//! The filesystem is a 6 MiB tmpfs that `scripts/test.sh` mounts (mounting
//! needs root) and names in `STEADFAST_TEST_SMALL_FS`; without it the test
//! fails and says so rather than passing without its subject.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ServerProcess;
use serde_json::{Value, json};

/// Taken up before the burst and given back to end it.
const BALLAST_BYTES: usize = 1024 * 1024;
const PRODUCERS: usize = 8;
/// No producer sends more than this many requests while filling.
const MAX_REQUESTS_PER_PRODUCER: usize = 5_000;
/// The burst must meet the full disk, not the key's rate limit.
const GENEROUS_RATE: [&str; 4] = ["--key-rate-limit", "1000000", "--key-rate-burst", "1000000"];

/// The small filesystem `scripts/test.sh` mounted, emptied for this run.
fn small_filesystem() -> PathBuf {
    let path = std::env::var_os("STEADFAST_TEST_SMALL_FS")
        .map(PathBuf::from)
        .expect("STEADFAST_TEST_SMALL_FS is not set: run the tests with scripts/test.sh, which mounts a 6 MiB tmpfs");
    assert!(path.is_dir(), "{} is not a directory", path.display());
    for entry in std::fs::read_dir(&path).unwrap() {
        let entry = entry.unwrap().path();
        if entry.is_dir() {
            std::fs::remove_dir_all(&entry).unwrap();
        } else {
            std::fs::remove_file(&entry).unwrap();
        }
    }
    path
}

/// `PRAGMA integrity_check` by Python's sqlite3, a reader independent of the server.
fn integrity_check(database: &Path) -> String {
    let output = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])",
        ])
        .arg(database)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

struct Burst {
    /// idempotency key → job id, for every 201.
    acknowledged: Mutex<Vec<(String, String)>>,
    /// Answers other than 201, by status and code.
    refused: Mutex<Vec<(u16, String)>>,
}

async fn enqueue(http: &reqwest::Client, url: &str, key: &str, idempotency_key: &str) -> (u16, Value) {
    let padding = "x".repeat(2000);
    let response = http
        .post(format!("{url}/v1/jobs"))
        .bearer_auth(key)
        .json(&json!({"queue": "fill", "payload": {"padding": padding}, "idempotency_key": idempotency_key}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Enqueues from several producers until the store answers `storage_full`.
async fn fill(http: &reqwest::Client, url: &str, key: &str, burst: Arc<Burst>) {
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|producer| {
            let (http, url, key, burst, full) = (
                http.clone(),
                url.to_owned(),
                key.to_owned(),
                burst.clone(),
                full.clone(),
            );
            tokio::spawn(async move {
                for n in 0..MAX_REQUESTS_PER_PRODUCER {
                    if full.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let idempotency_key = format!("p{producer}-{n}");
                    match enqueue(&http, &url, &key, &idempotency_key).await {
                        (201, body) => burst
                            .acknowledged
                            .lock()
                            .unwrap()
                            .push((idempotency_key, body["id"].as_str().unwrap().to_owned())),
                        (status, body) => {
                            let code = body["error"]["code"].as_str().unwrap_or_default().to_owned();
                            if code == "storage_full" {
                                full.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                            burst.refused.lock().unwrap().push((status, code));
                        }
                    }
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_mid_burst_loses_nothing_and_recovers_by_itself() {
    let filesystem = small_filesystem();
    let data_dir: PathBuf = filesystem.join("data");
    let server = ServerProcess::start_with(&data_dir, &GENEROUS_RATE);
    let key = server.admin_key();
    let ballast = filesystem.join("ballast");
    std::fs::write(&ballast, vec![0u8; BALLAST_BYTES]).unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let burst = Arc::new(Burst {
        acknowledged: Mutex::default(),
        refused: Mutex::default(),
    });
    fill(&http, &server.url, &key, burst.clone()).await;
    let acknowledged = burst.acknowledged.lock().unwrap().clone();
    let refused = burst.refused.lock().unwrap().clone();
    println!(
        "filled the small filesystem: {} enqueues acknowledged, {} refused",
        acknowledged.len(),
        refused.len()
    );
    assert!(
        !acknowledged.is_empty(),
        "some enqueues were acknowledged before the disk filled"
    );
    assert!(
        refused
            .iter()
            .any(|(status, code)| *status == 503 && code == "storage_full"),
        "the full disk was answered storage_full: {refused:?}"
    );
    assert!(
        refused
            .iter()
            .all(|(status, code)| *status == 503 && code == "storage_full"),
        "nothing but storage_full was refused: {refused:?}"
    );

    // Reads keep working while the disk is full.
    let (first_key, first_id) = &acknowledged[0];
    let read = http
        .get(format!("{}/v1/jobs/{first_id}", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 200, "a read while full");

    // Space returns: the same server takes writes again, no restart.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = enqueue(&http, &server.url, &key, "after-space-returned").await;
        if status == 201 {
            break;
        }
        assert_eq!(body["error"]["code"], "storage_full", "{body}");
        assert!(Instant::now() < deadline, "writes did not resume once space returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A replay of an acknowledged key answers the original job.
    let (status, body) = enqueue(&http, &server.url, &key, first_key).await;
    assert_eq!((status, body["id"].as_str()), (200, Some(first_id.as_str())));

    // Stopped hard, then checked from outside and served again.
    let mut server = server;
    server.kill_9();
    assert_eq!(integrity_check(&data_dir.join("steadfast.db")), "ok");
    let server = ServerProcess::start_with(&data_dir, &GENEROUS_RATE);
    let mut lost = Vec::new();
    for (_, id) in &acknowledged {
        let found = http
            .get(format!("{}/v1/jobs/{id}", server.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        if found.status().as_u16() != 200 {
            lost.push(id.clone());
        }
    }
    assert!(lost.is_empty(), "acknowledged jobs lost: {lost:?}");
}
