//! Many Steadfast nodes on one PostgreSQL database, and the faults they must
//! survive: a node SIGKILLed mid-run, backend connections terminated under
//! load, PostgreSQL stopped and started again. Reported in Jepsen's words:
//! acknowledged, lost, and (here) double leases.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BINARY, ServerProcess, all_pages, steadfast, stripe_signature};
use serde_json::{Value, json};
use steadfast_postgres::test_support::{self, TestDatabase};
use steadfast_protocol::tls::test_ca::{IdentityFiles, TestCa};

fn cli(args: &[&str]) -> String {
    let output = Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A tenant and an admin key on the database, made with the CLI as an operator would.
fn admin_key(database_url: &str) -> String {
    cli(&["tenant", "create", "acme", "--database-url", database_url]);
    cli(&[
        "key",
        "create",
        "--tenant",
        "acme",
        "--role",
        "admin",
        "--database-url",
        database_url,
    ])
}

/// The audit signing key every node of these tests shares.
const AUDIT_KEY: &str = "0707070707070707070707070707070707070707070707070707070707070707";

fn node(dir: &Path, n: usize, database_url: &str) -> ServerProcess {
    ServerProcess::start_with_env(
        &dir.join(format!("node-{n}")),
        &["--database-url", database_url, "--lease-ttl-secs", "3"],
        &[("STEADFAST_AUDIT_SIGNING_KEY", AUDIT_KEY)],
    )
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    key: String,
}

impl Api {
    fn new(key: String) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            key,
        }
    }

    async fn post(&self, url: &str, path: &str, body: Value) -> Result<(u16, Value), reqwest::Error> {
        let response = self
            .http
            .post(format!("{url}{path}"))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, url: &str, path: &str) -> Result<(u16, Value), reqwest::Error> {
        let response = self
            .http
            .get(format!("{url}{path}"))
            .bearer_auth(&self.key)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Enqueues with an idempotency key, trying each URL in turn until one acknowledges.
    async fn enqueue_anywhere(&self, urls: &[String], key: &str, deadline: Instant) -> Option<String> {
        let body = json!({"queue": "work", "payload": {"key": key}, "idempotency_key": key});
        for attempt in 0.. {
            if Instant::now() > deadline {
                return None;
            }
            let url = &urls[attempt % urls.len()];
            if let Ok((200 | 201, job)) = self.post(url, "/v1/jobs", body.clone()).await {
                return job["id"].as_str().map(str::to_owned);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        unreachable!()
    }
}

/// Workers spread over `urls`, recording every lease they get; a lease that
/// arrives while another live lease on the same job is unfinished is a double lease.
struct Workforce {
    completed: Arc<Mutex<HashMap<String, usize>>>,
    double_leases: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_workers(api: &Api, urls: &[String], per_url: usize) -> Workforce {
    let completed: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let live: Arc<Mutex<HashMap<String, (String, Instant)>>> = Arc::default();
    let double_leases = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (n, _) in (0..urls.len() * per_url).enumerate() {
        let (api, urls, completed, live, double_leases, stop) = (
            api.clone(),
            urls.to_vec(),
            completed.clone(),
            live.clone(),
            double_leases.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut home = n % urls.len();
            while !stop.load(Ordering::Relaxed) {
                let lease = json!({"queues": ["work"], "worker_id": format!("w{n}"), "max_jobs": 5, "wait_ms": 200});
                let jobs = match api.post(&urls[home], "/v1/lease", lease).await {
                    Ok((200, body)) => body["jobs"].as_array().cloned().unwrap_or_default(),
                    _ => {
                        home = (home + 1) % urls.len(); // that node is gone or failing: use another
                        continue;
                    }
                };
                for job in jobs {
                    let id = job["id"].as_str().unwrap().to_owned();
                    let token = job["lease_token"].as_str().unwrap().to_owned();
                    {
                        let mut live = live.lock().unwrap();
                        if let Some((_, until)) = live.get(&id)
                            && Instant::now() < *until
                        {
                            double_leases.fetch_add(1, Ordering::Relaxed);
                        }
                        live.insert(id.clone(), (token.clone(), Instant::now() + Duration::from_secs(2)));
                    }
                    // Complete through any node that answers; a stale token means another attempt owns it.
                    for attempt in 0..urls.len() * 3 {
                        let url = &urls[(home + attempt) % urls.len()];
                        match api
                            .post(url, &format!("/v1/jobs/{id}/complete"), json!({"lease_token": token}))
                            .await
                        {
                            Ok((200, _)) => {
                                *completed.lock().unwrap().entry(id.clone()).or_default() += 1;
                                break;
                            }
                            Ok((409, _)) => break,
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                    live.lock().unwrap().remove(&id);
                }
            }
        }));
    }
    Workforce {
        completed,
        double_leases,
        stop,
        tasks,
    }
}

impl Workforce {
    async fn stop(self) -> (HashMap<String, usize>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        (
            self.completed.lock().unwrap().clone(),
            self.double_leases.load(Ordering::Relaxed),
        )
    }
}

/// Polls (with a deadline) until every id is `succeeded`; returns those that are not.
async fn unfinished(api: &Api, url: &str, ids: &[String], deadline: Instant) -> Vec<String> {
    let mut pending: Vec<String> = ids.to_vec();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in pending {
            match api.get(url, &format!("/v1/jobs/{id}")).await {
                Ok((200, job)) if job["state"] == "succeeded" => {}
                _ => still.push(id),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_nothing_when_one_is_killed() {
    let database: TestDatabase = test_support::create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let key = admin_key(&database.app_url);
    let mut nodes: Vec<ServerProcess> = (0..3).map(|n| node(dir.path(), n, &database.app_url)).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let api = Api::new(key);
    let workers = start_workers(&api, &urls, 2);

    const JOBS: usize = 600;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acknowledged = Vec::new();
    for i in 0..JOBS {
        if i == JOBS / 3 {
            nodes[0].kill_9(); // mid-run, with leases and requests in flight
        }
        // Producers prefer the first node, so the kill lands on live traffic.
        let preferred: Vec<String> = urls.iter().cycle().skip(i % 3).take(3).cloned().collect();
        if let Some(id) = api.enqueue_anywhere(&preferred, &format!("job-{i}"), deadline).await {
            acknowledged.push(id);
        }
    }
    let survivors = &urls[1..];
    let lost = unfinished(&api, &survivors[0], &acknowledged, deadline).await;
    let (completed, double_leases) = workers.stop().await;
    let completed_twice = completed.values().filter(|n| **n > 1).count();
    println!(
        "three nodes, one SIGKILLed: acknowledged {}, completed {}, lost {}, double leases {double_leases}, completed twice {completed_twice}",
        acknowledged.len(),
        completed.len(),
        lost.len()
    );
    assert!(
        acknowledged.len() >= JOBS * 9 / 10,
        "most enqueues must succeed for the run to count"
    );
    assert!(
        lost.is_empty(),
        "acknowledged jobs that never completed: {:?}",
        &lost[..lost.len().min(5)]
    );
    assert_eq!(double_leases, 0, "no job may have two live leases");
    assert_eq!(completed_twice, 0, "fencing lets only one attempt complete");
    drop(nodes);
}

/// Webhook deliveries to three nodes, each event sent to two nodes at
/// once, one node SIGKILLed mid-run: every acknowledged event is stored
/// once with one job, whichever nodes took it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_events_are_stored_once_across_nodes_and_survive_a_kill() {
    const SECRET: &str = "whsec_three_nodes_0123456789";
    const EVENTS: usize = 300;
    let database: TestDatabase = test_support::create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let api = Api::new(admin_key(&database.app_url));
    let mut nodes: Vec<ServerProcess> = (0..3).map(|n| node(dir.path(), n, &database.app_url)).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let source: Value = api
        .http
        .post(format!("{}/v1/sources", urls[1]))
        .bearer_auth(&api.key)
        .json(&json!({"name": "stripe", "kind": "stripe", "queue": "payments", "secret": SECRET}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = source["ingest_path"].as_str().unwrap().to_owned();
    let deliver = |url: String, body: String| {
        let (http, path) = (api.http.clone(), path.clone());
        async move {
            let response = http
                .post(format!("{url}{path}"))
                .header("stripe-signature", stripe_signature(SECRET, body.as_bytes()))
                .body(body)
                .send()
                .await
                .ok()?;
            if !response.status().is_success() {
                return None;
            }
            let answer: Value = response.json().await.ok()?;
            answer["job_id"].as_str().map(str::to_owned)
        }
    };

    let mut acknowledged: HashMap<String, String> = HashMap::new();
    for i in 0..EVENTS {
        if i == EVENTS / 3 {
            nodes[0].kill_9(); // with deliveries in flight to it
        }
        let event_id = format!("evt_nodes_{i}");
        let body = format!(r#"{{"id":"{event_id}","type":"charge.succeeded"}}"#);
        // The same event to two nodes at once, one of them often the killed one.
        let (a, b) = tokio::join!(
            deliver(urls[i % 3].clone(), body.clone()),
            deliver(urls[(i + 1) % 3].clone(), body)
        );
        if let (Some(a), Some(b)) = (&a, &b) {
            assert_eq!(a, b, "{event_id}: both nodes name one job");
        }
        if let Some(job) = a.or(b) {
            acknowledged.insert(event_id, job);
        }
    }
    let survivor = &urls[1];
    let events = all_pages(
        &api.http,
        survivor,
        &api.key,
        &format!("/v1/sources/{}/events", source["id"].as_str().unwrap()),
        "events",
    )
    .await;
    let mut stored: HashMap<String, String> = HashMap::new();
    for event in &events {
        let id = event["event_id"].as_str().unwrap().to_owned();
        let job = event["job_id"].as_str().unwrap().to_owned();
        assert!(stored.insert(id.clone(), job).is_none(), "{id} stored twice");
    }
    let jobs = all_pages(&api.http, survivor, &api.key, "/v1/jobs?queue=payments", "jobs").await;
    println!(
        "three nodes, one SIGKILLed, every event to two nodes: acknowledged {}, stored {}, jobs {}",
        acknowledged.len(),
        stored.len(),
        jobs.len()
    );
    assert!(
        acknowledged.len() >= EVENTS * 9 / 10,
        "most deliveries must succeed for the run to count"
    );
    for (event_id, job) in &acknowledged {
        assert_eq!(
            stored.get(event_id),
            Some(job),
            "{event_id} acknowledged, then lost or remapped"
        );
    }
    assert_eq!(jobs.len(), stored.len(), "one job per stored event");
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_database_connections_are_survived_without_a_restart() {
    let database = test_support::create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let key = admin_key(&database.app_url);
    let server = node(dir.path(), 0, &database.app_url);
    let urls = vec![server.url.clone()];
    let api = Api::new(key);
    let workers = start_workers(&api, &urls, 3);
    let (admin, connection) = tokio_postgres::connect(&database.admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acknowledged = Vec::new();
    let mut terminated = 0u64;
    for i in 0..300 {
        if i % 30 == 0 {
            let row = admin
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
                    &[&database.name, &test_support::APP_ROLE],
                )
                .await
                .unwrap();
            terminated += row.get::<_, i64>(0) as u64;
        }
        if let Some(id) = api.enqueue_anywhere(&urls, &format!("job-{i}"), deadline).await {
            acknowledged.push(id);
        }
    }
    let lost = unfinished(&api, &urls[0], &acknowledged, deadline).await;
    let (completed, double_leases) = workers.stop().await;
    println!(
        "backends terminated under load: {terminated} connections killed; acknowledged {}, completed {}, lost {}, double leases {double_leases}",
        acknowledged.len(),
        completed.len(),
        lost.len()
    );
    assert!(terminated > 0, "the test must actually kill connections");
    assert_eq!(
        acknowledged.len(),
        300,
        "every enqueue is eventually acknowledged (with retries)"
    );
    assert!(lost.is_empty());
    assert_eq!(double_leases, 0);
    let ready = api.http.get(format!("{}/readyz", urls[0])).send().await.unwrap();
    assert_eq!(
        ready.status().as_u16(),
        200,
        "the same process recovered without a restart"
    );
}

/// A private PostgreSQL server this test may stop and start.
struct PrivateServer {
    dir: tempfile::TempDir,
    port: u16,
    script: String,
    tls: Option<IdentityFiles>,
    /// Superuser URL.
    url: String,
}

impl PrivateServer {
    fn start() -> PrivateServer {
        PrivateServer::start_with(None)
    }

    /// A server that also accepts TLS with `identity`.
    fn start_tls(identity: &IdentityFiles) -> PrivateServer {
        PrivateServer::start_with(Some(identity.clone()))
    }

    fn start_with(tls: Option<IdentityFiles>) -> PrivateServer {
        let script =
            std::env::var("STEADFAST_TEST_PG_SCRIPT").expect("run through scripts/test.sh (STEADFAST_TEST_PG_SCRIPT)");
        let dir = tempfile::Builder::new().prefix("steadfast-pg-stop-").tempdir().unwrap();
        let port = common::free_port();
        let mut server = PrivateServer {
            dir,
            port,
            script,
            tls,
            url: String::new(),
        };
        server.url = server.up();
        server
    }

    fn up(&self) -> String {
        let mut command = Command::new(&self.script);
        command.args(["start", self.dir.path().to_str().unwrap(), &self.port.to_string()]);
        if let Some(identity) = &self.tls {
            command.arg(&identity.cert).arg(&identity.key);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    fn down(&self) {
        let status = Command::new(&self.script)
            .args(["stop", self.dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.down();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_gives_clear_503s_and_recovery_needs_no_restart() {
    let postgres = PrivateServer::start();
    let database = test_support::create_database_on(&postgres.url).await;
    let dir = tempfile::tempdir().unwrap();
    let key = admin_key(&database.app_url);
    let server = node(dir.path(), 0, &database.app_url);
    let api = Api::new(key);
    let (status, _) = api
        .post(&server.url, "/v1/jobs", json!({"queue": "q", "payload": {}}))
        .await
        .unwrap();
    assert_eq!(status, 201);

    postgres.down();
    let started = Instant::now();
    let ready = api.http.get(format!("{}/readyz", server.url)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let (status, body) = api
        .post(&server.url, "/v1/jobs", json!({"queue": "q", "payload": {}}))
        .await
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, json!("unavailable")),
        "{body}"
    );
    println!(
        "with PostgreSQL stopped, readyz and an enqueue answered 503 within {:?}",
        started.elapsed()
    );

    postgres.up();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = api
            .post(&server.url, "/v1/jobs", json!({"queue": "q", "payload": {}}))
            .await
            .unwrap();
        if status == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not recover after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, jobs) = api.get(&server.url, "/v1/jobs").await.unwrap();
    assert_eq!(
        jobs["jobs"].as_array().unwrap().len(),
        2,
        "the job acknowledged before the outage is still there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_privileged_roles_and_unmigrated_databases_and_migrate_fixes_the_latter() {
    let database = test_support::create_database().await;
    let serve = |url: &str| {
        Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", url])
            .env("RUST_LOG", "warn")
            .env("STEADFAST_AUDIT_SIGNING_KEY", AUDIT_KEY)
            .output()
            .unwrap()
    };
    let as_owner = serve(&database.owner_url);
    assert_eq!(as_owner.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&as_owner.stderr).contains("refusing to run as role"));

    let (admin, connection) = tokio_postgres::connect(&database.admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let empty = format!("{}_fresh", database.name);
    admin
        .batch_execute(&format!("CREATE DATABASE {empty} OWNER {}", test_support::OWNER_ROLE))
        .await
        .unwrap();
    let app_url = database
        .app_url
        .replace(&format!("/{}", database.name), &format!("/{empty}"));
    let owner_url = database
        .owner_url
        .replace(&format!("/{}", database.name), &format!("/{empty}"));
    let unmigrated = serve(&app_url);
    assert_eq!(unmigrated.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&unmigrated.stderr).contains("steadfast migrate --database-url"));

    cli(&[
        "migrate",
        "--database-url",
        &owner_url,
        "--app-role",
        test_support::APP_ROLE,
    ]);
    cli(&[
        "migrate",
        "--database-url",
        &owner_url,
        "--app-role",
        test_support::APP_ROLE,
    ]); // idempotent
    let key = admin_key(&app_url);
    let dir = tempfile::tempdir().unwrap();
    let server = node(dir.path(), 0, &app_url);
    let (status, _) = Api::new(key)
        .post(&server.url, "/v1/jobs", json!({"queue": "q", "payload": {}}))
        .await
        .unwrap();
    assert_eq!(status, 201, "a migrated database serves");
}

/// The benchmarks' `--database-url`: a tiny run of `throughput` (in-process
/// server) and `scale` (a `serve` child process, killed and restarted) on a
/// fresh PostgreSQL database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmarks_run_on_postgresql() {
    let database = test_support::create_database().await;
    let json = |args: &[&str]| -> serde_json::Value {
        let output = steadfast(args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let throughput = json(&[
        "bench",
        "throughput",
        "--jobs",
        "40",
        "--workers",
        "2",
        "--batch-size",
        "20",
        "--json",
        "--database-url",
        &database.app_url,
    ]);
    assert_eq!(throughput["backend"], "postgres");
    assert!(throughput["drain_jobs_per_sec"].as_f64().unwrap() > 0.0, "{throughput}");
    let scale = json(&[
        "bench",
        "scale",
        "--levels",
        "100,200",
        "--jobs",
        "30",
        "--rate",
        "20",
        "--seconds",
        "1",
        "--json",
        "--database-url",
        &database.app_url,
    ]);
    assert_eq!(scale["backend"], "postgres");
    assert_eq!(scale["restart_queued"], 200);
    assert!(scale["restart_to_ready_ms"].as_f64().unwrap() > 0.0, "{scale}");
}

/// Runs `steadfast tenant list` against `url` (a connection through the
/// store's own connector), with `env`; its exit status and stderr.
fn reaches(url: &str, env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(BINARY)
        .args(["tenant", "list", "--database-url", url])
        .env("RUST_LOG", "warn")
        .env_remove("SSL_CERT_FILE")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `sslmode` in `--database-url` means what libpq says it means: the
/// verifying modes check the chain (and the name) against `sslrootcert` or
/// the system's roots plus `SSL_CERT_FILE`, and a node started with
/// `verify-full` holds only encrypted connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_over_tls_honours_sslmode() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("PostgreSQL test CA");
    let ca_file = ca.write(certs.path(), "ca.pem");
    let ca_file = ca_file.to_str().unwrap();
    let identity = ca.issue(&["localhost"]).write(certs.path(), "postgres");
    let postgres = PrivateServer::start_tls(&identity);
    let database = test_support::create_database_on(&postgres.url).await;
    // The certificate names `localhost`, not the address.
    let by_name = database.app_url.replace("@127.0.0.1:", "@localhost:");
    let by_address = database.app_url.clone();
    assert!(by_address.contains("@127.0.0.1:") && !by_address.contains('?'));

    let (ok, stderr) = reaches(&format!("{by_name}?sslmode=verify-full&sslrootcert={ca_file}"), &[]);
    assert!(ok, "verify-full with the CA: {stderr}");
    let (ok, stderr) = reaches(&format!("{by_address}?sslmode=verify-full&sslrootcert={ca_file}"), &[]);
    assert!(!ok, "verify-full accepted a certificate for another name");
    assert!(stderr.contains("not valid for name"), "{stderr}");
    let (ok, stderr) = reaches(&format!("{by_address}?sslmode=verify-ca&sslrootcert={ca_file}"), &[]);
    assert!(ok, "verify-ca checks the chain only: {stderr}");
    // Without sslrootcert: the system's roots do not know the test CA...
    let (ok, stderr) = reaches(&format!("{by_name}?sslmode=verify-full"), &[]);
    assert!(!ok && stderr.contains("UnknownIssuer"), "{stderr}");
    // ...and SSL_CERT_FILE adds it.
    let (ok, stderr) = reaches(&format!("{by_name}?sslmode=verify-full"), &[("SSL_CERT_FILE", ca_file)]);
    assert!(ok, "verify-full with SSL_CERT_FILE: {stderr}");
    // `require` encrypts without checking; a server without TLS is refused.
    let (ok, stderr) = reaches(&format!("{by_address}?sslmode=require"), &[]);
    assert!(ok, "require: {stderr}");
    let plain_server = test_support::create_database().await;
    let (ok, _) = reaches(&format!("{}?sslmode=require", plain_server.app_url), &[]);
    assert!(!ok, "require connected to a server without TLS");
    let (ok, stderr) = reaches(&format!("{by_address}?sslmode=verify"), &[]);
    assert!(!ok && stderr.contains("sslmode=verify is not one of"), "{stderr}");

    // A node on verify-full does its work over TLS only.
    let url = format!("{by_name}?sslmode=verify-full&sslrootcert={ca_file}");
    let key = admin_key(&url);
    let dir = tempfile::tempdir().unwrap();
    let server = node(dir.path(), 0, &url);
    let api = Api::new(key);
    let (status, body) = api
        .post(&server.url, "/v1/jobs", json!({"queue": "q", "payload": {}}))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let (admin, connection) = tokio_postgres::connect(&postgres.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = admin
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'steadfast' AND a.datname = $1",
            &[&database.name],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "the node holds connections");
    assert!(
        rows.iter().all(|row| row.get::<_, bool>(0)),
        "every connection of the node is encrypted"
    );
}

/// `steadfast serve` on `database_url` with `extra` flags, run to its exit
/// (it is expected to refuse to start): exit code and stderr.
fn refused_node(dir: &Path, database_url: &str, extra: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(BINARY)
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
        .args(extra)
        .env("RUST_LOG", "warn")
        .env_remove("STEADFAST_AUDIT_SIGNING_KEY")
        .env_remove("STEADFAST_AUDIT_SIGNING_KEY_FILE")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Three nodes started at once (two from one directory, one from another)
/// sign with the one key the deployment registered; a node with no key or
/// another key refuses to start; after `audit rotate-key` only the new key
/// starts, and a checkpoint signed by the retired key still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_audit_signing_key_per_deployment_and_rotation_on_purpose() {
    let database = test_support::create_database().await;
    let url = database.app_url.as_str();
    let key = admin_key(url);
    let dir = tempfile::tempdir().unwrap();
    let first_file = dir.path().join("first.key");
    let first = cli(&["audit", "create-key", first_file.to_str().unwrap()]);
    let (code, stderr) = refused_node(dir.path(), url, &[]);
    assert_eq!(code, Some(78), "a node without a key: {stderr}");
    assert!(stderr.contains("one shared key"), "{stderr}");

    let shared = dir.path().join("shared");
    let flags = [
        "--database-url",
        url,
        "--audit-signing-key-file",
        first_file.to_str().unwrap(),
    ];
    let nodes: Vec<ServerProcess> = [shared.clone(), shared.clone(), dir.path().join("own")]
        .iter()
        .map(|data_dir| ServerProcess::spawn_with_env(data_dir, &flags, &[]))
        .collect();
    for node in &nodes {
        node.wait_ready();
    }
    let keys = cli(&["audit", "keys", "--database-url", url]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    assert!(keys.contains(&first) && keys.contains("current"), "{keys}");

    let other_file = dir.path().join("other.key");
    let other = cli(&["audit", "create-key", other_file.to_str().unwrap()]);
    let (code, stderr) = refused_node(
        dir.path(),
        url,
        &["--audit-signing-key-file", other_file.to_str().unwrap()],
    );
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains(&format!("not {other}")), "{stderr}");

    // A checkpoint signed now, by the first key.
    let api = Api::new(key);
    let (_, head) = api.get(&nodes[0].url, "/v1/audit/head").await.unwrap();
    assert_eq!(head["public_key"], first.as_str());
    let checkpoint = dir.path().join("checkpoint.json");
    std::fs::write(&checkpoint, head.to_string()).unwrap();
    drop(nodes);

    let rotated = cli(&[
        "audit",
        "rotate-key",
        "--new-key-file",
        other_file.to_str().unwrap(),
        "--database-url",
        url,
    ]);
    assert_eq!(rotated, other);
    let (code, stderr) = refused_node(
        dir.path(),
        url,
        &["--audit-signing-key-file", first_file.to_str().unwrap()],
    );
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("was retired"), "{stderr}");
    let node = ServerProcess::start_with(
        &shared,
        &[
            "--database-url",
            url,
            "--audit-signing-key-file",
            other_file.to_str().unwrap(),
        ],
    );
    let (_, head) = api.get(&node.url, "/v1/audit/head").await.unwrap();
    assert_eq!(head["public_key"], other.as_str());

    let verified = cli(&[
        "audit",
        "verify",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--database-url",
        url,
    ]);
    assert!(
        verified.contains(&format!("checkpoint signed by registered key {first}")),
        "{verified}"
    );
    assert!(verified.contains("checkpoint confirmed"), "{verified}");
    // The registrations are in the system chain, which verifies.
    assert!(verified.contains("system chain: intact, 2 records"), "{verified}");
    // Keys pinned from outside the database: only those are trusted.
    let checkpoint = checkpoint.to_str().unwrap();
    let pinned = cli(&[
        "audit",
        "verify",
        "--checkpoint",
        checkpoint,
        "--public-key",
        &first,
        "--database-url",
        url,
    ]);
    assert!(
        pinned.contains(&format!("checkpoint signed by given key {first}")),
        "{pinned}"
    );
    let wrong = steadfast(&[
        "audit",
        "verify",
        "--checkpoint",
        checkpoint,
        "--public-key",
        &other,
        "--database-url",
        url,
    ]);
    assert!(
        !wrong.status.success(),
        "a checkpoint signed by a key not pinned is refused"
    );
}

/// A key revoked (or expired) through one node's database is refused by
/// every node within 5 s: nodes look keys up per request, no cache outlives
/// that bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_by_every_node_within_five_seconds() {
    let database = test_support::create_database().await;
    let url = database.app_url.as_str();
    let key = admin_key(url);
    let reader = cli(&[
        "key",
        "create",
        "--tenant",
        "acme",
        "--role",
        "reader",
        "--database-url",
        url,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let nodes = [node(dir.path(), 0, url), node(dir.path(), 1, url)];
    let api = Api::new(reader.clone());
    for node in &nodes {
        assert_eq!(api.get(&node.url, "/v1/jobs").await.unwrap().0, 200);
    }
    let reader_id = reader.trim_start_matches("sfk_").split('_').next().unwrap();
    cli(&["key", "revoke", reader_id, "--database-url", url]);
    let deadline = Instant::now() + Duration::from_secs(5);
    for node in &nodes {
        while api.get(&node.url, "/v1/jobs").await.unwrap().0 != 401 {
            assert!(
                Instant::now() < deadline,
                "node {} still accepts the revoked key",
                node.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The admin key is untouched.
    assert_eq!(Api::new(key).get(&nodes[1].url, "/v1/jobs").await.unwrap().0, 200);
}

/// Running jobs per key, read straight from the jobs' lease records in one
/// snapshot (as the database's owner, so across tenants).
async fn running_per_key(db: &tokio_postgres::Client) -> HashMap<String, i64> {
    db.query(
        "SELECT flow_key, count(*) FROM steadfast.jobs WHERE state = 'running' AND flow_key IS NOT NULL \
         GROUP BY flow_key",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect()
}

/// Many workers on three nodes hammer a queue with `key_concurrency: 2`
/// and random keys: at no instant do more than two jobs of one key hold a
/// lease, by the database's own lease records (sampled continuously) and
/// by the workers' own count of what they hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_concurrency_holds_across_three_nodes() {
    const LIMIT: i64 = 2;
    const JOBS: usize = 400;
    let database: TestDatabase = test_support::create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let key = admin_key(&database.app_url);
    let nodes: Vec<ServerProcess> = (0..3).map(|n| node(dir.path(), n, &database.app_url)).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let api = Api::new(key);
    let (status, _) = api
        .http
        .put(format!("{}/v1/queues/flow/policy", urls[0]))
        .bearer_auth(&api.key)
        .json(&json!({"key_concurrency": LIMIT}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 200);
    let jobs: Vec<Value> = (0..JOBS)
        .map(|i| json!({"queue": "flow", "payload": {}, "flow_key": format!("k{}", (i * 7919) % 6)}))
        .collect();
    for chunk in jobs.chunks(200) {
        let (status, _) = api
            .post(&urls[1], "/v1/jobs/batch", json!({"jobs": chunk}))
            .await
            .unwrap();
        assert_eq!(status, 201);
    }

    let (db, connection) = tokio_postgres::connect(&database.owner_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let done = Arc::new(AtomicUsize::new(0));
    let held: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let most_held = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..12 {
        let (api, url) = (api.clone(), urls[w % 3].clone());
        let (done, held, most_held) = (done.clone(), held.clone(), most_held.clone());
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while done.load(Ordering::SeqCst) < JOBS && Instant::now() < deadline {
                let body =
                    json!({"queues": ["flow"], "worker_id": format!("w{w}"), "max_jobs": 1 + w % 4, "wait_ms": 200});
                let Ok((200, leased)) = api.post(&url, "/v1/lease", body).await else {
                    continue;
                };
                let leased = leased["jobs"].as_array().cloned().unwrap_or_default();
                let keys: Vec<String> = leased
                    .iter()
                    .map(|job| job["flow_key"].as_str().unwrap_or_default().to_owned())
                    .collect();
                {
                    let mut held = held.lock().unwrap();
                    for k in &keys {
                        let n = held.entry(k.clone()).or_default();
                        *n += 1;
                        most_held.fetch_max(*n as usize, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5 + (w as u64 * 3) % 20)).await;
                for (job, k) in leased.iter().zip(&keys) {
                    // Released from our count before the completion is sent.
                    *held.lock().unwrap().get_mut(k).unwrap() -= 1;
                    let id = job["id"].as_str().unwrap();
                    let body = json!({"lease_token": job["lease_token"], "output": 1});
                    if let Ok((200, _)) = api.post(&url, &format!("/v1/jobs/{id}/complete"), body).await {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    let mut samples = 0;
    let mut worst = 0;
    while done.load(Ordering::SeqCst) < JOBS && workers.iter().any(|w| !w.is_finished()) {
        let running = running_per_key(&db).await;
        worst = worst.max(running.values().copied().max().unwrap_or(0));
        samples += 1;
    }
    for worker in workers {
        worker.await.unwrap();
    }
    println!(
        "key_concurrency {LIMIT} on three nodes: {} of {JOBS} jobs done, {samples} snapshots, at most {worst} running \
         per key in the database, at most {} held per key by the workers",
        done.load(Ordering::SeqCst),
        most_held.load(Ordering::SeqCst)
    );
    assert_eq!(done.load(Ordering::SeqCst), JOBS, "every job ran");
    assert!(samples > 10, "the database was sampled throughout");
    assert!(
        (1..=LIMIT).contains(&worst),
        "the database held {worst} running jobs of one key"
    );
    assert!(
        most_held.load(Ordering::SeqCst) as i64 <= LIMIT,
        "a worker saw more than {LIMIT} of one key"
    );
    drop(nodes);
}

/// A breaker on three nodes: failures open it; half-open, exactly
/// `half_open_probes` leases are granted across all nodes however hard
/// workers ask; a probe's success closes it and the rest flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_grants_exactly_its_probes_across_three_nodes() {
    const PROBES: u64 = 2;
    let database: TestDatabase = test_support::create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let key = admin_key(&database.app_url);
    let nodes: Vec<ServerProcess> = (0..3).map(|n| node(dir.path(), n, &database.app_url)).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let api = Api::new(key);
    let breaker = json!({"breaker": {"failure_ratio": 0.5, "min_requests": 4, "window_secs": 60, "open_secs": 2,
                                     "half_open_probes": PROBES}});
    let put = api
        .http
        .put(format!("{}/v1/resources/payments-api", urls[0]))
        .bearer_auth(&api.key)
        .json(&breaker)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let jobs: Vec<Value> = (0..40)
        .map(|_| json!({"queue": "pay", "payload": {}, "resource": "payments-api"}))
        .collect();
    assert_eq!(
        api.post(&urls[0], "/v1/jobs/batch", json!({"jobs": jobs}))
            .await
            .unwrap()
            .0,
        201
    );
    let lease = |url: String, n: usize| {
        let api = api.clone();
        async move {
            let body = json!({"queues": ["pay"], "worker_id": "w", "max_jobs": n, "wait_ms": 100});
            let (status, leased) = api.post(&url, "/v1/lease", body).await.unwrap();
            assert_eq!(status, 200);
            leased["jobs"].as_array().cloned().unwrap_or_default()
        }
    };
    let fail = |url: String, job: Value| {
        let api = api.clone();
        async move {
            let id = job["id"].as_str().unwrap().to_owned();
            let body = json!({"lease_token": job["lease_token"],
                              "error": {"message": "503", "kind": "downstream_unavailable"}});
            assert_eq!(
                api.post(&url, &format!("/v1/jobs/{id}/fail"), body).await.unwrap().0,
                200
            );
        }
    };
    let state = |api: Api, url: String| async move { api.get(&url, "/v1/resources/payments-api").await.unwrap().1 };

    // Closed → open: four failures, reported through different nodes.
    for (i, job) in lease(urls[0].clone(), 4).await.into_iter().enumerate() {
        fail(urls[i % 3].clone(), job).await;
    }
    assert_eq!(state(api.clone(), urls[2].clone()).await["state"], "open");
    assert!(
        lease(urls[1].clone(), 10).await.is_empty(),
        "open: nothing of the resource is leased"
    );

    // Half-open: every node asked many times, concurrently, at most twice.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probes = Vec::new();
    while probes.is_empty() && Instant::now() < deadline {
        let rounds = urls.iter().cycle().take(30).map(|url| lease(url.clone(), 5));
        for leased in futures::future::join_all(rounds).await {
            probes.extend(leased);
        }
    }
    let rounds = urls.iter().cycle().take(60).map(|url| lease(url.clone(), 5));
    for leased in futures::future::join_all(rounds).await {
        probes.extend(leased);
    }
    let half_open = state(api.clone(), urls[0].clone()).await;
    assert_eq!(half_open["state"], "half_open", "{half_open}");
    let ids: Vec<&str> = probes.iter().filter_map(|job| job["id"].as_str()).collect();
    assert_eq!(
        probes.len() as u64,
        PROBES,
        "exactly the probes, across three nodes: {ids:?}"
    );
    assert_eq!(half_open["probes_granted"], PROBES);

    // A probe's success closes it; the rest flow from any node.
    let probe = &probes[0];
    let id = probe["id"].as_str().unwrap();
    let body = json!({"lease_token": probe["lease_token"], "output": 1});
    assert_eq!(
        api.post(&urls[2], &format!("/v1/jobs/{id}/complete"), body)
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(state(api.clone(), urls[1].clone()).await["state"], "closed");
    assert!(!lease(urls[1].clone(), 10).await.is_empty(), "closed: jobs flow again");
    drop(nodes);
}

/// A schedule firing every second on three nodes at once: every tick
/// makes exactly one job (the tick's idempotency key), and no tick between
/// the first and the last is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_each_tick_once_across_three_nodes() {
    const TICKS: i64 = 8;
    let database: TestDatabase = test_support::create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let key = admin_key(&database.app_url);
    let nodes: Vec<ServerProcess> = (0..3).map(|n| node(dir.path(), n, &database.app_url)).collect();
    let api = Api::new(key);
    let status = api
        .http
        .put(format!("{}/v1/schedules/pulse", nodes[0].url))
        .bearer_auth(&api.key)
        .json(&json!({"cron": "* * * * * *", "queue": "ticks", "payload": {"n": 1}, "overlap": "allow"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 201);

    let (db, connection) = tokio_postgres::connect(&database.owner_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let count = "SELECT count(*) FROM steadfast.jobs WHERE queue = 'ticks'";
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.query_one(count, &[]).await.unwrap().get::<_, i64>(0) < TICKS {
        assert!(
            Instant::now() < deadline,
            "the schedule did not fire {TICKS} times in a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = api
        .post(&nodes[1].url, "/v1/schedules/pulse/pause", json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200);

    // A tick is owed only once the previous tick's job exists, so whenever
    // this reads, the ticks with jobs run without a hole.
    let keys: Vec<String> = db
        .query(
            "SELECT idempotency_key FROM steadfast.jobs WHERE queue = 'ticks' ORDER BY idempotency_key",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut ticks: Vec<i64> = keys
        .iter()
        .map(|key| key.strip_prefix("schedule:pulse:").unwrap().parse().unwrap())
        .collect();
    ticks.sort();
    let distinct = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), distinct, "a tick made two jobs: {keys:?}");
    assert!(ticks.len() as i64 >= TICKS, "{keys:?}");
    let expected: Vec<i64> = (0..ticks.len() as i64).map(|i| ticks[0] + 1000 * i).collect();
    assert_eq!(
        ticks, expected,
        "every second from the first tick to the last made one job"
    );
}

/// An application's own role and table (`app_orders`), and the grant
/// `steadfast migrate --enqueue-role` gives it: its connection URL.
async fn application_role(database: &TestDatabase) -> String {
    let role = format!("enqueue_{}", database.name.trim_start_matches("steadfast_test_"));
    let (admin, connection) = tokio_postgres::connect(&database.admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; CREATE TABLE public.app_orders (id integer PRIMARY KEY); \
             GRANT INSERT, SELECT ON public.app_orders TO {role};"
        ))
        .await
        .unwrap();
    cli(&[
        "migrate",
        "--database-url",
        &database.owner_url,
        "--app-role",
        test_support::APP_ROLE,
        "--enqueue-role",
        &role,
    ]);
    // The application role already holds far more: refused as an enqueue role.
    let refused = Command::new(BINARY)
        .args([
            "migrate",
            "--database-url",
            &database.owner_url,
            "--app-role",
            test_support::APP_ROLE,
        ])
        .args(["--enqueue-role", test_support::APP_ROLE])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("holds far more"));
    application_role_url(database)
}

fn application_role_url(database: &TestDatabase) -> String {
    let role = format!("enqueue_{}", database.name.trim_start_matches("steadfast_test_"));
    database.app_url.replace(test_support::APP_ROLE, &role)
}

/// The documented examples (`examples/transactional-enqueue`: psycopg and
/// node-postgres) against a node: a committed order's job appears with the
/// id the example printed; a rolled-back order's never does. Needs the
/// examples' libraries: `scripts/test.sh` installs them and sets
/// `STEADFAST_TEST_PROVIDER_PYTHON` (see `tests/providers.rs` to run by hand;
/// also `(cd examples/transactional-enqueue && npm ci)` and
/// `pip install -r examples/transactional-enqueue/requirements.txt`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_examples_enqueue_inside_a_transaction() {
    let python = std::env::var("STEADFAST_TEST_PROVIDER_PYTHON")
        .expect("STEADFAST_TEST_PROVIDER_PYTHON: a Python with psycopg (scripts/test.sh sets it)");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/transactional-enqueue");
    assert!(
        examples.join("node_modules/pg").exists(),
        "install node-postgres first: (cd examples/transactional-enqueue && npm ci)"
    );
    let database: TestDatabase = test_support::create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let key = admin_key(&database.app_url);
    let server = node(dir.path(), 0, &database.app_url);
    let api = Api::new(key.clone());
    let app_url = application_role(&database).await;
    let run = |program: &str, script: &str, order: u32, fail: bool| {
        let mut command = Command::new(program);
        command
            .arg(script)
            .arg(order.to_string())
            .current_dir(&examples)
            .env("DATABASE_URL", &app_url)
            .env("STEADFAST_KEY", &key);
        if fail {
            command.arg("--fail-after-enqueue");
        }
        let output = command.output().unwrap();
        assert_eq!(
            output.status.success(),
            !fail,
            "{script} {order}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    for (program, script, first) in [(python.as_str(), "orders.py", 1), ("node", "orders.mjs", 3)] {
        let committed = run(program, script, first, false);
        let rolled_back = run(program, script, first + 1, true);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, job) = api.get(&server.url, &format!("/v1/jobs/{committed}")).await.unwrap();
            if status == 200 {
                assert_eq!(job["payload"]["order_id"], first, "{job}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{script}: the committed order's job never appeared"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Nothing is left to drain, and the rolled-back order made nothing.
        loop {
            let (_, outbox) = api.get(&server.url, "/v1/outbox").await.unwrap();
            if outbox["entries"] == json!([]) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{script}: the outbox was not drained: {outbox}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (status, _) = api.get(&server.url, &format!("/v1/jobs/{rolled_back}")).await.unwrap();
        assert_eq!(status, 404, "{script}: a rolled-back order's job");
    }
}

/// An application enqueues inside its own transaction with
/// `steadfast.enqueue(...)`, as a role granted only that: a rolled-back
/// transaction leaves no job and no audit record; a committed one becomes
/// a job that a worker leases like any other, audited as the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_enqueues_inside_its_own_transaction() {
    let database: TestDatabase = test_support::create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let key = admin_key(&database.app_url);
    let worker_key = cli(&[
        "key",
        "create",
        "--tenant",
        "acme",
        "--role",
        "worker",
        "--database-url",
        &database.app_url,
    ]);
    let server = node(dir.path(), 0, &database.app_url);
    let api = Api::new(key.clone());

    let (mut app, connection) = tokio_postgres::connect(&application_role(&database).await, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let enqueue = "SELECT steadfast.enqueue($1, 'orders', $2::text::jsonb, $3::text::jsonb)";

    let tx = app.transaction().await.unwrap();
    tx.execute("INSERT INTO app_orders VALUES (1)", &[]).await.unwrap();
    let rolled_back: uuid::Uuid = tx
        .query_one(enqueue, &[&key, &r#"{"order": 1}"#, &"{}"])
        .await
        .unwrap()
        .get(0);
    tx.rollback().await.unwrap();

    let tx = app.transaction().await.unwrap();
    tx.execute("INSERT INTO app_orders VALUES (2)", &[]).await.unwrap();
    let committed: uuid::Uuid = tx
        .query_one(
            enqueue,
            &[&key, &r#"{"order": 2}"#, &r#"{"idempotency_key": "order-2"}"#],
        )
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    assert_eq!(committed.get_version_num(), 7, "job ids are UUIDv7");

    // A worker leases it like any other job.
    let worker = Api::new(worker_key.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let leased = loop {
        let (status, body) = worker
            .post(
                &server.url,
                "/v1/lease",
                json!({"queues": ["orders"], "worker_id": "w", "wait_ms": 1000}),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        if let Some(job) = body["jobs"].as_array().and_then(|jobs| jobs.first()) {
            break job.clone();
        }
        assert!(Instant::now() < deadline, "the committed job never became ready");
    };
    assert_eq!(leased["id"], json!(committed.to_string()));
    assert_eq!(leased["payload"], json!({"order": 2}));

    // The rolled-back one left nothing: no job, no audit record.
    let (status, _) = api.get(&server.url, &format!("/v1/jobs/{rolled_back}")).await.unwrap();
    assert_eq!(status, 404);
    let (_, trail) = api
        .get(&server.url, &format!("/v1/audit?job_id={rolled_back}"))
        .await
        .unwrap();
    assert_eq!(trail["records"], json!([]), "{trail}");
    let (_, trail) = api
        .get(
            &server.url,
            &format!("/v1/audit?job_id={committed}&action=job.enqueued"),
        )
        .await
        .unwrap();
    let record = &trail["records"][0];
    assert_eq!(record["actor"]["kind"], "key", "{trail}");
    assert_eq!(record["actor"]["key_id"], json!(key.split('_').nth(1).unwrap()));

    // Two transactions sending one key before its job is made: the second
    // waits for the first to commit, and answers the same id.
    let first_tx = app.transaction().await.unwrap();
    let first: uuid::Uuid = first_tx
        .query_one(
            enqueue,
            &[&key, &r#"{"order": 3}"#, &r#"{"idempotency_key": "order-3"}"#],
        )
        .await
        .unwrap()
        .get(0);
    let (other, connection) = tokio_postgres::connect(&application_role_url(&database), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let second = tokio::spawn({
        let key = key.clone();
        async move {
            other
                .query_one(
                    enqueue,
                    &[&key, &r#"{"order": 3}"#, &r#"{"idempotency_key": "order-3"}"#],
                )
                .await
                .unwrap()
                .get::<_, uuid::Uuid>(0)
        }
    });
    first_tx.commit().await.unwrap();
    assert_eq!(second.await.unwrap(), first, "one key, one id");

    // The same idempotency key again answers the first job, and makes no other.
    let again: uuid::Uuid = app
        .query_one(
            enqueue,
            &[&key, &r#"{"order": 2}"#, &r#"{"idempotency_key": "order-2"}"#],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, committed);
    let (db, connection) = tokio_postgres::connect(&database.owner_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(30);
    while db
        .query_one("SELECT count(*) FROM steadfast.outbox WHERE failed_at IS NULL", &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        > 0
    {
        assert!(Instant::now() < deadline, "the outbox was not drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let jobs: i64 = db
        .query_one("SELECT count(*) FROM steadfast.jobs WHERE queue = 'orders'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(jobs, 2, "order 2 and order 3, once each");

    // A request the database cannot judge (a bound the server checks) is
    // refused when its job is made, and stays in the outbox with the error.
    let refused: uuid::Uuid = app
        .query_one(enqueue, &[&key, &"{}", &r#"{"max_attempts": 0}"#])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let entry = loop {
        let (_, outbox) = api.get(&server.url, "/v1/outbox").await.unwrap();
        if let Some(entry) = outbox["entries"]
            .as_array()
            .and_then(|e| e.first())
            .filter(|e| e.get("error").is_some())
        {
            break entry.clone();
        }
        assert!(Instant::now() < deadline, "the bad entry was not refused: {outbox}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry["id"], json!(refused.to_string()));
    assert_eq!(entry["error"]["code"], "validation_failed", "{entry}");

    // The role can do nothing else, and bad calls fail inside the caller's transaction.
    for forbidden in [
        "SELECT count(*) FROM steadfast.jobs",
        "SELECT count(*) FROM steadfast.outbox",
        "SELECT * FROM steadfast.steadfast_key_by_id('x')",
    ] {
        let error = app.query(forbidden, &[]).await.unwrap_err();
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{forbidden}"
        );
    }
    let wrong_secret = format!(
        "{}{}",
        &key[..key.len() - 1],
        if key.ends_with('0') { "1" } else { "0" }
    );
    for (api_key, queue, options, state) in [
        (wrong_secret.as_str(), "orders", "{}", "28000"),
        (worker_key.as_str(), "orders", "{}", "42501"),
        (key.as_str(), "bad queue", "{}", "22023"),
        (key.as_str(), "orders", r#"{"color": "red"}"#, "22023"),
        (
            key.as_str(),
            "orders",
            r#"{"idempotency_key": "schedule:x:1"}"#,
            "22023",
        ),
    ] {
        let error = app
            .query_one(
                "SELECT steadfast.enqueue($1, $2, '{}'::jsonb, $3::text::jsonb)",
                &[&api_key, &queue, &options],
            )
            .await
            .unwrap_err();
        assert_eq!(error.code().map(|c| c.code()), Some(state), "{error}");
    }
}
