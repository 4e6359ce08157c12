//! Steadfast's HTTP/JSON wire types: what goes over `/v1`, shared by the
//! server, the Rust SDK and the CLI. The OpenAPI document is generated from
//! these definitions.
//!
//! Invariant: only this crate defines serialised API types; the server maps
//! core types to these and back, and the core knows nothing of JSON.
//!
//! Times are RFC 3339 strings in UTC. Payloads and outputs are arbitrary JSON,
//! passed through untouched. Requests reject unknown fields, so a misspelt
//! option is an error instead of a silent default.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

pub mod tls;

/// Arbitrary JSON, kept byte for byte.
pub type Json = Box<RawValue>;

/// Request header that marks a response replayed from an idempotency key.
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";
/// On a `200` to an enqueue with a singleton key that already had an
/// unfinished job: `skipped` or `replaced`.
pub const SINGLETON_HEADER: &str = "steadfast-singleton";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Scheduled,
    Queued,
    Running,
    Waiting,
    Succeeded,
    Dead,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    LeaseExpired,
    TimedOut,
    Cancelled,
    Suspended,
    /// The worker handed the job back unfinished (`POST /v1/jobs/{id}/release`).
    Released,
}

/// What is known about a workflow step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Checkpointed; its output is final.
    Completed,
    /// Started by the running attempt.
    Started,
    /// Started by an attempt that ended before the checkpoint: the side effect
    /// may or may not have happened; reconcile before acting again.
    Uncertain,
}

/// `POST /v1/jobs`, and each item of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// 1–128 bytes of ASCII letters, digits and `-_.:`.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$")]
    pub queue: String,
    /// Any JSON value; handed to the worker unchanged.
    #[schema(value_type = serde_json::Value)]
    pub payload: Json,
    /// Within the dedup window (default 48 h), the same key returns the
    /// original job instead of creating another; the same key with a
    /// different request is refused with `idempotency_key_reused`.
    /// 1–255 printable ASCII bytes, no spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]+$")]
    pub idempotency_key: Option<String>,
    /// Attempts before the job is `dead` (default 25, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<i64>,
    /// Each attempt's hard deadline in seconds (default 300, at most 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_secs: Option<i64>,
    /// Not before this time; in the future, the job starts `scheduled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub run_at: Option<Timestamp>,
    /// -100 to 100, default 0; higher runs first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -100, maximum = 100)]
    pub priority: Option<i64>,
    /// What the queue's per-key rules (`key_concurrency`, `key_rate`,
    /// `fairness`) count the job under, e.g. a customer or account id:
    /// 1–128 bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128)]
    pub flow_key: Option<String>,
    /// The downstream the job calls (e.g. `stripe`), whose limits and
    /// circuit breaker hold it: 1–128 bytes of ASCII letters, digits and `-_.:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$")]
    pub resource: Option<String>,
    /// At most one unfinished job of the queue per `singleton.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singleton: Option<SingletonRequest>,
    /// With a singleton: run the job only once no enqueue of its key came
    /// for this long (1 to 86400000 ms); the last payload wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub debounce_ms: Option<i64>,
    /// With `debounce_ms`: never later than this after the first enqueue
    /// (at least `debounce_ms`, at most 86400000; default 10 × `debounce_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub debounce_max_ms: Option<i64>,
    /// Validate the payload against this version of the queue's schema
    /// instead of the latest (`PUT /v1/queues/{queue}/schemas/{version}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2_147_483_647)]
    pub schema_version: Option<i64>,
    /// A numbered message of a producer (an edge collector): a repeated
    /// `(id, sequence)` is a replay, like an idempotency key (so the two
    /// do not go together), and holes in a producer's numbers are tracked
    /// (`GET /v1/producers/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<ProducerRequest>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProducerRequest {
    /// 1–128 bytes of ASCII letters, digits and `-_.:`.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$")]
    pub id: String,
    /// The message's number: the producer counts 1, 2, 3, …
    #[schema(minimum = 1)]
    pub sequence: i64,
}

/// A range of a producer's sequence numbers never received, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SequenceRange {
    pub start: u64,
    pub end: u64,
}

/// `GET /v1/producers/{id}`: what Steadfast received of a producer's numbers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProducerInfo {
    pub id: String,
    /// The highest sequence number received.
    pub highest_sequence: u64,
    /// Numbers from 1 to `highest_sequence` never received, lowest first
    /// (at most 1000 ranges; older ones are counted in `forgotten`).
    pub missing: Vec<SequenceRange>,
    /// How many numbers `missing` covers.
    pub missing_count: u64,
    /// Holes that ever opened, filled since or not.
    pub gaps_total: u64,
    /// Missing numbers no longer listed, to keep `missing` bounded.
    pub forgotten: u64,
    #[schema(value_type = String, format = DateTime)]
    pub first_seen_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: Timestamp,
}

