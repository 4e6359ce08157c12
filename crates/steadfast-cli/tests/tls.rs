//! TLS and connection bounds of the real binary: `serve` terminating TLS
//! with a certificate from a CA the test makes, the CLI (through the SDK)
//! trusting that CA through `SSL_CERT_FILE`, and clients that hold
//! connections without sending requests.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{BINARY, ServerProcess};
use serde_json::Value;
use steadfast_protocol::tls::test_ca::TestCa;

fn enqueue(url: &str, key: &str, env: &[(&str, &str)]) -> Output {
    Command::new(BINARY)
        .args(["enqueue", "--url", url, "--key", key, "--queue", "q", "--payload", "{}"])
        .env("RUST_LOG", "warn")
        .env_remove("SSL_CERT_FILE")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn serve_terminates_tls_and_clients_trust_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("steadfast test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let identity = ca.issue(&["localhost"]).write(dir.path(), "server");
    let server = ServerProcess::start_tls(&dir.path().join("data"), &identity, &ca.pem, &[]);
    let key = server.admin_key();

    let trusted = enqueue(&server.url, &key, &[("SSL_CERT_FILE", ca_file.to_str().unwrap())]);
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    let job: Value = serde_json::from_slice(&trusted.stdout).unwrap();
    assert_eq!(job["state"], "queued");

    // The system's roots alone do not know the test's CA.
    let untrusted = enqueue(&server.url, &key, &[]);
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("transport error"), "{stderr}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = server.url.replace("https://", "http://");
    assert!(!enqueue(&plain, &key, &[]).status.success());

    let missing = enqueue(&server.url, &key, &[("SSL_CERT_FILE", "/nonexistent/ca.pem")]);
    assert_eq!(missing.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("SSL_CERT_FILE names /nonexistent/ca.pem"));
}

#[test]
fn serve_refuses_a_key_that_does_not_match_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("steadfast test CA");
    let server = ca.issue(&["localhost"]).write(dir.path(), "server");
    let other = ca.issue(&["localhost"]).write(dir.path(), "other");
    let output = Command::new(BINARY)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert-file"])
        .arg(&server.cert)
        .arg("--tls-key-file")
        .arg(&other.key)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("do not make a TLS identity"), "{stderr}");

    let half = Command::new(BINARY)
        .args(["serve", "--tls-cert-file"])
        .arg(&server.cert)
        .output()
        .unwrap();
    assert!(!half.status.success(), "a certificate without its key is refused");
}

/// Reads until the server closes the connection, or `limit` passes.
/// True if the server closed it.
fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buffer = [0; 4096];
    while Instant::now() < deadline {
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            // A 408 before closing is fine; keep reading to the end.
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {}
        }
    }
    false
}

#[test]
fn clients_that_hold_a_connection_without_a_request_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--header-read-timeout-secs", "1"]);
    let address = server.url.trim_start_matches("http://");

    // Connected, and silent.
    let mut idle = TcpStream::connect(address).unwrap();
    // Headers started, never finished (slowloris).
    let mut slow = TcpStream::connect(address).unwrap();
    slow.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n").unwrap();
    // One request answered, then idle on a kept-alive connection.
    let mut kept = TcpStream::connect(address).unwrap();
    kept.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();

    for (name, stream) in [("idle", &mut idle), ("slow", &mut slow), ("kept-alive", &mut kept)] {
        assert!(
            closed_by_server(stream, Duration::from_secs(20)),
            "the {name} connection was left open"
        );
    }
}

#[test]
fn connections_past_the_cap_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        dir.path(),
        &["--max-connections", "2", "--header-read-timeout-secs", "300"],
    );
    let address = server.url.trim_start_matches("http://").to_owned();
    // Two silent clients take both slots (the kernel queues connections
    // in order, so they are accepted before the third whenever the
    // readiness probe's slot frees).
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&address).unwrap()).collect();

    let mut third = TcpStream::connect(&address).unwrap();
    third
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut answer = Vec::new();
    let early = third.read_to_end(&mut answer);
    assert!(
        early.is_err() && answer.is_empty(),
        "a third connection was served while two held the cap: {:?}",
        String::from_utf8_lossy(&answer)
    );

    drop(held);
    third.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    third.read_to_end(&mut answer).unwrap();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn a_body_that_stalls_gets_408_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--body-read-timeout-secs", "1"]);
    let key = server.admin_key();
    let address = server.url.trim_start_matches("http://");
    let mut stalled = TcpStream::connect(address).unwrap();
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"queue\":"
    );
    stalled.write_all(head.as_bytes()).unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = [0; 512];
    let read = stalled.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

#[test]
fn a_body_trickled_past_its_deadline_gets_408_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--body-read-timeout-secs", "1"]);
    let key = server.admin_key();
    let address = server.url.trim_start_matches("http://");
    let mut trickle = TcpStream::connect(address).unwrap();
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    trickle.write_all(head.as_bytes()).unwrap();
    trickle.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    // One byte every 300 ms: each arrives well within a second of the last,
    // but the whole body never does.
    let mut answer = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if trickle.write_all(b" ").is_err() {
            break;
        }
        let mut buffer = [0; 512];
        match trickle.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

/// Over TLS the dashboard's cookies are `Secure` (never sent over plain
/// HTTP), and a form must come from the `https` origin.
#[test]
fn the_dashboards_cookies_are_secure_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("steadfast test CA");
    let identity = ca.issue(&["localhost"]).write(dir.path(), "server");
    let server = ServerProcess::start_tls(&dir.path().join("data"), &identity, &ca.pem, &[]);
    let key = server.admin_key();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(sign_in_over_tls(&server.url, &key, &ca.pem));
}

async fn sign_in_over_tls(url: &str, key: &str, ca_pem: &str) {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookies = |response: &reqwest::Response| -> Vec<String> {
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    let login = http.get(format!("{url}/ui/login")).send().await.unwrap();
    let login_cookie = cookies(&login)
        .into_iter()
        .find(|c| c.starts_with("sf_login="))
        .unwrap();
    assert!(
        login_cookie.contains("Secure") && login_cookie.contains("HttpOnly"),
        "{login_cookie}"
    );
    let html = login.text().await.unwrap();
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = &html[at..at + html[at..].find('"').unwrap()];
    let pair = login_cookie.split(';').next().unwrap().to_owned();
    let form = format!("api_key={key}&csrf={csrf}&next=%2Fui");
    let post = |origin: String| {
        http.post(format!("{url}/ui/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", pair.clone())
            .header("origin", origin)
            .body(form.clone())
            .send()
    };
    let plain_origin = post(url.replace("https://", "http://")).await.unwrap();
    assert_eq!(plain_origin.status(), 403, "the http origin is another site");
    let signed = post(url.to_owned()).await.unwrap();
    assert_eq!(signed.status(), 303);
    let session = cookies(&signed)
        .into_iter()
        .find(|c| c.starts_with("sf_session="))
        .unwrap();
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(session.contains(attribute), "{session}");
    }
}
