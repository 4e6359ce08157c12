"""The API's objects, as frozen dataclasses mirroring ``docs/openapi.json``.

Times are aware ``datetime`` objects (UTC). Enumerations are ``Literal``
strings (a newer server may send a value this version does not list).
Payloads, outputs and other free-form JSON are plain Python values.
A test checks every class here against the OpenAPI document, field by field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Dict, List, Literal, Optional

AttemptOutcome = Literal[
    "succeeded",
    "failed",
    "lease_expired",
    "timed_out",
    "cancelled",
    "suspended",
    "released",
]


BreakerStatus = Literal["closed", "open", "half_open"]


BulkAction = Literal["retry", "cancel"]
"""What a bulk operation does to each job it matches."""


BulkStatus = Literal["running", "completed", "cancelled"]


ErrorCode = Literal[
    "malformed_json",
    "validation_failed",
    "unauthorized",
    "forbidden",
    "not_found",
    "route_not_found",
    "method_not_allowed",
    "lease_lost",
    "invalid_state",
    "payload_too_large",
    "unsupported_media_type",
    "idempotency_key_reused",
    "batch_too_large",
    "limit_exceeded",
    "internal",
    "unavailable",
    "storage_full",
    "rate_limited",
    "request_timeout",
    "quota_exceeded",
    "signature_invalid",
    "timestamp_out_of_tolerance",
    "singleton_running",
    "schema_incompatible",
    "payload_invalid",
    "output_invalid",
]


Fairness = Literal["flow_key"]


JobState = Literal["scheduled", "queued", "running", "waiting", "succeeded", "dead", "cancelled"]


ScheduleCatchUp = Literal["none", "latest"]
"""What happens to ticks missed while no node was running."""


ScheduleOverlap = Literal["skip", "allow"]
"""What a schedule's tick does when the previous tick's job is unfinished."""


SingletonMode = Literal["skip", "replace"]


SourceKind = Literal["stripe", "github", "standard", "shopify", "slack", "hmac"]


StepAction = Literal["start", "checkpoint"]


StepResolution = Literal["succeeded", "failed", "reexecute"]
"""What an operator found out about an uncertain step."""


StepState = Literal["completed", "started", "uncertain"]


TickOutcome = Literal["fired", "skipped_overlap", "missed", "failed"]
"""What became of a schedule's last tick."""


@dataclass(frozen=True)
class AttemptInfo:
    """One attempt in a job's history. The running attempt has no end yet."""

    attempt: int
    started_at: datetime
    worker_id: str
    ended_at: Optional[datetime] = None
    error: Optional[ErrorInfo] = None
    outcome: Optional[AttemptOutcome] = None


@dataclass(frozen=True)
class AuditActor:
    """Who made an audited change."""

    kind: str
    """`key`, `operator` (local administration) or `system` (Steadfast itself)."""
    name: str
    key_id: Optional[str] = None


@dataclass(frozen=True)
class AuditCheckpoint:
    """A signed checkpoint of a tenant's chain: keep it somewhere the database's
    administrators cannot reach, and `steadfast audit verify --checkpoint FILE`
    will catch any later truncation or rewrite before it."""

    algorithm: str
    """`ed25519`."""
    at: datetime
    hash: str
    """Its hash, hex."""
    public_key: str
    """Hex public key of the signing key (which lives outside the database)."""
    seq: int
    """The last record's sequence number (0 for an empty chain)."""
    signature: str
    """Hex signature over `steadfast-audit-checkpoint/v1`, the tenant, seq,
    hash and time in ms, one per line."""
    tenant_id: str


@dataclass(frozen=True)
class AuditList:
    records: List[AuditRecord]
    """Oldest first."""
    next_cursor: Optional[str] = None
    """Pass as `cursor` for the next page; absent on the last page."""