/// A request written with `steadfast.enqueue(...)` (PostgreSQL) whose job
/// is not made yet, or was refused.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutboxEntry {
    /// The id `steadfast.enqueue` returned: the job's id once it is made.
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    /// The id of the API key it was sent with.
    pub key_id: String,
    /// The request, in the shape of `POST /v1/jobs`.
    #[schema(value_type = serde_json::Value)]
    pub request: Json,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Times a node took it up.
    pub attempts: u32,
    /// Why its job was refused for good (absent while it waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub failed_at: Option<Timestamp>,
}

/// `GET /v1/outbox`: the tenant's entries still in the outbox, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutboxList {
    pub entries: Vec<OutboxEntry>,
}

/// `GET /v1/producers`: the tenant's producers by id.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProducerList {
    pub producers: Vec<ProducerInfo>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// What an enqueue does when its singleton key already has an unfinished job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SingletonMode {
    /// Answer `200` with the existing job (the default without a debounce).
    Skip,
    /// Give the existing job, while it has not started, this payload (the
    /// default, and the only mode, with a debounce). A job that already
    /// runs is refused with `409 singleton_running`.
    Replace,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SingletonRequest {
    /// 1–128 bytes, no control characters.
    #[schema(min_length = 1, max_length = 128)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SingletonMode>,
}

/// `POST /v1/jobs/batch`: all jobs are created, or none.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchEnqueueRequest {
    /// At most 1000 (configurable).
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<EnqueueRequest>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchEnqueueResponse {
    /// In request order.
    pub jobs: Vec<BatchItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchItem {
    pub job: Job,
    /// The idempotency key matched an earlier request; `job` is its job.
    pub replayed: bool,
    /// `skipped` or `replaced`: the singleton key had an unfinished job,
    /// and `job` is that job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singleton: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorInfo {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// The current lease of a running job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseInfo {
    pub worker_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// The attempt's hard deadline; heartbeats never extend past it.
    #[schema(value_type = String, format = DateTime)]
    pub deadline: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub queue: String,
    pub state: JobState,
    #[schema(value_type = serde_json::Value)]
    pub payload: Json,
    pub priority: i32,
    #[schema(value_type = String, format = DateTime)]
    pub run_at: Timestamp,
    /// Attempts started so far.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Attempts left before the job is `dead`.
    pub attempts_left: u32,
    pub timeout_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singleton_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub output: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorInfo>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    /// What a `waiting` job waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitInfo>,
    /// The job whose step enqueued this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentInfo>,
    /// The job this one replays (`POST /v1/jobs/{id}/replay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<uuid::Uuid>,
    /// The version of the queue's payload schema the payload was validated
    /// against; absent when the queue had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// Every attempt, oldest first, the running one last without an end.
    /// Present in `GET /v1/jobs/{id}` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptInfo>>,
    /// Workflow steps in the order they were first recorded. `GET /v1/jobs/{id}` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepInfo>>,
    /// Signals delivered, oldest first. `GET /v1/jobs/{id}` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<Vec<SignalInfo>>,
    /// Jobs enqueued by this job's steps. `GET /v1/jobs/{id}` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<ChildInfo>>,
    /// The webhook event this job was made from. `GET /v1/jobs/{id}` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<JobEventInfo>,
}

/// Where a job made by the webhook inbox came from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobEventInfo {
    pub source_id: String,
    pub event_id: String,
    /// Made by `POST /v1/sources/{id}/events/{event_id}/replay`, not by the delivery.
    pub replay: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WaitInfo {
    /// The step that waits.
    pub step: String,
    /// The awaited signal; absent for a sleep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// When a sleep ends, or when a signal wait times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub until: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ParentInfo {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub step: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChildInfo {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub queue: String,
    pub state: JobState,
    /// The parent's step that enqueued it.
    pub step: String,
}

/// A workflow step.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepInfo {
    pub name: String,
    pub state: StepState,
    /// The attempt that completed the step, or last started it.
    pub attempt: u32,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub output: Option<Json>,
    /// Stable across attempts: `<job id>/<step name>`. Hand it to downstream
    /// APIs that honour idempotency keys.
    pub idempotency_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignalInfo {
    pub name: String,
    #[schema(value_type = serde_json::Value)]
    pub payload: Json,
    #[schema(value_type = String, format = DateTime)]
    pub received_at: Timestamp,
    /// When a wait consumed it; absent while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub consumed_at: Option<Timestamp>,
}

/// One attempt in a job's history. The running attempt has no end yet.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptInfo {
    pub attempt: u32,
    pub worker_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AttemptOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A queue name, for schemas: 1–128 bytes of ASCII letters, digits and `-_.:`.
#[derive(Debug)]
pub struct QueueNameSchema;

impl utoipa::PartialSchema for QueueNameSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(128))
            .pattern(Some(r"^[A-Za-z0-9_.:-]+$"))
            .into()
    }
}

impl ToSchema for QueueNameSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "QueueName".into()
    }
}

