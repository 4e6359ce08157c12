//! The `steadfast` binary end to end: first start, the data-dir lock,
//! administration while a server runs, the client commands, graceful shutdown.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{ServerProcess, steadfast};
use serde_json::Value;

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn first_start_prints_an_admin_key_and_saves_it_privately() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = ServerProcess::start(&data_dir);
    let key = server.admin_key();
    assert!(key.starts_with("sfk_"));
    let mode = std::fs::metadata(data_dir.join("admin.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(server.stderr().contains(&key), "the key is printed once on stderr");

    let list = steadfast(&["job", "list", "--url", &server.url, "--key", &key]);
    assert_eq!(stdout(&list), "", "a new server has no jobs");
}

#[test]
fn a_second_server_on_the_same_data_dir_exits_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let _first = ServerProcess::start(&data_dir);
    let second = steadfast(&[
        "serve",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!second.status.success());
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(message.contains("already running on the data dir"), "{message}");
}

#[test]
fn tenants_and_keys_are_managed_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().unwrap();
    let server = ServerProcess::start(&data_dir);

    assert_eq!(
        stdout(&steadfast(&["tenant", "create", "acme", "--data-dir", data])),
        "acme\n"
    );
    let duplicate = steadfast(&["tenant", "create", "acme", "--data-dir", data]);
    assert!(!duplicate.status.success());
    let key = stdout(&steadfast(&[
        "key",
        "create",
        "--tenant",
        "acme",
        "--role",
        "producer",
        "--data-dir",
        data,
    ]));
    assert_eq!(key.lines().count(), 1, "only the key on stdout");
    let key = key.trim();
    assert!(key.starts_with("sfk_"));

    let enqueued = steadfast(&[
        "enqueue",
        "--url",
        &server.url,
        "--key",
        key,
        "--queue",
        "emails",
        "--payload",
        r#"{"to":"a@example.com"}"#,
        "--idempotency-key",
        "k1",
    ]);
    let job: Value = serde_json::from_str(&stdout(&enqueued)).unwrap();
    assert_eq!(job["state"], "queued");
    let again = steadfast(&[
        "enqueue",
        "--url",
        &server.url,
        "--key",
        key,
        "--queue",
        "emails",
        "--payload",
        r#"{"to":"a@example.com"}"#,
        "--idempotency-key",
        "k1",
    ]);
    let replayed: Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(replayed["id"], job["id"]);

    let id = job["id"].as_str().unwrap();
    let fetched: Value = serde_json::from_str(&stdout(&steadfast(&[
        "job",
        "get",
        id,
        "--url",
        &server.url,
        "--key",
        key,
    ])))
    .unwrap();
    assert_eq!(fetched["attempts"], serde_json::json!([]));

    let admin = server.admin_key();
    let cancelled = steadfast(&["job", "cancel", id, "--url", &server.url, "--key", &admin]);
    let default_tenant_sees_nothing = String::from_utf8_lossy(&cancelled.stderr).contains("not_found");
    assert!(
        default_tenant_sees_nothing,
        "the default tenant's admin cannot touch acme's job"
    );
    let forbidden = steadfast(&["job", "cancel", id, "--url", &server.url, "--key", key]);
    assert!(String::from_utf8_lossy(&forbidden.stderr).contains("forbidden"));

    let key_id = key.split('_').nth(1).unwrap();
    let revoked = steadfast(&["key", "revoke", key_id, "--data-dir", data]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let refused = steadfast(&["job", "get", id, "--url", &server.url, "--key", key]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unauthorized"));
    let listed = stdout(&steadfast(&["key", "list", "--tenant", "acme", "--data-dir", data]));
    assert!(listed.contains(key_id) && listed.contains("revoked"), "{listed}");
    assert!(!listed.contains(&key[22..]), "listing never shows secrets");
}

#[test]
fn sigterm_shuts_down_gracefully_and_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = ServerProcess::start(&data_dir);
    let key = server.admin_key();
    let job: Value = serde_json::from_str(&stdout(&steadfast(&[
        "enqueue",
        "--url",
        &server.url,
        "--key",
        &key,
        "--queue",
        "q",
        "--payload",
        "{}",
    ])))
    .unwrap();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr());

    let restarted = ServerProcess::start(&data_dir);
    assert_eq!(restarted.admin_key(), key, "the bootstrap runs only once");
    let fetched = steadfast(&[
        "job",
        "get",
        job["id"].as_str().unwrap(),
        "--url",
        &restarted.url,
        "--key",
        &key,
    ]);
    assert!(fetched.status.success());
}

#[test]
fn admin_commands_refuse_a_data_dir_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    let output = steadfast(&["tenant", "create", "acme", "--data-dir", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no Steadfast database"));
    assert!(!missing.exists(), "a typo does not create a data dir");
}

#[test]
fn slos_are_defined_and_listed_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let key = server.admin_key();
    let created = steadfast(&[
        "slo",
        "create",
        "--name",
        "payments-success",
        "--queue",
        "payments",
        "--objective",
        "0.999",
        "--url",
        &server.url,
        "--key",
        &key,
    ]);
    let created: Value = serde_json::from_str(&stdout(&created)).unwrap();
    assert_eq!(
        (created["name"].clone(), created["window_days"].clone()),
        (serde_json::json!("payments-success"), serde_json::json!(28))
    );
    let listed: Value = serde_json::from_str(&stdout(&steadfast(&[
        "slo",
        "list",
        "--url",
        &server.url,
        "--key",
        &key,
    ])))
    .unwrap();
    assert_eq!(listed["slos"][0]["id"], created["id"]);
    assert_eq!(listed["slos"][0]["alerts"], serde_json::json!([]));
}

/// A tiny run of each benchmark keeps the bench code compiling and its JSON
/// contract intact (no timings are judged here).
#[test]
fn the_benchmarks_run_at_a_tiny_size_and_print_their_contract_fields() {
    let throughput: Value = serde_json::from_str(&stdout(&steadfast(&[
        "bench",
        "throughput",
        "--jobs",
        "50",
        "--workers",
        "2",
        "--batch-size",
        "20",
        "--json",
    ])))
    .unwrap();
    assert_eq!(throughput["jobs"], 50);
    for field in [
        "enqueue_jobs_per_sec",
        "enqueue_batched_jobs_per_sec",
        "drain_jobs_per_sec",
    ] {
        assert!(throughput[field].as_f64().unwrap() > 0.0, "{field}: {throughput}");
    }

    let latency: Value = serde_json::from_str(&stdout(&steadfast(&[
        "bench",
        "latency",
        "--rate",
        "40",
        "--seconds",
        "1",
        "--workers",
        "2",
        "--json",
    ])))
    .unwrap();
    assert_eq!(latency["jobs"], 40);
    let ms = |field: &str| latency[field].as_f64().unwrap();
    assert!(
        0.0 <= ms("p50_ms") && ms("p50_ms") <= ms("p99_ms") && ms("p99_ms") <= ms("max_ms"),
        "{latency}"
    );

    let steps: Value = serde_json::from_str(&stdout(&steadfast(&[
        "bench", "steps", "--jobs", "20", "--steps", "2", "--json",
    ])))
    .unwrap();
    assert_eq!(steps["steps_per_job"], 2);
    for field in ["drain_plain_jobs_per_sec", "drain_steps_jobs_per_sec", "steps_per_sec"] {
        assert!(steps[field].as_f64().unwrap() > 0.0, "{field}: {steps}");
    }

    let refused = steadfast(&["bench", "latency", "--rate", "0"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("must be positive"));
}