@dataclass(frozen=True)
class AuditRecord:
    """One record of a tenant's tamper-evident audit chain."""

    action: str
    """Stable dotted name: `job.enqueued`, `step.completed`, `key.revoked`, … (docs/audit.md)."""
    actor: AuditActor
    at: datetime
    hash: str
    """Hex SHA-256 over this record's canonical content and `prev_hash`."""
    prev_hash: str
    """Hex SHA-256 of the previous record (zeros for the first)."""
    seq: int
    """Position in the tenant's chain: 1, 2, 3, … without gaps."""
    summary: Any
    """What changed."""
    target: str
    job_id: Optional[str] = None
    request_id: Optional[str] = None


@dataclass(frozen=True)
class AuditVerification:
    """`GET /v1/audit/verify`."""

    head_seq: int
    """The last verified sequence number."""
    intact: bool
    records: int
    """Records checked."""
    problem: Optional[str] = None
    """The first problem found, naming the record."""


@dataclass(frozen=True)
class BatchItem:
    job: Job
    replayed: bool
    """The idempotency key matched an earlier request; `job` is its job."""
    singleton: Optional[str] = None
    """`skipped` or `replaced`: the singleton key had an unfinished job,
    and `job` is that job."""


@dataclass(frozen=True)
class BreakerConfig:
    """A circuit breaker: it opens when, within `window_secs`, at least
    `min_requests` outcomes were reported and `failure_ratio` of them
    failed; stays open `open_secs`; then grants `half_open_probes` leases,
    and the first of their outcomes closes it (success) or reopens it."""

    failure_ratio: float
    """Above 0, at most 1."""
    half_open_probes: int
    """1 to 1000."""
    min_requests: int
    """1 to 1000000."""
    open_secs: int
    """1 to 86400."""
    window_secs: int
    """1 to 86400."""


@dataclass(frozen=True)
class BreakerWindow:
    """The current window of a closed breaker: outcomes reported since it began."""

    failures: int
    requests: int
    started_at: datetime


@dataclass(frozen=True)
class BulkActor:
    key_id: str
    name: str


@dataclass(frozen=True)
class BulkCount:
    """The answer to a dry run."""

    dry_run: bool
    matched: int
    """Jobs the filter matches now."""


@dataclass(frozen=True)
class BulkFailure:
    """A job a bulk operation could not act on, and why."""

    error: str
    job_id: str


@dataclass(frozen=True)
class BulkFilter:
    """Which jobs a bulk operation acts on: every field optional, all must hold."""

    created_after: Optional[datetime] = None
    created_before: Optional[datetime] = None
    error_kind: Optional[str] = None
    queue: Optional[str] = None
    state: Optional[JobState] = None


@dataclass(frozen=True)
class BulkList:
    operations: List[BulkOperation]
    """Newest first."""


@dataclass(frozen=True)
class BulkOperation:
    """A bulk operation: who started it, when, on what, and how far it got."""

    action: BulkAction
    created_at: datetime
    created_by: BulkActor
    done: int
    failed: int
    failures: List[BulkFailure]
    filter: BulkFilter
    id: str
    matched: int
    reason: str
    status: BulkStatus
    updated_at: datetime
    finished_at: Optional[datetime] = None


@dataclass(frozen=True)
class ChildInfo:
    id: str
    queue: str
    state: JobState
    step: str
    """The parent's step that enqueued it."""


@dataclass(frozen=True)
class Completion:
    id: str
    lease_token: str
    output: Any = None
    """Any JSON value; `null` when absent."""


@dataclass(frozen=True)
class CompletionResult:
    """Either `state` (the job's state after completing) or `error` (why this
    one was refused; nothing changed for it, e.g. `lease_lost`)."""

    id: str
    error: Optional[ErrorDetail] = None
    state: Optional[JobState] = None


@dataclass(frozen=True)
class DeliveryAnswer:
    """The answer to a delivery (`POST /hooks/{id}`), once it is on disk."""

    duplicate: bool
    """Seen before within the source's dedup window: no new job."""
    event_id: str
    job_id: str