/// `POST /v1/lease`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// Queues to take jobs from (1–32), each a queue name.
    #[schema(min_items = 1, max_items = 32, value_type = Vec<QueueNameSchema>)]
    pub queues: Vec<String>,
    /// Most jobs to take (default 1, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_jobs: Option<u32>,
    /// Wait up to this long for a job when none is ready (default 0, at most 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 30000)]
    pub wait_ms: Option<u64>,
    /// The worker's own name, shown in attempt history (1–128 printable ASCII bytes, no spaces).
    #[schema(min_length = 1, max_length = 128, pattern = r"^[\x21-\x7E]+$")]
    pub worker_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeasedJob {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub queue: String,
    #[schema(value_type = serde_json::Value)]
    pub payload: Json,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Present it to heartbeat, complete and fail.
    pub lease_token: String,
    #[schema(value_type = String, format = DateTime)]
    pub lease_expires_at: Timestamp,
    /// The attempt's hard deadline.
    #[schema(value_type = String, format = DateTime)]
    pub deadline: Timestamp,
    /// How long each lease or heartbeat lasts: heartbeat well within it
    /// (a third is a good rhythm).
    pub lease_ttl_ms: u64,
    /// Completed steps (name → output): replay these instead of running them again.
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    pub steps: std::collections::BTreeMap<String, Json>,
    /// Steps an earlier attempt started but never checkpointed (name → that
    /// attempt): their side effects may or may not have happened.
    #[serde(default)]
    pub uncertain_steps: std::collections::BTreeMap<String, UncertainStep>,
    /// The job's W3C trace context: send it back as the `traceparent` header
    /// on calls made for this job so they join the job's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The key the queue's per-key rules count the job under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_key: Option<String>,
    /// The downstream the job calls: fail with `error.kind`
    /// `downstream_unavailable`, `timeout` or `rate_limited` when it lets you down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The version of the queue's payload schema the payload passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
}

/// The attempt that started a step and ended before its checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UncertainStep {
    pub attempt: u32,
    pub worker_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    /// When that attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub attempt_ended_at: Option<Timestamp>,
    /// How that attempt ended (`lease_expired`, `timed_out`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_outcome: Option<AttemptOutcome>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseResponse {
    pub jobs: Vec<LeasedJob>,
}

/// `POST /v1/jobs/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub lease_token: String,
}

/// `POST /v1/jobs/{id}/release`: hand a leased job back unfinished (a
/// worker shutting down). The attempt ends `released` without being spent,
/// and the job is `queued` again at once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub lease_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    #[schema(value_type = String, format = DateTime)]
    pub lease_expires_at: Timestamp,
}

/// `POST /v1/jobs/{id}/complete`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub lease_token: String,
    /// Any JSON value; `null` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub output: Option<Json>,
}

/// `POST /v1/jobs/batch/complete`: report many successes in one request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCompleteRequest {
    /// At most the server's batch limit (1,000 by default).
    pub completions: Vec<Completion>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub lease_token: String,
    /// Any JSON value; `null` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub output: Option<Json>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchCompleteResponse {
    /// One per completion, in request order.
    pub results: Vec<CompletionResult>,
}

/// Either `state` (the job's state after completing) or `error` (why this
/// one was refused; nothing changed for it, e.g. `lease_lost`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompletionResult {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// `POST /v1/jobs/{id}/fail`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub lease_token: String,
    /// `message` is cut to 4096 bytes.
    pub error: ErrorInfo,
    /// `false` sends the job to `dead` at once (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// The job waits at least this long before its next attempt, whatever
    /// the backoff says (e.g. a downstream's `Retry-After`): 0 to 86400000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    pub retry_after_ms: Option<u64>,
}

/// Every error code the API returns, with its status (docs/errors.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MalformedJson,
    ValidationFailed,
    Unauthorized,
    Forbidden,
    NotFound,
    RouteNotFound,
    MethodNotAllowed,
    LeaseLost,
    InvalidState,
    PayloadTooLarge,
    UnsupportedMediaType,
    IdempotencyKeyReused,
    BatchTooLarge,
    LimitExceeded,
    Internal,
    Unavailable,
    StorageFull,
    RateLimited,
    RequestTimeout,
    QuotaExceeded,
    SignatureInvalid,
    TimestampOutOfTolerance,
    SingletonRunning,
    SchemaIncompatible,
    PayloadInvalid,
    OutputInvalid,
    /// A code this build does not know (from a newer server). Never sent.
    #[serde(other, skip_serializing)]
    Unknown,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::MalformedJson,
        ErrorCode::ValidationFailed,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::LeaseLost,
        ErrorCode::InvalidState,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::BatchTooLarge,
        ErrorCode::LimitExceeded,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::StorageFull,
        ErrorCode::RateLimited,
        ErrorCode::RequestTimeout,
        ErrorCode::QuotaExceeded,
        ErrorCode::SignatureInvalid,
        ErrorCode::TimestampOutOfTolerance,
        ErrorCode::SingletonRunning,
        ErrorCode::SchemaIncompatible,
        ErrorCode::PayloadInvalid,
        ErrorCode::OutputInvalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::LeaseLost => "lease_lost",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::SignatureInvalid => "signature_invalid",
            ErrorCode::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            ErrorCode::SingletonRunning => "singleton_running",
            ErrorCode::SchemaIncompatible => "schema_incompatible",
            ErrorCode::PayloadInvalid => "payload_invalid",
            ErrorCode::OutputInvalid => "output_invalid",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The HTTP status the code is answered with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::MalformedJson => 400,
            ErrorCode::Unauthorized | ErrorCode::SignatureInvalid | ErrorCode::TimestampOutOfTolerance => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound | ErrorCode::RouteNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::LeaseLost
            | ErrorCode::InvalidState
            | ErrorCode::SingletonRunning
            | ErrorCode::SchemaIncompatible => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::ValidationFailed
            | ErrorCode::IdempotencyKeyReused
            | ErrorCode::BatchTooLarge
            | ErrorCode::LimitExceeded
            | ErrorCode::PayloadInvalid
            | ErrorCode::OutputInvalid => 422,
            ErrorCode::RateLimited | ErrorCode::QuotaExceeded => 429,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
            ErrorCode::Unavailable | ErrorCode::StorageFull => 503,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable; see docs/errors.md.
    pub code: ErrorCode,
    /// For humans; may change between releases.
    pub message: String,
    /// With `payload_invalid`, `output_invalid` and `schema_incompatible`:
    /// each violation, where it is and the rule it broke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<Violation>>,
}

