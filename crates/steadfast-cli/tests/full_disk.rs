//! A full filesystem in the middle of an enqueue burst, on a real server
//! whose data dir is a size-capped tmpfs: writes answer `503
//! storage_full` with nothing half-done, reads keep working, the server
//! takes writes again by itself once space returns, no acknowledged job is
//! lost, and SQLite's `PRAGMA integrity_check` passes afterwards.
//!
//! Mounting needs root, which the test machines have; without it the test
//! fails and says so rather than passing without its subject.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ServerProcess;
use serde_json::{Value, json};

/// The filesystem: small enough to fill in a few seconds.
const SIZE: &str = "6m";
/// Taken up before the burst and given back to end it.
const BALLAST_BYTES: usize = 1024 * 1024;
const PRODUCERS: usize = 8;
/// No producer sends more than this many requests while filling.
const MAX_REQUESTS_PER_PRODUCER: usize = 5_000;

/// A tmpfs mounted for the test's lifetime.
struct SmallFilesystem {
    dir: tempfile::TempDir,
}

impl SmallFilesystem {
    fn mount() -> SmallFilesystem {
        let dir = tempfile::Builder::new().prefix("steadfast-full-").tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={SIZE}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot mount a {SIZE} tmpfs at {} (the full-disk test needs root)",
            dir.path().display()
        );
        SmallFilesystem { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
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
    let filesystem = SmallFilesystem::mount();
    let data_dir: PathBuf = filesystem.path().join("data");
    let server = ServerProcess::start(&data_dir);
    let key = server.admin_key();
    let ballast = filesystem.path().join("ballast");
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
        "filled the {SIZE} filesystem: {} enqueues acknowledged, {} refused",
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
    let server = ServerProcess::start(&data_dir);
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