@dataclass(frozen=True)
class EnqueueRequest:
    """`POST /v1/jobs`, and each item of a batch."""

    payload: Any
    """Any JSON value; handed to the worker unchanged."""
    queue: str
    """1–128 bytes of ASCII letters, digits and `-_.:`."""
    debounce_max_ms: Optional[int] = None
    """With `debounce_ms`: never later than this after the first enqueue
    (at least `debounce_ms`, at most 86400000; default 10 × `debounce_ms`)."""
    debounce_ms: Optional[int] = None
    """With a singleton: run the job only once no enqueue of its key came
    for this long (1 to 86400000 ms); the last payload wins."""
    flow_key: Optional[str] = None
    """What the queue's per-key rules (`key_concurrency`, `key_rate`,
    `fairness`) count the job under, e.g. a customer or account id:
    1–128 bytes, no control characters."""
    idempotency_key: Optional[str] = None
    """Within the dedup window (default 48 h), the same key returns the
    original job instead of creating another; the same key with a
    different request is refused with `idempotency_key_reused`.
    1–255 printable ASCII bytes, no spaces."""
    max_attempts: Optional[int] = None
    """Attempts before the job is `dead` (default 25, at most 1000)."""
    priority: Optional[int] = None
    """-100 to 100, default 0; higher runs first."""
    producer: Optional[ProducerRequest] = None
    """A numbered message of a producer (an edge collector): a repeated
    `(id, sequence)` is a replay, like an idempotency key."""
    resource: Optional[str] = None
    """The downstream the job calls (e.g. `stripe`), whose limits and
    circuit breaker hold it: 1–128 bytes of ASCII letters, digits and `-_.:`."""
    run_at: Optional[datetime] = None
    """Not before this time; in the future, the job starts `scheduled`."""
    schema_version: Optional[int] = None
    """Validate the payload against this version of the queue's schema
    instead of the latest."""
    singleton: Optional[SingletonRequest] = None
    timeout_secs: Optional[int] = None
    """Each attempt's hard deadline in seconds (default 300, at most 86400)."""


@dataclass(frozen=True)
class ErrorDetail:
    code: ErrorCode
    """Stable, machine-readable; see docs/errors.md."""
    message: str
    """For humans; may change between releases."""
    violations: Optional[List[Violation]] = None
    """With `payload_invalid`, `output_invalid` and `schema_incompatible`:
    each violation, where it is and the rule it broke."""


@dataclass(frozen=True)
class ErrorInfo:
    message: str
    kind: Optional[str] = None


@dataclass(frozen=True)
class Health:
    status: str
    """`ok`, or why the server is not ready (`draining`, `storage_unavailable`)."""


@dataclass(frozen=True)
class HeartbeatResponse:
    lease_expires_at: datetime


@dataclass(frozen=True)
class HeldJobs:
    """Ready jobs that flow control holds now, by reason. A job held for
    several reasons counts under the first: paused, breaker_open,
    concurrency, key_concurrency, rate, retry_budget."""

    breaker_open: int
    concurrency: int
    key_concurrency: int
    paused: int
    rate: int
    retry_budget: int


@dataclass(frozen=True)
class InboxEventInfo:
    """One stored delivery."""

    body_bytes: int
    body_sha256: str
    """Hex SHA-256 of the exact bytes received."""
    duplicates: int
    """Deliveries of the same event after the first."""
    event_id: str
    headers: Dict[str, Any]
    """The headers kept."""
    job_id: str
    """The job the first delivery became."""
    received_at: datetime
    replays: List[str]
    """Jobs replayed from it since, oldest first."""
    verification: Dict[str, Any]
    """What verification found: the secret that matched, the signed timestamp."""
    last_duplicate_at: Optional[datetime] = None


