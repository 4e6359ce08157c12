//! `steadfast audit verify` against a real data dir tampered with by hand
//! (Python's sqlite3, triggers dropped), with a signed checkpoint from the API.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{ServerProcess, steadfast};

/// Records live in `audit_batches`, a JSON array per command (one record
/// each here: every enqueue is its own request). `unhex` is registered for
/// SQLite builds older than 3.41.
const TAMPER: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.create_function("unhex", 1, bytes.fromhex)
for table in ("audit_records", "audit_batches"):
    db.executescript(f"DROP TRIGGER IF EXISTS {table}_append_only_update; DROP TRIGGER IF EXISTS {table}_append_only_delete;")
db.executescript(sys.argv[2])
db.commit()
"#;

fn tamper(data_dir: &std::path::Path, sql: &str) {
    let status = Command::new("python3")
        .args(["-c", TAMPER, data_dir.join("steadfast.db").to_str().unwrap(), sql])
        .status()
        .unwrap();
    assert!(status.success());
}

fn verify(data_dir: &std::path::Path, checkpoint: Option<&std::path::Path>) -> (bool, String) {
    let mut args = vec!["audit", "verify", "--data-dir", data_dir.to_str().unwrap()];
    if let Some(checkpoint) = checkpoint {
        args.extend(["--checkpoint", checkpoint.to_str().unwrap()]);
    }
    let output = steadfast(&args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_each_kind_of_tampering_and_a_checkpoint_catches_a_truncated_tail() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = ServerProcess::start(&data_dir);
    let key = server.admin_key();
    let http = reqwest::Client::new();
    for i in 0..8 {
        let response = http
            .post(format!("{}/v1/jobs", server.url))
            .bearer_auth(&key)
            .json(&serde_json::json!({"queue": "q", "payload": {"i": i}}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    let checkpoint = http
        .get(format!("{}/v1/audit/head", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let checkpoint_file = dir.path().join("checkpoint.json");
    std::fs::write(&checkpoint_file, checkpoint.text().await.unwrap()).unwrap();
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(30));

    let (ok, report) = verify(&data_dir, Some(&checkpoint_file));
    assert!(ok, "{report}");
    assert!(
        report.contains("intact") && report.contains("checkpoint confirmed"),
        "{report}"
    );

    // Fold the WAL into the database file, so one file is the whole state.
    tamper(&data_dir, "PRAGMA wal_checkpoint(TRUNCATE);");
    let pristine = dir.path().join("pristine.db");
    std::fs::copy(data_dir.join("steadfast.db"), &pristine).unwrap();
    let restore = || {
        std::fs::copy(&pristine, data_dir.join("steadfast.db")).unwrap();
        let _ = std::fs::remove_file(data_dir.join("steadfast.db-wal"));
        let _ = std::fs::remove_file(data_dir.join("steadfast.db-shm"));
    };
    let cases = [
        (
            "UPDATE audit_batches SET records = json_set(records, '$[0].summary', '{\"forged\":1}') WHERE first_seq = 5",
            "record 5 was edited",
        ),
        ("DELETE FROM audit_batches WHERE first_seq = 5", "record 5 is missing"),
        (
            "UPDATE audit_batches SET first_seq = -1, last_seq = -1, records = json_set(records, '$[0].seq', -1) \
               WHERE first_seq = 4; \
             UPDATE audit_batches SET first_seq = 4, last_seq = 4, records = json_set(records, '$[0].seq', 4) \
               WHERE first_seq = 5; \
             UPDATE audit_batches SET first_seq = 5, last_seq = 5, records = json_set(records, '$[0].seq', 5) \
               WHERE first_seq = -1;",
            "record 4 is out of place",
        ),
    ];
    for (sql, expected) in cases {
        restore();
        tamper(&data_dir, sql);
        let (ok, report) = verify(&data_dir, None);
        assert!(!ok, "{sql}: verify must fail");
        assert!(report.contains(expected), "{sql}: {report}");
    }
    restore();
    tamper(
        &data_dir,
        "DELETE FROM audit_batches WHERE first_seq > 6; \
         UPDATE audit_heads SET seq = 6, hash = (SELECT unhex(json_extract(b.records, '$[0].hash')) FROM audit_batches b \
           WHERE b.tenant_id = audit_heads.tenant_id AND b.first_seq = 6) \
         WHERE tenant_id IN (SELECT tenant_id FROM audit_batches WHERE first_seq = 6);",
    );
    let (ok, report) = verify(&data_dir, None);
    assert!(ok, "without a checkpoint a careful truncation is invisible: {report}");
    let (ok, report) = verify(&data_dir, Some(&checkpoint_file));
    assert!(!ok && report.contains("truncated"), "{report}");
}

/// Runs `serve` on `data_dir`, expecting it to refuse to start.
fn refused_start(data_dir: &std::path::Path) -> std::process::Output {
    Command::new(common::BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// The embedded store registers the key its first start created; a later
/// start with another key (a lost or swapped key file) is refused until the
/// operator rotates on purpose.
#[test]
fn an_embedded_store_refuses_a_swapped_signing_key_until_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = ServerProcess::start(&data_dir);
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(30));
    let key_file = data_dir.join("audit-signing.key");
    let original = std::fs::read_to_string(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();

    let output = refused_start(&data_dir);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is missing") && stderr.contains("rotate-key"),
        "{stderr}"
    );
    assert!(!key_file.exists(), "no stray key was made");

    // Another key in its place is refused too.
    let other = steadfast(&["audit", "create-key", key_file.to_str().unwrap()]);
    assert!(other.status.success());
    let output = refused_start(&data_dir);
    assert_eq!(output.status.code(), Some(78));
    assert_ne!(std::fs::read_to_string(&key_file).unwrap(), original);

    let rotated = steadfast(&[
        "audit",
        "rotate-key",
        "--new-key-file",
        key_file.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let _server = ServerProcess::start(&data_dir);
}
