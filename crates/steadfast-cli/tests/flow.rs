//! Flow control through the real binary: the `queue` and `resource`
//! commands, enqueue's flow flags, and `steadfast demo storm`.

mod common;

use common::{ServerProcess, steadfast};
use serde_json::{Value, json};

fn run(server: &ServerProcess, key: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--url", &server.url, "--key", key]);
    let output = steadfast(&all);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn refused(server: &ServerProcess, key: &str, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--url", &server.url, "--key", key]);
    let output = steadfast(&all);
    assert!(!output.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn queues_are_paused_resumed_and_given_rules_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let key = server.admin_key();
    let policy = run(
        &server,
        &key,
        &[
            "queue",
            "policy",
            "sync",
            "--concurrency",
            "8",
            "--key-concurrency",
            "2",
            "--rate",
            "100/1s:150",
        ],
    );
    assert_eq!(policy["concurrency"], 8);
    assert_eq!(policy["rate"], json!({"limit": 100, "period_ms": 1000, "burst": 150}));
    let policy = run(
        &server,
        &key,
        &[
            "queue",
            "policy",
            "sync",
            "--fairness",
            "flow_key",
            "--weight",
            "big=3",
            "--retry-budget",
            "0.2:5",
            "--clear",
            "concurrency",
        ],
    );
    assert_eq!(policy["concurrency"], Value::Null);
    assert_eq!(policy["key_concurrency"], 2, "rules not named stay");
    assert_eq!(policy["weights"], json!({"big": 3}));
    assert_eq!(policy["retry_budget"], json!({"ratio": 0.2, "min_per_sec": 5.0}));
    assert_eq!(
        run(&server, &key, &["queue", "policy", "sync"]),
        policy,
        "no flag: show it"
    );
    assert!(refused(&server, &key, &["queue", "policy", "sync", "--rate", "fast"]).contains("LIMIT/PERIOD"));
    assert!(refused(&server, &key, &["queue", "policy", "sync", "--concurrency", "0"]).contains("concurrency"));

    assert_eq!(run(&server, &key, &["queue", "pause", "sync"])["paused"], true);
    for flow_key in ["a", "a", "b"] {
        run(
            &server,
            &key,
            &["enqueue", "--queue", "sync", "--payload", "{}", "--flow-key", flow_key],
        );
    }
    let listed = run(&server, &key, &["queue", "list"]);
    assert_eq!(listed["queues"][0]["held"]["paused"], 3, "{listed}");
    assert_eq!(run(&server, &key, &["queue", "resume", "sync"])["paused"], false);
    let listed = run(&server, &key, &["queue", "list"]);
    assert_eq!(listed["queues"][0]["held"]["paused"], 0);

    let first = run(
        &server,
        &key,
        &[
            "enqueue",
            "--queue",
            "digest",
            "--payload",
            r#"{"n":1}"#,
            "--singleton-key",
            "u1",
            "--debounce-ms",
            "60000",
        ],
    );
    let second = run(
        &server,
        &key,
        &[
            "enqueue",
            "--queue",
            "digest",
            "--payload",
            r#"{"n":2}"#,
            "--singleton-key",
            "u1",
            "--debounce-ms",
            "60000",
        ],
    );
    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        (first["state"].as_str(), second["payload"].clone()),
        (Some("scheduled"), json!({"n": 2}))
    );
}

#[test]
fn resources_are_set_read_listed_and_deleted_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let key = server.admin_key();
    let set = run(
        &server,
        &key,
        &[
            "resource",
            "set",
            "stripe",
            "--breaker",
            "0.5,20,60,30,2",
            "--concurrency",
            "10",
            "--rate",
            "50/1s",
        ],
    );
    assert_eq!(set["state"], "closed");
    assert_eq!(set["breaker"]["half_open_probes"], 2);
    assert_eq!(run(&server, &key, &["resource", "get", "stripe"])["concurrency"], 10);
    assert_eq!(
        run(&server, &key, &["resource", "list"])["resources"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(refused(&server, &key, &["resource", "set", "stripe", "--breaker", "0.5,20"]).contains("FAILURE_RATIO"));
    run(&server, &key, &["resource", "delete", "stripe"]);
    assert!(refused(&server, &key, &["resource", "get", "stripe"]).contains("not_found"));
}

/// The storm drill, small: the downstream's own count of calls must show
/// the breaker and the budget sparing it, and no job may be lost.
#[test]
fn the_storm_drill_spares_the_downstream_and_loses_nothing() {
    let output = steadfast(&["demo", "storm", "--jobs", "150", "--outage-secs", "3"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("without:"), "a readable summary first: {stdout}");
    let verdict: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(verdict["jobs"], 150);
    assert_eq!(verdict["lost"], 0);
    let with = verdict["downstream_calls_with"].as_u64().unwrap();
    let without = verdict["downstream_calls_without"].as_u64().unwrap();
    assert!(with >= 150, "every job called the downstream at least once: {verdict}");
    assert!(
        with * 2 < without,
        "the breaker and the budget spared the downstream: {verdict}"
    );
    assert!(verdict["drain_secs_with"].as_f64().unwrap() > 0.0);
}