@dataclass(frozen=True)
class InboxEventList:
    events: List[InboxEventInfo]
    next_cursor: Optional[str] = None
    """Pass as `cursor` for the next page; absent on the last."""


@dataclass(frozen=True)
class Job:
    attempt: int
    """Attempts started so far."""
    attempts_left: int
    """Attempts left before the job is `dead`."""
    created_at: datetime
    id: str
    max_attempts: int
    payload: Any
    priority: int
    queue: str
    run_at: datetime
    state: JobState
    timeout_secs: int
    updated_at: datetime
    attempts: Optional[List[AttemptInfo]] = None
    """Every attempt, oldest first, the running one last without an end.
    Present in `GET /v1/jobs/{id}` only."""
    children: Optional[List[ChildInfo]] = None
    """Jobs enqueued by this job's steps. `GET /v1/jobs/{id}` only."""
    event: Optional[JobEventInfo] = None
    finished_at: Optional[datetime] = None
    flow_key: Optional[str] = None
    idempotency_key: Optional[str] = None
    last_error: Optional[ErrorInfo] = None
    lease: Optional[LeaseInfo] = None
    output: Any = None
    parent: Optional[ParentInfo] = None
    replay_of: Optional[str] = None
    """The job this one replays (``POST /v1/jobs/{id}/replay``)."""
    resource: Optional[str] = None
    schema_version: Optional[int] = None
    """The version of the queue's payload schema the payload was validated
    against; absent when the queue had none."""
    signals: Optional[List[SignalInfo]] = None
    """Signals delivered, oldest first. `GET /v1/jobs/{id}` only."""
    singleton_key: Optional[str] = None
    steps: Optional[List[StepInfo]] = None
    """Workflow steps in the order they were first recorded. `GET /v1/jobs/{id}` only."""
    wait: Optional[WaitInfo] = None


@dataclass(frozen=True)
class JobEventInfo:
    """Where a job made by the webhook inbox came from."""

    event_id: str
    replay: bool
    """Made by `POST /v1/sources/{id}/events/{event_id}/replay`, not by the delivery."""
    source_id: str


@dataclass(frozen=True)
class JobList:
    jobs: List[Job]
    """Newest first."""
    next_cursor: Optional[str] = None
    """Pass as `cursor` for the next page; absent on the last page."""


@dataclass(frozen=True)
class KeyRunning:
    """Running jobs of one `flow_key`."""

    flow_key: str
    running: int


@dataclass(frozen=True)
class LeaseInfo:
    """The current lease of a running job."""

    deadline: datetime
    """The attempt's hard deadline; heartbeats never extend past it."""
    expires_at: datetime
    started_at: datetime
    worker_id: str


@dataclass(frozen=True)
class LeasedJob:
    attempt: int
    """1 for the first attempt."""
    deadline: datetime
    """The attempt's hard deadline."""
    id: str
    lease_expires_at: datetime
    lease_token: str
    """Present it to heartbeat, complete and fail."""
    lease_ttl_ms: int
    """How long each lease or heartbeat lasts: heartbeat well within it
    (a third is a good rhythm)."""
    payload: Any
    queue: str
    flow_key: Optional[str] = None
    """The key the queue's per-key rules count the job under."""
    resource: Optional[str] = None
    """The downstream the job calls: fail with `error.kind`
    `downstream_unavailable`, `timeout` or `rate_limited` when it lets you down."""
    schema_version: Optional[int] = None
    """The version of the queue's payload schema the payload passed."""
    steps: Optional[Dict[str, Any]] = None
    """Completed steps (name → output): replay these instead of running them again."""
    traceparent: Optional[str] = None
    """The job's W3C trace context: send it back as the `traceparent` header
    on calls made for this job so they join the job's trace."""
    uncertain_steps: Optional[Dict[str, UncertainStep]] = None
    """Steps an earlier attempt started but never checkpointed (name → that
    attempt): their side effects may or may not have happened."""


@dataclass(frozen=True)
class ParentInfo:
    id: str
    step: str


