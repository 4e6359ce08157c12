//! A typed Rust client for the Steadfast HTTP API, and a worker runtime for
//! durable workflows.
//!
//! [`Client`] covers the whole API. [`Worker`] runs handlers per queue with
//! bounded concurrency, automatic heartbeats and graceful shutdown; each
//! handler gets a [`JobContext`] whose [`step`](JobContext::step) memoizes
//! results across attempts and hands the step's stable idempotency key to the
//! code, and whose [`sleep`](JobContext::sleep),
//! [`wait_for_signal`](JobContext::wait_for_signal) and
//! [`spawn`](JobContext::spawn) park the job or enqueue children durably.
//! A runnable example: `examples/worker.rs`
//! (`cargo run -p steadfast-sdk --example worker`).
//!
//! ```no_run
//! # async fn example() -> Result<(), steadfast_sdk::Error> {
//! use steadfast_sdk::{Client, wire};
//! let client = Client::new("http://127.0.0.1:8650", "sfk_...")?;
//! let job = client
//!     .enqueue(&wire::EnqueueRequest {
//!         queue: "emails".into(),
//!         payload: serde_json::value::to_raw_value(&serde_json::json!({"to": "a@example.com"})).unwrap(),
//!         idempotency_key: Some("signup-42".into()),
//!         max_attempts: None,
//!         timeout_secs: None,
//!         run_at: None,
//!         priority: None,
//!         flow_key: None,
//!         resource: None,
//!         singleton: None,
//!         debounce_ms: None,
//!         debounce_max_ms: None,
//!         schema_version: None,
//!         producer: None,
//!     })
//!     .await?;
//! println!("{} is {:?}", job.job.id, job.job.state);
//! # Ok(()) }
//! ```

mod batch;
mod context;
mod worker;

use std::time::Duration;

pub use context::{JobContext, JobError, StepKey};
pub use worker::{Worker, WorkerConfig};

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
pub use steadfast_protocol as wire;
pub use steadfast_protocol::ErrorCode;
pub use steadfast_protocol::tls::TrustedRoots;

/// How many times a call answered `429 rate_limited` is sent again, each
/// after the `Retry-After` the server gave.
const RATE_LIMITED_RETRIES: usize = 3;
/// The longest `Retry-After` waited for; a longer one is the caller's to handle.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long to wait before sending a rate-limited request again, if the
/// server answered `429` with a `Retry-After` in seconds worth waiting for.
/// (`429 quota_exceeded` carries none: waiting would not help.)
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    if response.status() != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let seconds: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds)).filter(|wait| *wait <= MAX_RETRY_AFTER)
}

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error body.
    #[error("{status}: {code}: {message}")]
    Api {
        status: StatusCode,
        /// The stable code (docs/errors.md); `Unknown` for a code this
        /// build does not know or a body that is not an API error.
        code: ErrorCode,
        message: String,
    },
    /// The request did not get an answer (connection refused, reset, timeout):
    /// the outcome is unknown. Retry writes with an idempotency key.
    #[error("transport error: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// One item of a batch request failed: the server refused it (with
    /// its code), or the whole batch got no answer (no code).
    #[error("{}: {message}", code.map_or("no answer", ErrorCode::as_str))]
    Item { code: Option<ErrorCode>, message: String },
}

impl Error {
    /// The stable API error code, if the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(*code),
            Error::Item { code, .. } => *code,
            _ => None,
        }
    }
}

/// The answer to an enqueue: the job, and whether it was a replay.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub job: wire::Job,
    pub replayed: bool,
}

#[derive(Debug, Clone)]
pub struct Client {
    base: reqwest::Url,
    key: String,
    http: reqwest::Client,
    /// Sent as the W3C `traceparent` header on every call, if set.
    traceparent: Option<std::sync::Arc<str>>,
}