/// One reason a payload, an output or a schema was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Violation {
    /// JSON Pointer: into the payload or output (`payload_invalid`,
    /// `output_invalid`), or into the new schema (`schema_incompatible`).
    pub pointer: String,
    /// The JSON Schema keyword that failed (e.g. `required`, `type`), or
    /// the compatibility rule broken (e.g. `required_added`, `type_narrowed`).
    pub rule: String,
    pub message: String,
}

/// `PUT /v1/queues/{queue}/schemas/{version}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSchemaRequest {
    /// A JSON Schema (draft 2020-12) every payload of the queue must pass.
    #[schema(value_type = serde_json::Value)]
    pub schema: Json,
    /// A JSON Schema (draft 2020-12) every output of the queue's jobs
    /// validated against this version must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub output_schema: Option<Json>,
    /// Register even though the version breaks the previous one; needs a `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Why (1–1000 bytes); required with `force`, recorded in the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 1000)]
    pub reason: Option<String>,
}

/// A registered version of a queue's payload schema.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PayloadSchema {
    pub queue: String,
    pub version: u32,
    #[schema(value_type = serde_json::Value)]
    pub schema: Json,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub output_schema: Option<Json>,
    /// Registered with `force` although it breaks the previous version.
    pub forced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// What a schedule's tick does when the previous tick's job is unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleOverlap {
    /// The tick is skipped (the default).
    Skip,
    /// The tick's job is enqueued anyway.
    Allow,
}

/// What happens to ticks missed while no node was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleCatchUp {
    /// They are skipped (the default).
    None,
    /// The latest of them fires once.
    Latest,
}

/// What became of a schedule's last tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TickOutcome {
    Fired,
    /// The previous tick's job was unfinished (`overlap: skip`).
    SkippedOverlap,
    /// No node was running at the tick (`catch_up: none`).
    Missed,
    /// The queue refused the job (its schema, the tenant's quota).
    Failed,
}

/// `PUT /v1/schedules/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// 5 fields (`minute hour day-of-month month day-of-week`), or 6 with
    /// seconds first; Vixie cron's syntax with `L`, `W` and `#`; Sunday is 0 or 7.
    #[schema(min_length = 1, max_length = 256)]
    pub cron: String,
    /// An IANA time zone, e.g. `Europe/Berlin` (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 64)]
    pub timezone: Option<String>,
    /// 1–128 bytes of ASCII letters, digits and `-_.:`.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$")]
    pub queue: String,
    /// Each tick's job's payload; checked against the queue's schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub payload: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<ScheduleOverlap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<ScheduleCatchUp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleInfo {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub queue: String,
    #[schema(value_type = serde_json::Value)]
    pub payload: Json,
    pub overlap: ScheduleOverlap,
    pub catch_up: ScheduleCatchUp,
    pub paused: bool,
    /// The next 5 ticks (none while paused).
    #[schema(value_type = Vec<String>)]
    pub next_fire_times: Vec<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_tick_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<TickOutcome>,
    /// The job of the last tick that fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub last_job_id: Option<uuid::Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// `GET /v1/schedules`: the tenant's schedules by name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleInfo>,
}

/// `GET /v1/schemas`: every version, by queue then version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SchemaList {
    pub schemas: Vec<PayloadSchema>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or why the server is not ready (`draining`, `storage_unavailable`).
    pub status: String,
}

/// `POST /v1/jobs/{id}/steps/{name}/start`: mark a step started before its side effect.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartStepRequest {
    pub lease_token: String,
}

/// `PUT /v1/jobs/{id}/steps/{name}`: checkpoint a step's result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRequest {
    pub lease_token: String,
    /// Any JSON value; `null` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub output: Option<Json>,
}

