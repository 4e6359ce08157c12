//! The providers' own signing libraries against the real binary: Stripe's
//! Node library, Octokit's, Standard Webhooks' Python library and Slack's
//! SDK sign each delivery (`tests/providers/`); nothing here computes a
//! signature. `scripts/test.sh` installs them and sets
//! `STEADFAST_TEST_PROVIDER_PYTHON`; run by hand:
//!
//! ```sh
//! (cd tests/providers && npm ci) && python3 -m venv /tmp/pv && /tmp/pv/bin/pip install -r tests/providers/requirements.txt
//! STEADFAST_TEST_PROVIDER_PYTHON=/tmp/pv/bin/python cargo nextest run -p steadfast-cli --test providers
//! ```

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::ServerProcess;
use serde_json::{Value, json};

fn providers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/providers")
}

/// Runs a signer and parses the headers it prints.
fn headers_from(mut command: Command) -> Vec<(String, String)> {
    let output = command.current_dir(providers_dir()).output().expect("the signer runs");
    assert!(
        output.status.success(),
        "the signer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let headers: serde_json::Map<String, Value> = serde_json::from_slice(&output.stdout).unwrap();
    headers
        .into_iter()
        .map(|(name, value)| (name, value.as_str().unwrap().to_owned()))
        .collect()
}

/// Writes `body` to a new file: the signers read the exact bytes sent.
fn body_file(dir: &Path, body: &str) -> PathBuf {
    static WRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = WRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("body-{n}.json"));
    std::fs::write(&path, body).unwrap();
    path
}

fn node(args: &[&str]) -> Vec<(String, String)> {
    assert!(
        providers_dir().join("node_modules/stripe").exists(),
        "install the Node signers first: (cd tests/providers && npm ci)"
    );
    let mut command = Command::new("node");
    command.arg("sign.mjs").args(args);
    headers_from(command)
}

