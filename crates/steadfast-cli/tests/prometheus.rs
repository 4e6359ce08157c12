//! Proof with real tools: `promtool check metrics` lints the exposition, and
//! a real Prometheus server scrapes a real Steadfast (with a bearer key) and
//! reads back the numbers we caused.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ServerProcess, free_port};
use serde_json::{Value, json};

fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} is not installed: scripts/test.sh installs Debian's prometheus package (apt-get install prometheus)"
    );
    String::from_utf8(found.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_numbers_we_caused_and_promtool_finds_nothing_to_lint() {
    let (promtool, prometheus) = (tool("promtool"), tool("prometheus"));
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let key = server.admin_key();
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let (http, url, key) = (http.clone(), server.url.clone(), key.clone());
        async move {
            http.post(format!("{url}{path}"))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    for n in 0..5 {
        post("/v1/jobs".into(), json!({"queue": "scraped", "payload": {"n": n}})).await;
    }
    let leased = post(
        "/v1/lease".into(),
        json!({"queues": ["scraped"], "worker_id": "w", "max_jobs": 4}),
    )
    .await;
    let jobs = leased["jobs"].as_array().unwrap();
    for job in &jobs[..3] {
        post(
            format!("/v1/jobs/{}/complete", job["id"].as_str().unwrap()),
            json!({"lease_token": job["lease_token"]}),
        )
        .await;
    }
    let dead = &jobs[3];
    let hopeless = json!({"lease_token": dead["lease_token"], "error": {"message": "bad"}, "retryable": false});
    post(format!("/v1/jobs/{}/fail", dead["id"].as_str().unwrap()), hopeless).await;

    let exposition = http
        .get(format!("{}/metrics", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lint = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    lint.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let port = free_port();
    let target = server.url.trim_start_matches("http://");
    let key_file = dir.path().join("data").join("admin.key");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: steadfast\n    authorization: {{type: Bearer, credentials_file: {}}}\n    static_configs: [{{targets: ['{target}']}}]\n",
            key_file.display()
        ),
    )
    .unwrap();
    let mut prometheus = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let query = |expr: &str| {
        let (http, expr) = (http.clone(), expr.to_owned());
        async move {
            let response = http
                .get(format!("http://127.0.0.1:{port}/api/v1/query"))
                .query(&[("query", expr)])
                .send()
                .await
                .ok()?;
            let body: Value = response.json().await.ok()?;
            body["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = None;
    while Instant::now() < deadline {
        seen = query(r#"steadfast_jobs_enqueued_total{queue="scraped"}"#).await;
        if seen == Some(5.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let dead_jobs = query(r#"steadfast_jobs_finished_total{queue="scraped",outcome="dead"}"#).await;
    let succeeded = query(r#"steadfast_jobs_finished_total{queue="scraped",outcome="succeeded"}"#).await;
    let queued = query(r#"steadfast_queue_depth{queue="scraped",state="queued"}"#).await;
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(seen, Some(5.0), "Prometheus never scraped the enqueue count");
    assert_eq!((succeeded, dead_jobs, queued), (Some(3.0), Some(1.0), Some(1.0)));
}
