//! Real `steadfast` processes for end-to-end tests.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use steadfast_protocol::tls::TrustedRoots;
use steadfast_protocol::tls::test_ca::IdentityFiles;

pub const BINARY: &str = env!("CARGO_BIN_EXE_steadfast");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    stderr_path: PathBuf,
}

impl ServerProcess {
    /// Starts `steadfast serve` on `data_dir` and waits (with a deadline) until it is ready.
    pub fn start(data_dir: &Path) -> ServerProcess {
        ServerProcess::start_with(data_dir, &[])
    }

    /// Like [`ServerProcess::start`], with extra `serve` flags.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> ServerProcess {
        ServerProcess::start_with_env(data_dir, extra, &[])
    }

    /// Like [`ServerProcess::start_with`], with extra environment variables.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let server = ServerProcess::spawn(data_dir, "http://127.0.0.1", extra, env);
        server.wait_ready();
        server
    }

    /// Starts `steadfast serve` terminating TLS with `identity` (named
    /// `localhost`), and waits until it answers a client trusting `ca_pem`.
    pub fn start_tls(data_dir: &Path, identity: &IdentityFiles, ca_pem: &str, extra: &[&str]) -> ServerProcess {
        let tls = [
            "--tls-cert-file",
            identity.cert.to_str().unwrap(),
            "--tls-key-file",
            identity.key.to_str().unwrap(),
        ];
        let args: Vec<&str> = tls.iter().chain(extra).copied().collect();
        let server = ServerProcess::spawn(data_dir, "https://localhost", &args, &[]);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(TrustedRoots::from_pem(ca_pem.as_bytes()).unwrap().client_config())
            .build()
            .unwrap();
        let ready = format!("{}/readyz", server.url);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        server
            .wait_until(|| runtime.block_on(async { http.get(&ready).send().await.is_ok_and(|r| r.status() == 200) }));
        server
    }

    /// Starts `steadfast serve` without waiting for it: see [`ServerProcess::wait_ready`].
    pub fn spawn_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        ServerProcess::spawn(data_dir, "http://127.0.0.1", extra, env)
    }

    fn spawn(data_dir: &Path, base: &str, extra: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let port = free_port();
        // Beside the data, not in it: a test may fill the data's filesystem.
        let stderr_path = std::env::temp_dir().join(format!("steadfast-server-{port}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let child = Command::new(BINARY)
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        ServerProcess {
            child,
            url: format!("{base}:{port}"),
            data_dir: data_dir.to_owned(),
            stderr_path,
        }
    }

    pub fn wait_ready(&self) {
        let ready = format!("{}/readyz", self.url);
        self.wait_until(|| answers_200(&ready));
    }

    fn wait_until(&self, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server did not become ready; stderr:\n{}", self.stderr());
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.key"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, with a deadline.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit in time; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI to completion.
pub fn steadfast(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// A dependency-free readiness probe: a raw HTTP/1.1 GET over loopback.
pub fn answers_200(url: &str) -> bool {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

/// A `Stripe-Signature` for `body` signed now with `secret`, computed from
/// Stripe's specification (`t={unix}.{body}`, hex HMAC-SHA256).
pub fn stripe_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Every item of a paged listing (`{field: [...], next_cursor}`) at
/// `{url}{path}`, following `next_cursor` 500 at a time.
pub async fn all_pages(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    path: &str,
    field: &str,
) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut request = http
            .get(format!("{url}{path}"))
            .bearer_auth(key)
            .query(&[("limit", "500")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let page: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
        items.extend(page[field].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
    panic!("listing did not end");
}