/// `POST /v1/jobs/batch/steps`: start and checkpoint steps of many running
/// jobs in one request (what `POST /v1/jobs/{id}/steps/{name}/start` and
/// `PUT /v1/jobs/{id}/steps/{name}` do, one item each).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchStepsRequest {
    /// At most the server's batch limit (1,000 by default). Decided in
    /// order: a later item sees what an earlier one recorded.
    #[schema(min_items = 1, max_items = 1000)]
    pub steps: Vec<StepOperation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepAction {
    /// Mark the step started, before its side effect.
    Start,
    /// Store the step's output; the first checkpoint wins.
    Checkpoint,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepOperation {
    /// The job's id.
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub lease_token: String,
    /// The step's name.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$")]
    pub step: String,
    pub action: StepAction,
    /// `checkpoint` only: any JSON value; `null` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub output: Option<Json>,
    /// The attempt's W3C trace context (what the single-step routes take as
    /// the `traceparent` header): the parent of the step's span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchStepsResponse {
    /// One per operation, in request order.
    pub results: Vec<StepResult>,
}

/// Either `info` or `error` (why this one was refused; nothing changed for
/// it, e.g. `lease_lost`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepResult {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub step: String,
    /// The step after the operation: for a start, `started`, or `completed`
    /// by an earlier checkpoint (then do not run it again); for a
    /// checkpoint, the stored output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<StepInfo>,
    /// Checkpoints only: `true` when this checkpoint stored its output (the
    /// single route's `201`), `false` when an earlier one had won.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// `POST /v1/jobs/{id}/wait`: park the job in step `step` until a time or a
/// signal. Give exactly one of `sleep_ms`, `until` or `signal`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitRequest {
    pub lease_token: String,
    /// The waiting step's name; its output records how the wait ended.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$")]
    pub step: String,
    /// Sleep this long, measured by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_ms: Option<u64>,
    /// Sleep until this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub until: Option<Timestamp>,
    /// Wait for this signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$")]
    pub signal: Option<String>,
    /// With `signal`: give up after this long (the step then ends `timed_out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WaitResponse {
    /// `true`: the attempt ended and the job is `waiting`; stop working on it.
    /// `false`: the step is complete (`step.output` says how the wait ended); carry on.
    pub suspended: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepInfo>,
}

/// `POST /v1/jobs/{id}/signals/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// Any JSON value; handed to the waiting step. `null` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub payload: Option<Json>,
    /// Why an operator sent it (1–1000 bytes): kept in the audit record,
    /// with the key that sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/jobs/{id}/retry` and `POST /v1/jobs/{id}/cancel`. The body is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorRequest {
    /// Why (1–1000 bytes): kept in the audit record, with the key that acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What an operator found out about an uncertain step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepResolution {
    /// The side effect happened: the step is completed with `output`, and
    /// later attempts replay it.
    Succeeded,
    /// It failed or must not happen: the job ends `dead` (kind
    /// `step_failed`), and the step runs afresh if the job is retried.
    Failed,
    /// It did not happen: the next attempt runs the step again.
    Reexecute,
}

/// `POST /v1/jobs/{id}/steps/{name}/resolve`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveStepRequest {
    pub outcome: StepResolution,
    /// The step's output, for `succeeded` only (`null` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub output: Option<Json>,
    /// Why (1–1000 bytes): kept in the audit record, with the key that acted.
    pub reason: String,
}

/// `POST /v1/jobs/{id}/replay`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The new job's payload; the original's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub payload: Option<Json>,
    /// Why (1–1000 bytes): kept in the audit record, with the key that acted.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignalResponse {
    /// The job was waiting for this signal and is queued again; otherwise the
    /// signal is kept for the job's next wait on this name.
    pub woke: bool,
    pub job: Job,
}

/// `POST /v1/jobs/{id}/children`: enqueue a child job from a step, once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    pub lease_token: String,
    /// The parent's step; one child per (parent, step), whatever the attempt.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$")]
    pub step: String,
    /// The child. Its `idempotency_key` is derived from the parent and step.
    pub job: EnqueueRequest,
}

/// Who made an audited change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditActor {
    /// `key`, `operator` (local administration) or `system` (Steadfast itself).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub name: String,
}

/// One record of a tenant's tamper-evident audit chain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    /// Position in the tenant's chain: 1, 2, 3, … without gaps.
    pub seq: u64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub actor: AuditActor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Stable dotted name: `job.enqueued`, `step.completed`, `key.revoked`, … (docs/audit.md).
    pub action: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub job_id: Option<uuid::Uuid>,
    /// What changed.
    #[schema(value_type = serde_json::Value)]
    pub summary: Json,
    /// Hex SHA-256 of the previous record (zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 over this record's canonical content and `prev_hash`.
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// Oldest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A signed checkpoint of a tenant's chain: keep it somewhere the database's
/// administrators cannot reach, and `steadfast audit verify --checkpoint FILE`
/// will catch any later truncation or rewrite before it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditCheckpoint {
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: uuid::Uuid,
    /// The last record's sequence number (0 for an empty chain).
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// `ed25519`.
    pub algorithm: String,
    /// Hex public key of the signing key (which lives outside the database).
    pub public_key: String,
    /// Hex signature over `steadfast-audit-checkpoint/v1\n<tenant>\n<seq>\n<hash>\n<at ms>`.
    pub signature: String,
}

