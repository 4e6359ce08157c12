//! A real server on a loopback port, over a real SQLite file in a temp dir
//! or a fresh PostgreSQL database, with a manual clock the test moves.
//! `on_both_backends!` runs each test once per backend.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;
use steadfast_core::{ApiKeySecret, Role, TenantId, TenantName, Timestamp};
use steadfast_server::{Engine, EngineConfig, ManualClock};
use steadfast_sqlite::SqliteStore;
use steadfast_store::{NewApiKey, Store, auth};

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates, for each named `async fn name(backend: Backend)`, one test per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Backend::Postgres).await;
                }
            )*
        }
    };
}

pub struct TestServer {
    pub url: String,
    pub clock: Arc<ManualClock>,
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    http: reqwest::Client,
    _storage: Box<dyn std::any::Any + Send + Sync>,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        TestServer::start_with(backend, EngineConfig::default()).await
    }

    pub async fn start_with(backend: Backend, config: EngineConfig) -> TestServer {
        let (store, storage): (Arc<dyn Store>, Box<dyn std::any::Any + Send + Sync>) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let store = SqliteStore::open(&dir.path().join("steadfast.db")).unwrap();
                (Arc::new(store), Box::new(dir))
            }
            Backend::Postgres => {
                let (store, database) = steadfast_postgres::test_support::fresh_store().await;
                (Arc::new(store), Box::new(database))
            }
        };
        let clock = Arc::new(ManualClock::new(t0()));
        let engine = Engine::new(store.clone(), clock.clone(), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = steadfast_server::router(engine.clone());
        let options = steadfast_server::serve::ServeOptions::default();
        tokio::spawn(steadfast_server::serve::serve(
            listener,
            app,
            options,
            std::future::pending(),
        ));
        TestServer {
            url,
            clock,
            engine,
            store,
            http: reqwest::Client::new(),
            _storage: storage,
        }
    }

    /// A new key for `tenant` (created on first use) with `role`.
    pub async fn key(&self, tenant: &str, role: Role) -> String {
        let name = TenantName::new(tenant).unwrap();
        let tenant = match self.store.tenant_by_name(&name).await.unwrap() {
            Some(tenant) => tenant,
            None => self
                .store
                .create_tenant(TenantId(uuid::Uuid::now_v7()), &name, t0())
                .await
                .unwrap(),
        };
        let secret = ApiKeySecret::from_random(rand::random(), rand::random());
        let key = NewApiKey {
            key_id: secret.key_id().clone(),
            name: format!("{role}"),
            role,
            secret_hash: secret.secret_hash(),
            expires_at: None,
        };
        self.store
            .create_key(&auth::local_operator(&tenant), key, t0())
            .await
            .unwrap();
        secret.reveal()
    }

    pub async fn call(&self, method: Method, path: &str, key: Option<&str>, body: Option<Value>) -> Response {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        Response {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    pub async fn raw(&self, path: &str, key: &str, content_type: Option<&str>, body: Vec<u8>) -> Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(key)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        Response {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    /// A webhook delivery: `POST {path}` with `headers` and the exact
    /// `body`, no API key.
    pub async fn hook(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> Response {
        let mut request = self.http.post(format!("{}{path}", self.url)).body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        Response {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Response {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn enqueue(&self, key: &str, body: Value) -> Value {
        let response = self.post("/v1/jobs", key, body).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
        response.json()
    }

    /// Leases one job from `queue`; panics if none is ready.
    pub async fn lease_one(&self, key: &str, queue: &str, worker: &str) -> Value {
        let response = self
            .post(
                "/v1/lease",
                key,
                serde_json::json!({"queues": [queue], "worker_id": worker}),
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
        let jobs = response.json()["jobs"].as_array().unwrap().clone();
        assert_eq!(jobs.len(), 1, "expected one leased job: {}", response.text);
        jobs[0].clone()
    }

    pub async fn job_count(&self, key: &str) -> usize {
        let response = self.get("/v1/jobs?limit=500", key).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
        response.json()["jobs"].as_array().unwrap().len()
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}