@dataclass(frozen=True)
class QueueCounts:
    """Unfinished jobs of a queue by state."""

    queued: int
    running: int
    scheduled: int
    waiting: int


@dataclass(frozen=True)
class QueueInfo:
    """A queue with its policy and live state."""

    busiest_keys: List[KeyRunning]
    """Running jobs of the busiest keys, most first (at most ten)."""
    counts: QueueCounts
    held: HeldJobs
    policy: QueuePolicy
    queue: str


@dataclass(frozen=True)
class QueueList:
    """`GET /v1/queues`: the queues with unfinished jobs or a policy, by name
    (at most 1000)."""

    queues: List[QueueInfo]


@dataclass(frozen=True)
class QueuePolicy:
    """A queue's flow policy: the rules its leases obey."""

    paused: bool
    queue: str
    concurrency: Optional[int] = None
    fairness: Optional[Fairness] = None
    key_concurrency: Optional[int] = None
    key_rate: Optional[Rate] = None
    rate: Optional[Rate] = None
    retry_budget: Optional[RetryBudget] = None
    weights: Optional[Dict[str, int]] = None


@dataclass(frozen=True)
class QueueRetention:
    """A queue's retention: its own settings (null where it follows the
    server) and what applies."""

    effective_failed_secs: int
    effective_succeeded_secs: int
    """What applies: the queue's own, else the server's."""
    queue: str
    retain_failed_secs: Optional[int] = None
    retain_succeeded_secs: Optional[int] = None


@dataclass(frozen=True)
class Rate:
    """Lease grants per period, enforced with GCRA."""

    limit: int
    """Grants per period: 1 to 1000000."""
    period_ms: int
    """The period in milliseconds: 1 to 86400000 (a day)."""
    burst: Optional[int] = None
    """Grants allowed at once after a quiet spell: 1 to 1000000; default `limit`."""


@dataclass(frozen=True)
class Replayed:
    """`POST /v1/sources/{id}/events/{event_id}/replay`: the new job."""

    event_id: str
    job_id: str
    source_id: str


@dataclass(frozen=True)
class OutboxEntry:
    """A request written with `steadfast.enqueue(...)` (PostgreSQL) whose job
    is not made yet, or was refused."""

    attempts: int
    """Times a node took it up."""
    created_at: datetime
    id: str
    """The id `steadfast.enqueue` returned: the job's id once it is made."""
    key_id: str
    """The id of the API key it was sent with."""
    request: Any
    """The request, in the shape of `POST /v1/jobs`."""
    error: Optional[ErrorDetail] = None
    """Why its job was refused for good (absent while it waits)."""
    failed_at: Optional[datetime] = None


@dataclass(frozen=True)
class OutboxList:
    """`GET /v1/outbox`: the tenant's entries still in the outbox, oldest first."""

    entries: List[OutboxEntry]


@dataclass(frozen=True)
class PayloadSchema:
    """A registered version of a queue's payload schema."""

    created_at: datetime
    forced: bool
    """Registered with `force` although it breaks the previous version."""
    queue: str
    schema: Any
    version: int
    output_schema: Any = None
    reason: Optional[str] = None


@dataclass(frozen=True)
class ProducerInfo:
    """`GET /v1/producers/{id}`: what Steadfast received of a producer's numbers."""

    first_seen_at: datetime
    forgotten: int
    """Missing numbers no longer listed, to keep `missing` bounded."""
    gaps_total: int
    """Holes that ever opened, filled since or not."""
    highest_sequence: int
    """The highest sequence number received."""
    id: str
    last_seen_at: datetime
    missing: List[SequenceRange]
    """Numbers from 1 to `highest_sequence` never received, lowest first
    (at most 1000 ranges; older ones are counted in `forgotten`)."""
    missing_count: int
    """How many numbers `missing` covers."""