/// `GET /v1/audit/verify`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    pub intact: bool,
    /// Records checked.
    pub records: u64,
    /// The last verified sequence number.
    pub head_seq: u64,
    /// The first problem found, naming the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// `POST /v1/slos`: an objective for one queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SloRequest {
    /// Unique in the tenant: 1–64 ASCII letters, digits and `-_.:`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")]
    pub name: String,
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$")]
    pub queue: String,
    /// Target share of good events, above 0 and below 1 (e.g. 0.99).
    #[schema(exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    pub objective: f64,
    /// With this, a good event is a job that succeeded within this many
    /// milliseconds of being enqueued; without, one that succeeded at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub latency_threshold_ms: Option<u64>,
    /// The compliance window (default 28, at most 90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 90)]
    pub window_days: Option<u32>,
    /// Where alert changes are POSTed (delivered as durable jobs, retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SloAlert {
    /// `page` or `ticket`.
    pub severity: String,
    #[schema(value_type = String, format = DateTime)]
    pub since: Timestamp,
}

/// An SLO and where it stands now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SloStatus {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub name: String,
    pub queue: String,
    pub objective: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_threshold_ms: Option<u64>,
    pub window_days: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// Share of the window's error budget left (negative when overspent).
    pub budget_remaining: f64,
    /// Burn rate per alerting window (`5m`, `30m`, `1h`, `2h`, `6h`, `1d`, `3d`).
    pub burn_rates: std::collections::BTreeMap<String, f64>,
    /// Alerts firing as of the last evaluation.
    pub alerts: Vec<SloAlert>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SloList {
    pub slos: Vec<SloStatus>,
}

/// `PUT /v1/queues/{queue}/retention`: how long the queue keeps finished
/// jobs. A field left out (or null) follows the server's default
/// (`--retain-succeeded`, `--retain-failed`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueRetentionRequest {
    /// Seconds a succeeded job is kept after it finished: 1 to 315360000 (10 years).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 315_360_000)]
    pub retain_succeeded_secs: Option<u64>,
    /// Seconds a dead or cancelled job is kept after it finished: 1 to 315360000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 315_360_000)]
    pub retain_failed_secs: Option<u64>,
}

/// A queue's retention: its own settings (null where it follows the
/// server) and what applies.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueRetention {
    pub queue: String,
    pub retain_succeeded_secs: Option<u64>,
    pub retain_failed_secs: Option<u64>,
    /// What applies: the queue's own, else the server's.
    pub effective_succeeded_secs: u64,
    pub effective_failed_secs: u64,
}

/// A field that may be absent (left as it is), `null` (cleared) or a value
/// (set): what `Option<Option<T>>` holds once this reads it.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Lease grants per period, enforced with GCRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Grants per period: 1 to 1000000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub limit: u32,
    /// The period in milliseconds: 1 to 86400000 (a day).
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub period_ms: u64,
    /// Grants allowed at once after a quiet spell: 1 to 1000000; default `limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub burst: Option<u32>,
}

/// How a queue shares leases between the keys of its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fairness {
    /// Keys take turns (deficit round robin: a key gets `weights[key]`
    /// leases per turn, 1 by default).
    FlowKey,
}

/// Retries may be at most `ratio` × first attempts, plus a reserve of
/// `min_per_sec`. A retry over budget is deferred, not failed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries allowed per first attempt: 0 to 100 (e.g. 0.1).
    #[schema(minimum = 0, maximum = 100)]
    pub ratio: f64,
    /// Retries per second allowed whatever the ratio: 0 to 100000; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100_000)]
    pub min_per_sec: Option<f64>,
}

/// `PUT /v1/queues/{queue}/policy`: a merge patch. A field left out stays
/// as it is, `null` removes the rule, a value sets it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueuePolicyRequest {
    /// No lease is granted while true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Running jobs of the queue: 1 to 1000000.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>, nullable, minimum = 1, maximum = 1_000_000)]
    pub concurrency: Option<Option<u32>>,
    /// Running jobs per `flow_key`: 1 to 1000000.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>, nullable, minimum = 1, maximum = 1_000_000)]
    pub key_concurrency: Option<Option<u32>>,
    /// Lease grants of the queue.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Rate>, nullable)]
    pub rate: Option<Option<Rate>>,
    /// Lease grants per `flow_key`.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Rate>, nullable)]
    pub key_rate: Option<Option<Rate>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Fairness>, nullable)]
    pub fairness: Option<Option<Fairness>>,
    /// Fairness weights (1 to 100) of particular keys, replacing the
    /// stored ones (`null` removes them all); other keys weigh 1. At most 1000 keys.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, u32>>, nullable)]
    pub weights: Option<Option<std::collections::BTreeMap<String, u32>>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<RetryBudget>, nullable)]
    pub retry_budget: Option<Option<RetryBudget>>,
}

