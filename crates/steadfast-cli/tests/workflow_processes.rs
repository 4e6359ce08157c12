//! Durable workflows against real processes: a Python worker (plain HTTP)
//! SIGKILLed between marking a step started and checkpointing it, and one
//! SIGSTOPped past its lease; plus the claims drill at a small size.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::ServerProcess;
use serde_json::{Value, json};

const WORKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workers/steadfast_worker.py");

struct Api {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// Polls (with a deadline) until a lease of `queue` returns a job.
    async fn lease_eventually(&self, queue: &str, worker: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = json!({"queues": [queue], "worker_id": worker, "wait_ms": 1000});
            let (_, leased) = self.call(reqwest::Method::POST, "/v1/lease", Some(body)).await;
            if let Some(job) = leased["jobs"].as_array().and_then(|jobs| jobs.first()) {
                return job.clone();
            }
            assert!(Instant::now() < deadline, "no job came back to the queue");
        }
    }
}

fn python_worker(server: &ServerProcess, queue: &str, scenario: &str) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new("python3")
        .args([WORKER, &server.url, &server.admin_key(), queue, scenario])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout)
}

fn read_line(stdout: &mut BufReader<ChildStdout>) -> Value {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|_| panic!("worker said {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_start_and_checkpoint_leaves_the_step_uncertain() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        &dir.path().join("data"),
        &["--lease-ttl-secs", "1", "--retry-base-ms", "10"],
    );
    let api = Api {
        http: reqwest::Client::new(),
        url: server.url.clone(),
        key: server.admin_key(),
    };
    let (_, job) = api
        .call(
            reqwest::Method::POST,
            "/v1/jobs",
            Some(json!({"queue": "payments", "payload": {}})),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();

    let (mut worker, mut stdout) = python_worker(&server, "payments", "crash-mid-step");
    assert_eq!(read_line(&mut stdout)["started"], "charge");
    worker.kill().unwrap();
    worker.wait().unwrap();

    let resumed = api.lease_eventually("payments", "rescuer").await;
    assert_eq!(resumed["id"], id.as_str());
    assert_eq!(resumed["attempt"], 2);
    assert_eq!(
        resumed["steps"],
        json!({"a": {"from": "attempt 1"}}),
        "the checkpointed step is memoized"
    );
    let uncertain = &resumed["uncertain_steps"]["charge"];
    assert_eq!(uncertain["attempt"], 1);
    assert_eq!(uncertain["worker_id"], "py-crash-mid-step");
    assert_eq!(uncertain["attempt_outcome"], "lease_expired");
    let (_, detail) = api.call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None).await;
    let charge = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "charge")
        .unwrap()
        .clone();
    assert_eq!(
        (charge["state"].clone(), charge["attempt"].clone()),
        (json!("uncertain"), json!(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_worker_paused_past_its_lease_is_refused_everything() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        &dir.path().join("data"),
        &["--lease-ttl-secs", "1", "--retry-base-ms", "10"],
    );
    let api = Api {
        http: reqwest::Client::new(),
        url: server.url.clone(),
        key: server.admin_key(),
    };
    let (_, job) = api
        .call(
            reqwest::Method::POST,
            "/v1/jobs",
            Some(json!({"queue": "zombies", "payload": {}})),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();

    let (mut zombie, mut stdout) = python_worker(&server, "zombies", "zombie");
    assert_eq!(read_line(&mut stdout)["leased"], true);
    let pid = zombie.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());

    // While it is frozen its lease lapses and another worker takes the job.
    let rescued = api.lease_eventually("zombies", "rescuer").await;
    assert_eq!(
        (rescued["id"].clone(), rescued["attempt"].clone()),
        (json!(id), json!(2))
    );

    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    zombie.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let refused = read_line(&mut stdout);
    for call in ["checkpoint", "heartbeat", "complete"] {
        assert_eq!(
            refused[call],
            json!([409, "lease_lost"]),
            "the zombie's {call} must be refused: {refused}"
        );
    }
    zombie.wait().unwrap();

    let token = rescued["lease_token"].clone();
    let path = format!("/v1/jobs/{id}/complete");
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            &path,
            Some(json!({"lease_token": token, "output": "rescuer"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, detail) = api.call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(detail["output"], "rescuer");
    assert!(
        detail["steps"].as_array().unwrap().iter().all(|s| s["name"] != "b"),
        "the zombie's checkpoint left no trace"
    );
}

#[test]
fn the_claims_drill_passes_at_a_small_size() {
    let ledgers = tempfile::tempdir().unwrap();
    let output = Command::new(common::BINARY)
        .args([
            "demo",
            "claims",
            "--claims",
            "80",
            "--workers",
            "2",
            "--kill-interval-ms",
            "150",
            "--ledger-dir",
        ])
        .arg(ledgers.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the drill failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verdict: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(verdict["claims"], 80);
    assert_eq!(verdict["finished"], 80);
    assert_eq!(
        (verdict["double_bills"].clone(), verdict["double_charges"].clone()),
        (json!(0), json!(0))
    );
    assert!(
        verdict["kills"].as_u64().unwrap() > 0,
        "workers were killed during the run"
    );
    // The ledgers are the downstreams' own books: recount one independently.
    let payments = std::fs::read_to_string(ledgers.path().join("payments.jsonl")).unwrap();
    let charged = payments
        .lines()
        .filter(|line| line.contains(r#""charged":true"#))
        .count();
    assert_eq!(charged, 80);
}
