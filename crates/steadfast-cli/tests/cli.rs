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

#[test]
fn schedules_are_set_paused_resumed_and_deleted_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let key = server.admin_key();
    let run = |args: &[&str]| -> Value {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--url", &server.url, "--key", &key]);
        serde_json::from_str(&stdout(&steadfast(&all))).unwrap_or(Value::Null)
    };
    let set = run(&[
        "schedule",
        "set",
        "pulse",
        "--cron",
        "* * * * * *",
        "--timezone",
        "Europe/Berlin",
        "--queue",
        "pings",
        "--payload",
        r#"{"hello":1}"#,
        "--overlap",
        "allow",
    ]);
    let times: Vec<jiff::Timestamp> = set["next_fire_times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(times.len(), 5, "{set}");
    assert!(
        times
            .windows(2)
            .all(|w| w[1].duration_since(w[0]) == jiff::SignedDuration::from_secs(1))
    );
    // The server's own clock: poll until a tick fired.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while run(&["schedule", "get", "pulse"])["last_outcome"] != "fired" {
        assert!(std::time::Instant::now() < deadline, "no tick fired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(run(&["schedule", "pause", "pulse"])["paused"], true);
    assert_eq!(
        run(&["schedule", "list"])["schedules"][0]["next_fire_times"],
        serde_json::json!([])
    );
    assert_eq!(run(&["schedule", "resume", "pulse"])["paused"], false);
    let refused = steadfast(&[
        "schedule",
        "set",
        "bad",
        "--cron",
        "* * *",
        "--queue",
        "q",
        "--url",
        &server.url,
        "--key",
        &key,
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("validation_failed"));
    run(&["schedule", "delete", "pulse"]);
    assert!(
        !steadfast(&["schedule", "get", "pulse", "--url", &server.url, "--key", &key])
            .status
            .success()
    );
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

#[test]
fn bench_scale_runs_at_a_tiny_size_and_restarts_its_server() {
    let report: Value = serde_json::from_str(&stdout(&steadfast(&[
        "bench",
        "scale",
        "--levels",
        "100,300",
        "--jobs",
        "50",
        "--rate",
        "40",
        "--seconds",
        "1",
        "--json",
    ])))
    .unwrap();
    let levels = report["levels"].as_array().unwrap();
    assert_eq!(
        levels
            .iter()
            .map(|level| level["queued"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [100, 300]
    );
    for level in levels {
        assert!(level["drain_jobs_per_sec"].as_f64().unwrap() > 0.0, "{level}");
        assert!(level["server_peak_rss_mb"].as_f64().unwrap() > 0.0, "{level}");
        assert_eq!(level["latency"]["jobs"], 40);
    }
    assert_eq!(report["restart_queued"], 300);
    let ready = report["restart_to_ready_ms"].as_f64().unwrap();
    assert!(0.0 < ready && ready <= report["restart_to_first_lease_ms"].as_f64().unwrap());

    let refused = steadfast(&["bench", "scale", "--levels", "1000,10"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ascending"));
}

/// The adapter the peers' harness drives (bench/peer/peer.sh): what it
/// enqueues is run once each, and every run leaves one `i t_enq t_start t_end` line.
#[test]
fn the_peer_harness_adapter_records_every_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let key = server.admin_key();
    let records = dir.path().join("rec");
    std::fs::create_dir(&records).unwrap();
    let env = [("STEADFAST_URL", server.url.as_str()), ("STEADFAST_KEY", key.as_str())];
    let run = |args: &[&str]| {
        std::process::Command::new(common::BINARY)
            .args(["bench", "peer"])
            .args(args)
            .envs(env)
            .output()
            .unwrap()
    };
    let enqueued: Value = serde_json::from_str(&stdout(&run(&["enqueue", "30"]))).unwrap();
    assert_eq!(enqueued["n"], 30);
    assert!(enqueued["seconds"].as_f64().unwrap() > 0.0);
    stdout(&run(&["warm", "2"]));
    let produced: Value = serde_json::from_str(&stdout(&run(&["produce", "20", "1"]))).unwrap();
    assert_eq!(produced["n"], 20);

    let mut worker = std::process::Command::new(common::BINARY)
        .args(["bench", "peer", "worker"])
        .envs(env)
        .env("REC_DIR", &records)
        .spawn()
        .unwrap();
    let lines = || -> Vec<String> {
        std::fs::read_dir(&records)
            .unwrap()
            .flat_map(|file| {
                std::fs::read_to_string(file.unwrap().path())
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lines().len() < 52 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(worker.wait().unwrap().success(), "the worker stops cleanly on SIGTERM");

    let mut ids: Vec<i64> = Vec::new();
    for line in lines() {
        let fields: Vec<f64> = line.split(' ').map(|field| field.parse().unwrap()).collect();
        assert_eq!(fields.len(), 4, "{line}");
        let (t_enq, t_start, t_end) = (fields[1], fields[2], fields[3]);
        assert!(t_enq <= t_start && t_start <= t_end, "{line}");
        ids.push(fields[0] as i64);
    }
    ids.sort_unstable();
    let mut expected: Vec<i64> = (0..30).chain(0..20).chain([-2, -1]).collect();
    expected.sort_unstable();
    assert_eq!(
        ids, expected,
        "every job once: 0..30 (W1), 0..20 (W2), -1 and -2 (warm-up)"
    );
}

#[test]
fn serve_refuses_out_of_range_limits_before_it_opens_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    for (flag, value, complaint) in [
        (
            "--notify-per-tenant",
            "0",
            "--notify-per-tenant must be between 1 and --notify-concurrency",
        ),
        (
            "--notify-timeout-secs",
            "301",
            "--notify-timeout-secs must be between 1 and 300",
        ),
        (
            "--database-pool-size",
            "0",
            "--database-pool-size must be between 1 and 1000",
        ),
        (
            "--database-statement-timeout-ms",
            "5",
            "--database-statement-timeout-ms must be between 100 and 3600000",
        ),
    ] {
        let refused = steadfast(&["serve", "--data-dir", data_dir.to_str().unwrap(), flag, value]);
        assert_eq!(refused.status.code(), Some(78), "{flag} {value}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains(complaint),
            "{flag} {value}: {}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }
    assert!(!data_dir.exists(), "nothing was created");
}

/// The status of `GET /v1/jobs` with `key`, over a raw loopback connection.
fn status_with_key(url: &str, key: &str) -> u16 {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let request =
        format!("GET /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response[9..12].parse().unwrap()
}

/// Polls until `key` is refused, with a deadline; how long that took.
fn until_refused(url: &str, key: &str) -> Duration {
    let started = std::time::Instant::now();
    while status_with_key(url, key) != 401 {
        assert!(started.elapsed() < Duration::from_secs(15), "the key was never refused");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn keys_expire_and_rotate_with_a_grace_and_list_their_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let data = dir.path().to_str().unwrap();
    let create = |extra: &[&str]| {
        let mut args = vec![
            "key",
            "create",
            "--tenant",
            "default",
            "--role",
            "reader",
            "--data-dir",
            data,
        ];
        args.extend(extra);
        stdout(&steadfast(&args)).trim().to_owned()
    };
    let expiring = create(&["--expires-in", "2s", "--name", "short-lived"]);
    assert_eq!(status_with_key(&server.url, &expiring), 200);
    until_refused(&server.url, &expiring);

    let old = create(&["--name", "deployer"]);
    let old_id = old.trim_start_matches("sfk_").split('_').next().unwrap().to_owned();
    let rotated = steadfast(&["key", "rotate", &old_id, "--grace", "2s", "--data-dir", data]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let new = stdout(&rotated).trim().to_owned();
    assert!(new.starts_with("sfk_") && new != old);
    assert_eq!(status_with_key(&server.url, &new), 200);
    assert_eq!(
        status_with_key(&server.url, &old),
        200,
        "the old key works during the grace"
    );
    until_refused(&server.url, &old);
    assert_eq!(status_with_key(&server.url, &new), 200);
    let again = steadfast(&["key", "rotate", &old_id, "--data-dir", data]);
    assert!(!again.status.success(), "a revoked key cannot be rotated");

    let listing = stdout(&steadfast(&["key", "list", "--tenant", "default", "--data-dir", data]));
    let line = |name: &str| {
        listing
            .lines()
            .find(|line| line.ends_with(&format!("\t{name}")) && !line.contains("revoked"))
            .unwrap_or_else(|| panic!("no active {name} in {listing}"))
            .to_owned()
    };
    let fields: Vec<String> = line("deployer").split('\t').map(str::to_owned).collect();
    assert_eq!(fields[1], "reader", "{listing}");
    assert_ne!(fields[4], "never", "the new key's use is noted: {listing}");
    assert!(
        listing.contains("\tshort-lived") && listing.contains("expired"),
        "{listing}"
    );
    assert!(
        listing.starts_with("ID\tROLE\tCREATED\tEXPIRES\tLAST USED\tSTATE\tNAME"),
        "{listing}"
    );
}

/// The size of the embedded store's files (database and WAL).
fn store_bytes(data_dir: &std::path::Path) -> u64 {
    ["steadfast.db", "steadfast.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(data_dir.join(name)).ok())
        .map(|meta| meta.len())
        .sum()
}

/// A flood of requests with well-formed but unknown keys writes nothing
/// per request: the store does not grow (before, each cost an fsync'd
/// audit record: 14.6 MB for 20,000).
#[test]
fn a_flood_of_unknown_keys_does_not_grow_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        dir.path(),
        &[
            "--auth-failure-rate-limit",
            "1000000",
            "--auth-failure-burst",
            "1000000",
        ],
    );
    // Let the first start's writes settle into the files first.
    assert_eq!(status_with_key(&server.url, &server.admin_key()), 200);
    let before = store_bytes(dir.path());
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let url = server.url.clone();
            std::thread::spawn(move || {
                for n in 0..500 {
                    let unknown = format!("sfk_{:08x}{n:08x}_{}", thread, "b".repeat(64));
                    assert_eq!(status_with_key(&url, &unknown), 401);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let after = store_bytes(dir.path());
    assert!(
        after <= before + 64 * 1024,
        "the store grew by {} bytes for 2,000 failed authentications",
        after - before
    );
}

/// `tenant set-limits` reaches a running server within its refresh (5 s):
/// the tenant's cap on unfinished jobs, then `429 quota_exceeded`.
#[test]
fn a_tenants_own_cap_reaches_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--max-unfinished-jobs", "1000"]);
    let data = dir.path().to_str().unwrap();
    let set = steadfast(&[
        "tenant",
        "set-limits",
        "default",
        "--max-unfinished-jobs",
        "2",
        "--data-dir",
        data,
    ]);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let enqueue = || {
        steadfast(&[
            "enqueue",
            "--url",
            &server.url,
            "--key",
            &server.admin_key(),
            "--queue",
            "capped",
            "--payload",
            "{}",
        ])
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let output = enqueue();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("quota_exceeded"), "{stderr}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the cap never applied");
        std::thread::sleep(Duration::from_millis(200));
    }
    let listing = stdout(&steadfast(&[
        "job",
        "list",
        "--url",
        &server.url,
        "--key",
        &server.admin_key(),
    ]));
    assert!(listing.lines().count() >= 2, "two jobs were taken first: {listing}");
}