fn python(args: &[&str]) -> Vec<(String, String)> {
    let interpreter = std::env::var("STEADFAST_TEST_PROVIDER_PYTHON").expect(
        "STEADFAST_TEST_PROVIDER_PYTHON must name a Python with tests/providers/requirements.txt installed \
         (scripts/test.sh sets it)",
    );
    let mut command = Command::new(interpreter);
    command.arg("sign.py").args(args);
    headers_from(command)
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

struct Inbox {
    server: ServerProcess,
    key: String,
    http: reqwest::Client,
    scratch: tempfile::TempDir,
}

impl Inbox {
    fn start() -> Inbox {
        let scratch = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(&scratch.path().join("data"));
        let key = server.admin_key();
        Inbox {
            server,
            key,
            http: reqwest::Client::new(),
            scratch,
        }
    }

    async fn create(&self, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/v1/sources", self.server.url))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.server.url))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// Delivers `body` with `headers`: the status and the answer.
    async fn deliver(&self, source: &Value, headers: &[(String, String)], body: &str) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!(
                "{}{}",
                self.server.url,
                source["ingest_path"].as_str().unwrap()
            ))
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn job_count(&self) -> usize {
        self.call(reqwest::Method::GET, "/v1/jobs?limit=500", None).await["jobs"]
            .as_array()
            .unwrap()
            .len()
    }

    fn file(&self, body: &str) -> String {
        body_file(self.scratch.path(), body).to_str().unwrap().to_owned()
    }
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_deliveries_signed_by_stripes_library() {
    let inbox = Inbox::start();
    let secret = "whsec_3a1f9c2e7b8d4f60a5e1c3b9d7f2a4e6";
    let source = inbox
        .create(json!({"name": "stripe", "kind": "stripe", "queue": "payments", "secret": secret}))
        .await;
    let body = r#"{
  "id": "evt_1PqXyZ2eZvKYlo2C",
  "object": "event",
  "type": "payment_intent.succeeded"
}"#;
    let file = inbox.file(body);
    let signed = |t: i64| node(&["stripe", secret, &t.to_string(), &file]);

    let (status, first) = inbox.deliver(&source, &signed(now()), body).await;
    assert_eq!((status, first["duplicate"].as_bool()), (200, Some(false)), "{first}");
    assert_eq!(first["event_id"], "evt_1PqXyZ2eZvKYlo2C");

    // Stripe's retry: signed again, later.
    let (_, retry) = inbox.deliver(&source, &signed(now() + 5), body).await;
    assert_eq!(
        (retry["duplicate"].as_bool(), &retry["job_id"]),
        (Some(true), &first["job_id"])
    );

    // 100 concurrent deliveries of a new event: one job.
    let other = r#"{"id": "evt_concurrent", "type": "charge.refunded"}"#;
    let headers = node(&["stripe", secret, &now().to_string(), &inbox.file(other)]);
    let inbox = Arc::new(inbox);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (inbox, source, headers) = (inbox.clone(), source.clone(), headers.clone());
            tokio::spawn(async move { inbox.deliver(&source, &headers, other).await })
        })
        .collect();
    let mut jobs = HashSet::new();
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        jobs.insert(answer["job_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(jobs.len(), 1);
    assert_eq!(inbox.job_count().await, 2);

    // Re-serialised (whitespace changed), stale and future: refused.
    let compact = serde_json::to_string(&serde_json::from_str::<Value>(body).unwrap()).unwrap();
    let (status, answer) = inbox.deliver(&source, &signed(now()), &compact).await;
    assert_eq!((status, code(&answer)), (401, "signature_invalid"));
    for skew in [-600, 600] {
        let (status, answer) = inbox.deliver(&source, &signed(now() + skew), body).await;
        assert_eq!(
            (status, code(&answer)),
            (401, "timestamp_out_of_tolerance"),
            "skew {skew}"
        );
    }
    let (status, answer) = inbox
        .deliver(
            &source,
            &node(&["stripe", "whsec_someone_elses", &now().to_string(), &file]),
            body,
        )
        .await;
    assert_eq!((status, code(&answer)), (401, "signature_invalid"));

    // Rotation: Stripe makes the new secret; both pass until the old one is retired.
    let id = source["id"].as_str().unwrap();
    let new_secret = "whsec_9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";
    let rotate = |retire: u64, secret: &str| json!({"secret": secret, "retire_others_after_secs": retire});
    inbox
        .call(
            reqwest::Method::POST,
            &format!("/v1/sources/{id}/secrets"),
            Some(rotate(3600, new_secret)),
        )
        .await;
    for (n, secret) in [(1, secret), (2, new_secret)] {
        let body = format!(r#"{{"id": "evt_rotation_{n}"}}"#);
        let headers = node(&["stripe", secret, &now().to_string(), &inbox.file(&body)]);
        let (status, answer) = inbox.deliver(&source, &headers, &body).await;
        assert_eq!(status, 200, "secret {n} during the rotation: {answer}");
    }
    let newest = "whsec_0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    inbox
        .call(
            reqwest::Method::POST,
            &format!("/v1/sources/{id}/secrets"),
            Some(rotate(0, newest)),
        )
        .await;
    let body = r#"{"id": "evt_after_rotation"}"#;
    let (status, answer) = inbox
        .deliver(
            &source,
            &node(&["stripe", secret, &now().to_string(), &inbox.file(body)]),
            body,
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (401, "signature_invalid"),
        "the retired secret fails"
    );
    let (status, _) = inbox
        .deliver(
            &source,
            &node(&["stripe", newest, &now().to_string(), &inbox.file(body)]),
            body,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_deliveries_signed_by_octokit() {
    let inbox = Inbox::start();
    let source = inbox
        .create(json!({"name": "gh", "kind": "github", "queue": "ci"}))
        .await;
    let secret = source["secret"].as_str().unwrap();
    let body = r#"{"action":"opened","number":1347,"repository":{"full_name":"octo/hello"}}"#;
    let mut headers = node(&["github", secret, &inbox.file(body)]);
    headers.push((
        "x-github-delivery".into(),
        "0b989ba4-242f-11e5-81e1-c7b6966d2516".into(),
    ));
    headers.push(("x-github-event".into(), "pull_request".into()));
    let (status, first) = inbox.deliver(&source, &headers, body).await;
    assert_eq!((status, first["duplicate"].as_bool()), (200, Some(false)), "{first}");

    // A redelivery, and a replay of the captured body under a new delivery id.
    let (_, again) = inbox.deliver(&source, &headers, body).await;
    assert_eq!(again["duplicate"], true);
    headers.retain(|(name, _)| name != "x-github-delivery");
    headers.push((
        "x-github-delivery".into(),
        "ffffffff-242f-11e5-81e1-c7b6966d2516".into(),
    ));
    let (_, replayed) = inbox.deliver(&source, &headers, body).await;
    assert_eq!(
        (replayed["duplicate"].as_bool(), &replayed["job_id"]),
        (Some(true), &first["job_id"])
    );

    let reserialized = body.replace(',', ", ");
    let (status, answer) = inbox.deliver(&source, &headers, &reserialized).await;
    assert_eq!((status, code(&answer)), (401, "signature_invalid"));
    assert_eq!(inbox.job_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_signed_by_its_python_library() {
    let inbox = Inbox::start();
    let source = inbox
        .create(json!({"name": "std", "kind": "standard", "queue": "events"}))
        .await;
    let secret = source["secret"].as_str().unwrap().to_owned();
    let body = r#"{"type":"user.created","data":{"id":"u_1"}}"#;
    let file = inbox.file(body);
    let signed = |secret: &str, id: &str, t: i64| python(&["standard", secret, id, &t.to_string(), &file]);

    let (status, first) = inbox.deliver(&source, &signed(&secret, "msg_2a", now()), body).await;
    assert_eq!((status, first["event_id"].as_str()), (200, Some("msg_2a")), "{first}");
    let (_, again) = inbox
        .deliver(&source, &signed(&secret, "msg_2a", now() + 2), body)
        .await;
    assert_eq!(again["duplicate"], true);
    let (_, other) = inbox.deliver(&source, &signed(&secret, "msg_2b", now()), body).await;
    assert_eq!(other["duplicate"], false, "a new message id is a new event");

    for skew in [-400, 400] {
        let (status, answer) = inbox
            .deliver(&source, &signed(&secret, "msg_2c", now() + skew), body)
            .await;
        assert_eq!((status, code(&answer)), (401, "timestamp_out_of_tolerance"));
    }
    let (status, answer) = inbox
        .deliver(&source, &signed(&secret, "msg_2c", now()), &body.replace(':', ": "))
        .await;
    assert_eq!((status, code(&answer)), (401, "signature_invalid"));

    // Rotation with a secret Steadfast makes.
    let id = source["id"].as_str().unwrap();
    let rotated = inbox
        .call(
            reqwest::Method::POST,
            &format!("/v1/sources/{id}/secrets"),
            Some(json!({"retire_others_after_secs": 3600})),
        )
        .await;
    let new_secret = rotated["secret"].as_str().unwrap();
    for (n, secret) in [("old", secret.as_str()), ("new", new_secret)] {
        let (status, _) = inbox
            .deliver(&source, &signed(secret, &format!("msg_{n}"), now()), body)
            .await;
        assert_eq!(status, 200, "{n} secret during the rotation");
    }
    assert_eq!(inbox.job_count().await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_requests_signed_by_slack_sdk() {
    let inbox = Inbox::start();
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let source = inbox
        .create(json!({"name": "slack", "kind": "slack", "queue": "chat", "secret": secret}))
        .await;
    let challenge = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let (status, answer) = inbox
        .deliver(
            &source,
            &python(&["slack", secret, &now().to_string(), &inbox.file(challenge)]),
            challenge,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert_eq!(inbox.job_count().await, 0, "the handshake is not an event");

    let body = r#"{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention","text":"hi"}}"#;
    let file = inbox.file(body);
    let (status, first) = inbox
        .deliver(&source, &python(&["slack", secret, &now().to_string(), &file]), body)
        .await;
    assert_eq!(
        (status, first["event_id"].as_str()),
        (200, Some("Ev08MFMKH6")),
        "{first}"
    );
    // Slack's retry comes with a new timestamp and X-Slack-Retry-Num.
    let mut retry = python(&["slack", secret, &(now() + 1).to_string(), &file]);
    retry.push(("x-slack-retry-num".into(), "1".into()));
    let (_, again) = inbox.deliver(&source, &retry, body).await;
    assert_eq!(
        (again["duplicate"].as_bool(), &again["job_id"]),
        (Some(true), &first["job_id"])
    );
    let (status, answer) = inbox
        .deliver(
            &source,
            &python(&["slack", secret, &(now() - 3600).to_string(), &file]),
            body,
        )
        .await;
    assert_eq!((status, code(&answer)), (401, "timestamp_out_of_tolerance"));
    assert_eq!(inbox.job_count().await, 1);
}