/// Filters for [`Client::list_jobs`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListJobs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<wire::JobState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl Client {
    /// A client for the server at `base_url`, authenticating with `key`.
    /// Over `https` it trusts the system's roots plus `SSL_CERT_FILE`'s
    /// ([`TrustedRoots::system`]).
    pub fn new(base_url: &str, key: &str) -> Result<Client, Error> {
        let roots = TrustedRoots::system().map_err(|error| Error::Config(error.to_string()))?;
        Client::with_roots(base_url, key, &roots)
    }

    /// Like [`Client::new`], trusting only `roots` over `https`.
    pub fn with_roots(base_url: &str, key: &str, roots: &TrustedRoots) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(roots.client_config())
            .connect_timeout(Duration::from_secs(5))
            // Long enough for the longest lease long-poll (30 s) plus slack.
            .timeout(Duration::from_secs(60))
            .build()?;
        Client::with_http(base_url, key, http)
    }

    /// Like [`Client::new`] with a caller-configured `reqwest::Client`.
    pub fn with_http(base_url: &str, key: &str, http: reqwest::Client) -> Result<Client, Error> {
        let base = reqwest::Url::parse(base_url).map_err(|e| Error::Config(format!("bad URL {base_url:?}: {e}")))?;
        Ok(Client {
            base,
            key: key.to_owned(),
            http,
            traceparent: None,
        })
    }

    /// A client whose calls carry `traceparent` (W3C trace context), so the
    /// server records them in that trace. The worker runtime uses it with the
    /// context each leased job carries; producers can pass their own.
    pub fn with_traceparent(&self, traceparent: Option<&str>) -> Client {
        Client {
            traceparent: traceparent.map(std::sync::Arc::from),
            ..self.clone()
        }
    }

    /// The trace context this client's calls carry.
    pub(crate) fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, Error> {
        self.base.join(path).map_err(|e| Error::Config(e.to_string()))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        query: Option<&ListJobs>,
    ) -> Result<(T, reqwest::header::HeaderMap, StatusCode), Error> {
        let url = self.url(path)?;
        let mut rate_limited = 0;
        let response = loop {
            let mut request = self.http.request(method.clone(), url.clone()).bearer_auth(&self.key);
            if let Some(traceparent) = &self.traceparent {
                request = request.header("traceparent", &**traceparent);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(query) = query {
                request = request.query(query);
            }
            let response = request.send().await?;
            // A rate-limited request did nothing: waiting as the server asks
            // and sending it again is safe for every call.
            match retry_after(&response) {
                Some(wait) if rate_limited < RATE_LIMITED_RETRIES => {
                    rate_limited += 1;
                    tokio::time::sleep(wait).await;
                }
                _ => break response,
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        if status.is_success() {
            // `204 No Content` (a delete) reads as JSON null, i.e. `()`.
            let body = response.bytes().await?;
            let body: &[u8] = if body.is_empty() { b"null" } else { &body };
            let value = serde_json::from_slice(body).map_err(|e| Error::Api {
                status,
                code: ErrorCode::Unknown,
                message: format!("an answer that does not parse: {e}"),
            })?;
            Ok((value, headers, status))
        } else {
            let text = response.text().await?;
            Err(match serde_json::from_str::<wire::ErrorBody>(&text) {
                Ok(body) => Error::Api {
                    status,
                    code: body.error.code,
                    message: body.error.message,
                },
                Err(_) => Error::Api {
                    status,
                    code: ErrorCode::Unknown,
                    message: text,
                },
            })
        }
    }

    pub async fn enqueue(&self, request: &wire::EnqueueRequest) -> Result<Enqueued, Error> {
        let (job, headers, _) = self.send(Method::POST, "v1/jobs", Some(request), None).await?;
        let replayed = headers
            .get(wire::IDEMPOTENT_REPLAYED_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        Ok(Enqueued { job, replayed })
    }

    pub async fn enqueue_batch(
        &self,
        request: &wire::BatchEnqueueRequest,
    ) -> Result<wire::BatchEnqueueResponse, Error> {
        Ok(self.send(Method::POST, "v1/jobs/batch", Some(request), None).await?.0)
    }

    pub async fn get_job(&self, id: &str) -> Result<wire::Job, Error> {
        Ok(self
            .send(Method::GET, &format!("v1/jobs/{id}"), None::<&()>, None)
            .await?
            .0)
    }

    pub async fn list_jobs(&self, filter: &ListJobs) -> Result<wire::JobList, Error> {
        Ok(self.send(Method::GET, "v1/jobs", None::<&()>, Some(filter)).await?.0)
    }

    /// Sends a dead or cancelled job back to the queue; `reason` goes into the audit record.
    pub async fn retry(&self, id: &str, reason: Option<&str>) -> Result<wire::Job, Error> {
        let body = wire::OperatorRequest {
            reason: reason.map(str::to_owned),
        };
        Ok(self
            .send(Method::POST, &format!("v1/jobs/{id}/retry"), Some(&body), None)
            .await?
            .0)
    }

    /// Cancels an unfinished job; `reason` goes into the audit record.
    pub async fn cancel(&self, id: &str, reason: Option<&str>) -> Result<wire::Job, Error> {
        let body = wire::OperatorRequest {
            reason: reason.map(str::to_owned),
        };
        Ok(self
            .send(Method::POST, &format!("v1/jobs/{id}/cancel"), Some(&body), None)
            .await?
            .0)
    }

    /// Runs a job again as a new job linked to it (`replay_of`); the original does not change.
    pub async fn replay(&self, id: &str, request: &wire::ReplayRequest) -> Result<wire::Job, Error> {
        Ok(self
            .send(Method::POST, &format!("v1/jobs/{id}/replay"), Some(request), None)
            .await?
            .0)
    }

    /// Settles an uncertain step; answers the job with its history.
    pub async fn resolve_step(
        &self,
        id: &str,
        step: &str,
        request: &wire::ResolveStepRequest,
    ) -> Result<wire::Job, Error> {
        Ok(self
            .send(
                Method::POST,
                &format!("v1/jobs/{id}/steps/{step}/resolve"),
                Some(request),
                None,
            )
            .await?
            .0)
    }

    pub async fn lease(&self, request: &wire::LeaseRequest) -> Result<Vec<wire::LeasedJob>, Error> {
        let response: wire::LeaseResponse = self.send(Method::POST, "v1/lease", Some(request), None).await?.0;
        Ok(response.jobs)
    }

    pub async fn heartbeat(&self, id: &str, lease_token: &str) -> Result<wire::HeartbeatResponse, Error> {
        let body = wire::HeartbeatRequest {
            lease_token: lease_token.to_owned(),
        };
        Ok(self
            .send(Method::POST, &format!("v1/jobs/{id}/heartbeat"), Some(&body), None)
            .await?
            .0)
    }

    /// Hands a leased job back unfinished (a worker shutting down): the
    /// attempt is not spent and the job is ready again at once.
    pub async fn release(&self, id: &str, lease_token: &str) -> Result<wire::Job, Error> {
        let body = wire::ReleaseRequest {
            lease_token: lease_token.to_owned(),
        };
        Ok(self
            .send(Method::POST, &format!("v1/jobs/{id}/release"), Some(&body), None)
            .await?
            .0)
    }

    pub async fn complete(&self, id: &str, lease_token: &str, output: Option<wire::Json>) -> Result<wire::Job, Error> {
        let body = wire::CompleteRequest {
            lease_token: lease_token.to_owned(),
            output,
        };
        Ok(self
            .send(Method::POST, &format!("v1/jobs/{id}/complete"), Some(&body), None)
            .await?
            .0)
    }

    /// Reports many successes in one request (committed together where the
    /// storage can). Each result stands alone: check its `error` (e.g.
    /// `lease_lost`, or `unavailable`: retry that one).
    pub async fn complete_batch(
        &self,
        completions: Vec<wire::Completion>,
    ) -> Result<Vec<wire::CompletionResult>, Error> {
        let body = wire::BatchCompleteRequest { completions };
        let (response, _, _): (wire::BatchCompleteResponse, _, _) = self
            .send(Method::POST, "v1/jobs/batch/complete", Some(&body), None)
            .await?;
        Ok(response.results)
    }

    /// Starts and checkpoints steps of many running jobs in one request.
    /// Each result stands alone: check its `error` (e.g. `lease_lost`).
    pub async fn steps_batch(&self, steps: Vec<wire::StepOperation>) -> Result<Vec<wire::StepResult>, Error> {
        let body = wire::BatchStepsRequest { steps };
        let (response, _, _): (wire::BatchStepsResponse, _, _) = self
            .send(Method::POST, "v1/jobs/batch/steps", Some(&body), None)
            .await?;
        Ok(response.results)
    }

    /// Marks a step started before its side effect.
    pub async fn start_step(&self, id: &str, step: &str, lease_token: &str) -> Result<wire::StepInfo, Error> {
        let body = wire::StartStepRequest {
            lease_token: lease_token.to_owned(),
        };
        Ok(self
            .send(
                Method::POST,
                &format!("v1/jobs/{id}/steps/{step}/start"),
                Some(&body),
                None,
            )
            .await?
            .0)
    }

    /// Checkpoints a step; returns the stored step (an earlier checkpoint's, if one won).
    pub async fn checkpoint_step(
        &self,
        id: &str,
        step: &str,
        lease_token: &str,
        output: Option<wire::Json>,
    ) -> Result<wire::StepInfo, Error> {
        let body = wire::CheckpointRequest {
            lease_token: lease_token.to_owned(),
            output,
        };
        Ok(self
            .send(Method::PUT, &format!("v1/jobs/{id}/steps/{step}"), Some(&body), None)
            .await?
            .0)
    }

    pub async fn wait(&self, id: &str, request: &wire::WaitRequest) -> Result<wire::WaitResponse, Error> {
        Ok(self
            .send(Method::POST, &format!("v1/jobs/{id}/wait"), Some(request), None)
            .await?
            .0)
    }

    pub async fn signal(
        &self,
        id: &str,
        name: &str,
        payload: Option<wire::Json>,
        reason: Option<&str>,
    ) -> Result<wire::SignalResponse, Error> {
        let body = wire::SignalRequest {
            payload,
            reason: reason.map(str::to_owned),
        };
        Ok(self
            .send(Method::POST, &format!("v1/jobs/{id}/signals/{name}"), Some(&body), None)
            .await?
            .0)
    }

    pub async fn spawn_child(&self, id: &str, request: &wire::SpawnRequest) -> Result<wire::Job, Error> {
        Ok(self
            .send(Method::POST, &format!("v1/jobs/{id}/children"), Some(request), None)
            .await?
            .0)
    }

    /// Creates a webhook source (admin key).
    pub async fn create_source(&self, request: &wire::SourceRequest) -> Result<wire::Source, Error> {
        Ok(self.send(Method::POST, "v1/sources", Some(request), None).await?.0)
    }

    pub async fn list_sources(&self) -> Result<wire::SourceList, Error> {
        Ok(self.send(Method::GET, "v1/sources", None::<&()>, None).await?.0)
    }

    pub async fn get_source(&self, id: &str) -> Result<wire::Source, Error> {
        let path = format!("v1/sources/{}", segment(id));
        Ok(self.send(Method::GET, &path, None::<&()>, None).await?.0)
    }

    /// Adds a secret to a source (admin key): a rotation.
    pub async fn add_source_secret(&self, id: &str, request: &wire::SecretRequest) -> Result<wire::SecretAdded, Error> {
        let path = format!("v1/sources/{}/secrets", segment(id));
        Ok(self.send(Method::POST, &path, Some(request), None).await?.0)
    }

    /// A page of a source's events, newest first.
    pub async fn list_source_events(
        &self,
        id: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<wire::InboxEventList, Error> {
        let mut path = format!("v1/sources/{}/events", segment(id));
        let mut separator = '?';
        if let Some(limit) = limit {
            path.push_str(&format!("{separator}limit={limit}"));
            separator = '&';
        }
        if let Some(cursor) = cursor {
            path.push_str(&format!("{separator}cursor={}", segment(cursor)));
        }
        Ok(self.send(Method::GET, &path, None::<&()>, None).await?.0)
    }

    /// Makes a new job from a stored event (admin key).
    pub async fn replay_event(&self, id: &str, event_id: &str) -> Result<wire::Replayed, Error> {
        let path = format!("v1/sources/{}/events/{}/replay", segment(id), segment(event_id));
        Ok(self.send(Method::POST, &path, None::<&()>, None).await?.0)
    }

    /// `PUT /v1/queues/{queue}/policy`: a merge patch of the queue's flow rules.
    pub async fn set_queue_policy(
        &self,
        queue: &str,
        patch: &wire::QueuePolicyRequest,
    ) -> Result<wire::QueuePolicy, Error> {
        let path = format!("v1/queues/{}/policy", segment(queue));
        Ok(self.send(Method::PUT, &path, Some(patch), None).await?.0)
    }

    pub async fn queue_policy(&self, queue: &str) -> Result<wire::QueuePolicy, Error> {
        let path = format!("v1/queues/{}/policy", segment(queue));
        Ok(self.send(Method::GET, &path, None::<&()>, None).await?.0)
    }

    /// `GET /v1/queues`: every queue with its policy, counts and held jobs.
    pub async fn list_queues(&self) -> Result<wire::QueueList, Error> {
        Ok(self.send(Method::GET, "v1/queues", None::<&()>, None).await?.0)
    }

    /// `PUT /v1/queues/{queue}/schemas/{version}`: registers a version of
    /// the queue's payload schema (admin).
    pub async fn put_schema(
        &self,
        queue: &str,
        version: u32,
        request: &wire::PutSchemaRequest,
    ) -> Result<wire::PayloadSchema, Error> {
        let path = format!("v1/queues/{}/schemas/{version}", segment(queue));
        Ok(self.send(Method::PUT, &path, Some(request), None).await?.0)
    }

    /// `GET /v1/schemas`: every registered version (one queue's if given).
    pub async fn schemas(&self, queue: Option<&str>) -> Result<wire::SchemaList, Error> {
        let path = match queue {
            Some(queue) => format!("v1/schemas?queue={}", segment(queue)),
            None => "v1/schemas".to_owned(),
        };
        Ok(self.send(Method::GET, &path, None::<&()>, None).await?.0)
    }

    pub async fn put_resource(&self, name: &str, request: &wire::ResourceRequest) -> Result<wire::Resource, Error> {
        let path = format!("v1/resources/{}", segment(name));
        Ok(self.send(Method::PUT, &path, Some(request), None).await?.0)
    }

    pub async fn get_resource(&self, name: &str) -> Result<wire::Resource, Error> {
        let path = format!("v1/resources/{}", segment(name));
        Ok(self.send(Method::GET, &path, None::<&()>, None).await?.0)
    }

    pub async fn list_resources(&self) -> Result<wire::ResourceList, Error> {
        Ok(self.send(Method::GET, "v1/resources", None::<&()>, None).await?.0)
    }

    /// `GET /v1/producers/{id}`: the highest sequence number received from
    /// a producer and the ranges below it never received.
    pub async fn producer(&self, id: &str) -> Result<wire::ProducerInfo, Error> {
        let path = format!("v1/producers/{}", segment(id));
        Ok(self.send(Method::GET, &path, None::<&()>, None).await?.0)
    }

    /// `PUT /v1/schedules/{name}`: creates or replaces a schedule (admin).
    pub async fn put_schedule(&self, name: &str, request: &wire::ScheduleRequest) -> Result<wire::ScheduleInfo, Error> {
        let path = format!("v1/schedules/{}", segment(name));
        Ok(self.send(Method::PUT, &path, Some(request), None).await?.0)
    }

    /// A schedule with its next fire times and its last tick.
    pub async fn schedule(&self, name: &str) -> Result<wire::ScheduleInfo, Error> {
        let path = format!("v1/schedules/{}", segment(name));
        Ok(self.send(Method::GET, &path, None::<&()>, None).await?.0)
    }

    pub async fn list_schedules(&self) -> Result<wire::ScheduleList, Error> {
        Ok(self.send(Method::GET, "v1/schedules", None::<&()>, None).await?.0)
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<(), Error> {
        let path = format!("v1/schedules/{}", segment(name));
        self.send::<()>(Method::DELETE, &path, None::<&()>, None)
            .await
            .map(|_| ())
    }

    /// Pauses (`true`) or resumes (`false`) a schedule (admin).
    pub async fn pause_schedule(&self, name: &str, paused: bool) -> Result<wire::ScheduleInfo, Error> {
        let action = if paused { "pause" } else { "resume" };
        let path = format!("v1/schedules/{}/{action}", segment(name));
        Ok(self
            .send(Method::POST, &path, Some(&serde_json::json!({})), None)
            .await?
            .0)
    }

    pub async fn delete_resource(&self, name: &str) -> Result<(), Error> {
        let path = format!("v1/resources/{}", segment(name));
        self.send::<()>(Method::DELETE, &path, None::<&()>, None)
            .await
            .map(|_| ())
    }

    pub async fn create_slo(&self, request: &wire::SloRequest) -> Result<wire::SloStatus, Error> {
        Ok(self.send(Method::POST, "v1/slos", Some(request), None).await?.0)
    }

    pub async fn list_slos(&self) -> Result<wire::SloList, Error> {
        Ok(self.send(Method::GET, "v1/slos", None::<&()>, None).await?.0)
    }

    pub async fn fail(
        &self,
        id: &str,
        lease_token: &str,
        error: wire::ErrorInfo,
        retryable: bool,
    ) -> Result<wire::Job, Error> {
        let body = wire::FailRequest {
            lease_token: lease_token.to_owned(),
            error,
            retryable: Some(retryable),
            retry_after_ms: None,
        };
        self.fail_with(id, &body).await
    }

    /// `POST /v1/jobs/{id}/fail` with every field of the request (e.g.
    /// `retry_after_ms` from a downstream's `Retry-After`).
    pub async fn fail_with(&self, id: &str, request: &wire::FailRequest) -> Result<wire::Job, Error> {
        Ok(self
            .send(Method::POST, &format!("v1/jobs/{id}/fail"), Some(request), None)
            .await?
            .0)
    }
}

/// `text` as one URL path segment (event ids may hold `/` or `?`).
fn segment(text: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
}