/// A queue's flow policy: the rules its leases obey.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueuePolicy {
    pub queue: String,
    pub paused: bool,
    pub concurrency: Option<u32>,
    pub key_concurrency: Option<u32>,
    pub rate: Option<Rate>,
    pub key_rate: Option<Rate>,
    pub fairness: Option<Fairness>,
    #[serde(default)]
    pub weights: std::collections::BTreeMap<String, u32>,
    pub retry_budget: Option<RetryBudget>,
}

/// Unfinished jobs of a queue by state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct QueueCounts {
    pub scheduled: u64,
    pub queued: u64,
    pub running: u64,
    pub waiting: u64,
}

/// Running jobs of one `flow_key`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyRunning {
    pub flow_key: String,
    pub running: u64,
}

/// Ready jobs that flow control holds now, by reason. A job held for
/// several reasons counts under the first: paused, breaker_open,
/// concurrency, key_concurrency, rate, retry_budget.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct HeldJobs {
    pub paused: u64,
    pub breaker_open: u64,
    pub concurrency: u64,
    pub key_concurrency: u64,
    pub rate: u64,
    pub retry_budget: u64,
}

/// A queue with its policy and live state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueInfo {
    pub queue: String,
    pub policy: QueuePolicy,
    pub counts: QueueCounts,
    /// Running jobs of the busiest keys, most first (at most ten).
    pub busiest_keys: Vec<KeyRunning>,
    pub held: HeldJobs,
}

/// `GET /v1/queues`: the queues with unfinished jobs or a policy, by name
/// (at most 1000).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueInfo>,
}

/// A circuit breaker: it opens when, within `window_secs`, at least
/// `min_requests` outcomes were reported and `failure_ratio` of them
/// failed; stays open `open_secs`; then grants `half_open_probes` leases,
/// and the first of their outcomes closes it (success) or reopens it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Above 0, at most 1.
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub failure_ratio: f64,
    /// 1 to 1000000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub min_requests: u32,
    /// 1 to 86400.
    #[schema(minimum = 1, maximum = 86_400)]
    pub window_secs: u32,
    /// 1 to 86400.
    #[schema(minimum = 1, maximum = 86_400)]
    pub open_secs: u32,
    /// 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub half_open_probes: u32,
}

/// `PUT /v1/resources/{name}`: the resource's whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerConfig>,
    /// Running jobs of the resource, over all queues: 1 to 1000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub concurrency: Option<u32>,
    /// Lease grants of the resource's jobs, over all queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerStatus {
    Closed,
    Open,
    HalfOpen,
}

/// The current window of a closed breaker: outcomes reported since it began.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BreakerWindow {
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    pub requests: u32,
    pub failures: u32,
}

/// A downstream: its limits, and its breaker's state now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Resource {
    pub name: String,
    pub breaker: Option<BreakerConfig>,
    pub concurrency: Option<u32>,
    pub rate: Option<Rate>,
    pub state: BreakerStatus,
    pub window: BreakerWindow,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub opened_at: Option<Timestamp>,
    /// Probes granted since the breaker went half-open, not yet reported.
    pub probes_granted: u32,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// `GET /v1/resources`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResourceList {
    pub resources: Vec<Resource>,
}

/// What a source's deliveries are verified as: Stripe, GitHub, Standard
/// Webhooks (and Svix), Shopify, Slack, or a configured HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Stripe,
    Github,
    Standard,
    Shopify,
    Slack,
    Hmac,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Stripe => "stripe",
            SourceKind::Github => "github",
            SourceKind::Standard => "standard",
            SourceKind::Shopify => "shopify",
            SourceKind::Slack => "slack",
            SourceKind::Hmac => "hmac",
        }
    }
}

/// `POST /v1/sources`: where one provider delivers webhooks, and the queue
/// its events become jobs in.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceRequest {
    /// Unique in the tenant: 1–64 ASCII letters, digits and `-_.:`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:-]+$")]
    pub name: String,
    pub kind: SourceKind,
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$")]
    pub queue: String,
    /// The signing secret, as the provider shows it (required for stripe,
    /// shopify and slack, which make it). Without one, Steadfast makes one
    /// and answers it once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 8, max_length = 512)]
    pub secret: Option<String>,
    /// How far a signed timestamp may be from the server's clock, either way (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3600)]
    pub tolerance_secs: Option<u64>,
    /// How long an event id (or body) is remembered (default 35 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 60, maximum = 34_560_000)]
    pub dedup_window_secs: Option<u64>,
    /// `{keep_headers?: [..], hmac?: {header, algorithm, encoding, prefix?, timestamp_header?, event_id_pointer?}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
}

/// A secret of a source; its value is never shown after it was made.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceSecretInfo {
    pub id: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Refused from this time on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