@dataclass(frozen=True)
class ProducerList:
    """`GET /v1/producers`: the tenant's producers by id."""

    producers: List[ProducerInfo]
    next_after: Optional[str] = None
    """Pass as `after` for the next page; absent on the last."""


@dataclass(frozen=True)
class ProducerRequest:
    id: str
    """1–128 bytes of ASCII letters, digits and `-_.:`."""
    sequence: int
    """The message's number: the producer counts 1, 2, 3, …"""


@dataclass(frozen=True)
class Resource:
    """A downstream: its limits, and its breaker's state now."""

    created_at: datetime
    name: str
    probes_granted: int
    """Probes granted since the breaker went half-open, not yet reported."""
    state: BreakerStatus
    updated_at: datetime
    window: BreakerWindow
    breaker: Optional[BreakerConfig] = None
    concurrency: Optional[int] = None
    opened_at: Optional[datetime] = None
    rate: Optional[Rate] = None


@dataclass(frozen=True)
class ResourceList:
    """`GET /v1/resources`."""

    resources: List[Resource]


@dataclass(frozen=True)
class RetryBudget:
    """Retries may be at most `ratio` × first attempts, plus a reserve of
    `min_per_sec`. A retry over budget is deferred, not failed."""

    ratio: float
    """Retries allowed per first attempt: 0 to 100 (e.g. 0.1)."""
    min_per_sec: Optional[float] = None
    """Retries per second allowed whatever the ratio: 0 to 100000; default 1."""


@dataclass(frozen=True)
class SecretAdded:
    """The secret just added, with its value when Steadfast made it."""

    created_at: datetime
    id: str
    source: Source
    """The source with every secret, after the change."""
    expires_at: Optional[datetime] = None
    secret: Optional[str] = None


@dataclass(frozen=True)
class ScheduleInfo:
    catch_up: ScheduleCatchUp
    created_at: datetime
    cron: str
    name: str
    next_fire_times: List[datetime]
    """The next 5 ticks (none while paused)."""
    overlap: ScheduleOverlap
    paused: bool
    payload: Any
    queue: str
    timezone: str
    updated_at: datetime
    last_job_id: Optional[str] = None
    """The job of the last tick that fired."""
    last_outcome: Optional[TickOutcome] = None
    last_tick_at: Optional[datetime] = None


@dataclass(frozen=True)
class ScheduleList:
    """`GET /v1/schedules`: the tenant's schedules by name."""

    schedules: List[ScheduleInfo]


@dataclass(frozen=True)
class SchemaList:
    """`GET /v1/schemas`: every version, by queue then version."""

    schemas: List[PayloadSchema]


@dataclass(frozen=True)
class SequenceRange:
    """A range of a producer's sequence numbers never received, both ends included."""

    end: int
    start: int


@dataclass(frozen=True)
class SignalInfo:
    name: str
    payload: Any
    received_at: datetime
    consumed_at: Optional[datetime] = None
    """When a wait consumed it; absent while pending."""


@dataclass(frozen=True)
class SignalResponse:
    job: Job
    woke: bool
    """The job was waiting for this signal and is queued again; otherwise the
    signal is kept for the job's next wait on this name."""


@dataclass(frozen=True)
class SingletonRequest:
    key: str
    """1–128 bytes, no control characters."""
    mode: Optional[SingletonMode] = None


@dataclass(frozen=True)
class SloAlert:
    severity: str
    """`page` or `ticket`."""
    since: datetime


@dataclass(frozen=True)
class SloList:
    slos: List[SloStatus]


@dataclass(frozen=True)
class SloStatus:
    """An SLO and where it stands now."""

    alerts: List[SloAlert]
    """Alerts firing as of the last evaluation."""
    budget_remaining: float
    """Share of the window's error budget left (negative when overspent)."""
    burn_rates: Dict[str, float]
    """Burn rate per alerting window (`5m`, `30m`, `1h`, `2h`, `6h`, `1d`, `3d`)."""
    id: str
    name: str
    objective: float
    queue: str
    window_days: int
    latency_threshold_ms: Optional[int] = None
    notify_url: Optional[str] = None