/// A webhook source.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct Source {
    /// Unguessable; names no tenant.
    pub id: String,
    pub name: String,
    pub kind: String,
    pub queue: String,
    /// Where the provider delivers: `POST {server}{ingest_path}`, no API key.
    pub ingest_path: String,
    /// Only in the answer that made the secret (Steadfast made it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub tolerance_secs: u64,
    pub dedup_window_secs: u64,
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    pub secrets: Vec<SourceSecretInfo>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceList {
    pub sources: Vec<Source>,
}

/// `POST /v1/sources/{id}/secrets`: add a secret, so a rotation drops no event.
#[derive(Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRequest {
    /// The new secret; without one, Steadfast makes one (not for stripe,
    /// shopify or slack) and answers it once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 8, max_length = 512)]
    pub secret: Option<String>,
    /// When the new secret stops being accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    /// The source's other secrets stop being accepted this many seconds from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 34_560_000)]
    pub retire_others_after_secs: Option<u64>,
}

/// The secret just added, with its value when Steadfast made it.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretAdded {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    /// The source with every secret, after the change.
    pub source: Source,
}

/// One stored delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InboxEventInfo {
    pub event_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub received_at: Timestamp,
    /// What verification found: the secret that matched, the signed timestamp.
    #[schema(value_type = Object)]
    pub verification: serde_json::Value,
    /// The headers kept.
    #[schema(value_type = Object)]
    pub headers: serde_json::Value,
    pub body_bytes: u64,
    /// Hex SHA-256 of the exact bytes received.
    pub body_sha256: String,
    /// Deliveries of the same event after the first.
    pub duplicates: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_duplicate_at: Option<Timestamp>,
    /// The job the first delivery became.
    #[schema(value_type = String, format = Uuid)]
    pub job_id: uuid::Uuid,
    /// Jobs replayed from it since, oldest first.
    #[schema(value_type = Vec<String>)]
    pub replays: Vec<uuid::Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InboxEventList {
    pub events: Vec<InboxEventInfo>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The answer to a delivery (`POST /hooks/{id}`), once it is on disk.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAnswer {
    /// Seen before within the source's dedup window: no new job.
    pub duplicate: bool,
    pub event_id: String,
    #[schema(value_type = String, format = Uuid)]
    pub job_id: uuid::Uuid,
}

/// `POST /v1/sources/{id}/events/{event_id}/replay`: the new job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Replayed {
    pub source_id: String,
    pub event_id: String,
    #[schema(value_type = String, format = Uuid)]
    pub job_id: uuid::Uuid,
}

/// The source secrets these carry never reach logs through `Debug`.
macro_rules! debug_without_secret {
    ($($name:ident { $($field:ident),* }),* $(,)?) => {
        $(
            impl std::fmt::Debug for $name {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.debug_struct(stringify!($name))
                        $(.field(stringify!($field), &self.$field))*
                        .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
                        .finish_non_exhaustive()
                }
            }
        )*
    };
}

debug_without_secret!(
    SourceRequest { name, kind, queue },
    Source { id, name, kind, queue },
    SecretRequest {
        expires_at,
        retire_others_after_secs
    },
    SecretAdded {
        id,
        created_at,
        expires_at,
        source
    },
);

/// What a bulk operation does to each job it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// Dead or cancelled jobs go back to the queue with a fresh attempt budget.
    Retry,
    /// Unfinished jobs are cancelled.
    Cancel,
}

/// Which jobs a bulk operation acts on: every field optional, all must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// One of the states the action applies to (`dead` or `cancelled` for
    /// `retry`; `scheduled`, `queued`, `running` or `waiting` for `cancel`);
    /// all of them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// Jobs created at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_after: Option<Timestamp>,
    /// Jobs created before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_before: Option<Timestamp>,
    /// Jobs whose last error has this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
}

/// `POST /v1/jobs/bulk`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    pub action: BulkAction,
    #[serde(default)]
    pub filter: BulkFilter,
    /// Only count the jobs the filter matches; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Why (1–1000 bytes): kept in the operation and in every job's audit record.
    pub reason: String,
}

/// The answer to a dry run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkCount {
    /// Jobs the filter matches now.
    pub matched: u64,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkStatus {
    Running,
    /// Every matching job was acted on; `failed` counts those that could not be.
    Completed,
    /// Stopped by `POST /v1/bulk/{id}/cancel`; what was done stays done.
    Cancelled,
}

/// A job a bulk operation could not act on, and why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkFailure {
    pub job_id: String,
    pub error: String,
}

/// A bulk operation: who started it, when, on what, and how far it got.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkOperation {
    pub id: uuid::Uuid,
    pub status: BulkStatus,
    pub action: BulkAction,
    pub filter: BulkFilter,
    pub reason: String,
    /// Jobs the filter matched when it started (later ones are left alone).
    pub matched: u64,
    /// Jobs acted on so far.
    pub done: u64,
    /// Jobs it could not act on (the first 100 are in `failures`).
    pub failed: u64,
    pub failures: Vec<BulkFailure>,
    /// The key that started it.
    pub created_by: BulkActor,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkActor {
    pub key_id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkList {
    /// Newest first.
    pub operations: Vec<BulkOperation>,
}