@dataclass(frozen=True)
class Source:
    """A webhook source."""

    config: Dict[str, Any]
    created_at: datetime
    dedup_window_secs: int
    id: str
    """Unguessable; names no tenant."""
    ingest_path: str
    """Where the provider delivers: `POST {server}{ingest_path}`, no API key."""
    kind: str
    name: str
    queue: str
    secrets: List[SourceSecretInfo]
    tolerance_secs: int
    secret: Optional[str] = None
    """Only in the answer that made the secret (Steadfast made it)."""


@dataclass(frozen=True)
class SourceList:
    sources: List[Source]


@dataclass(frozen=True)
class SourceSecretInfo:
    """A secret of a source; its value is never shown after it was made."""

    created_at: datetime
    id: str
    expires_at: Optional[datetime] = None
    """Refused from this time on."""


@dataclass(frozen=True)
class StepInfo:
    """A workflow step."""

    attempt: int
    """The attempt that completed the step, or last started it."""
    idempotency_key: str
    """Stable across attempts: `<job id>/<step name>`. Hand it to downstream
    APIs that honour idempotency keys."""
    name: str
    started_at: datetime
    state: StepState
    completed_at: Optional[datetime] = None
    output: Any = None


@dataclass(frozen=True)
class StepOperation:
    action: StepAction
    id: str
    """The job's id."""
    lease_token: str
    step: str
    """The step's name."""
    output: Any = None
    """`checkpoint` only: any JSON value; `null` when absent."""
    traceparent: Optional[str] = None
    """The attempt's W3C trace context (what the single-step routes take as
    the `traceparent` header): the parent of the step's span."""


@dataclass(frozen=True)
class StepResult:
    """Either `info` or `error` (why this one was refused; nothing changed for
    it, e.g. `lease_lost`)."""

    id: str
    step: str
    error: Optional[ErrorDetail] = None
    first: Optional[bool] = None
    """Checkpoints only: `true` when this checkpoint stored its output (the
    single route's `201`), `false` when an earlier one had won."""
    info: Optional[StepInfo] = None


@dataclass(frozen=True)
class UncertainStep:
    """The attempt that started a step and ended before its checkpoint."""

    attempt: int
    started_at: datetime
    worker_id: str
    attempt_ended_at: Optional[datetime] = None
    """When that attempt ended."""
    attempt_outcome: Optional[AttemptOutcome] = None


@dataclass(frozen=True)
class Violation:
    """One reason a payload, an output or a schema was refused."""

    message: str
    pointer: str
    """JSON Pointer: into the payload or output (`payload_invalid`,
    `output_invalid`), or into the new schema (`schema_incompatible`)."""
    rule: str
    """The JSON Schema keyword that failed (e.g. `required`, `type`), or
    the compatibility rule broken (e.g. `required_added`, `type_narrowed`)."""


@dataclass(frozen=True)
class WaitInfo:
    step: str
    """The step that waits."""
    signal: Optional[str] = None
    """The awaited signal; absent for a sleep."""
    until: Optional[datetime] = None
    """When a sleep ends, or when a signal wait times out."""


@dataclass(frozen=True)
class WaitResponse:
    suspended: bool
    """`true`: the attempt ended and the job is `waiting`; stop working on it.
    `false`: the step is complete (`step.output` says how the wait ended); carry on."""
    step: Optional[StepInfo] = None


@dataclass(frozen=True)
class EnqueuedJob(Job):
    """The answer to an enqueue: the job, and how the request was taken."""

    replayed: bool = False
    """The idempotency key matched an earlier request: this is that request's job."""
    singleton: Optional[str] = None
    """``skipped`` or ``replaced`` when the singleton key already had an
    unfinished job (and this is that job)."""
