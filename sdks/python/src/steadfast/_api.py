"""Every API call, written once: what to send and how to read the answer.

Each function here builds a :class:`Call`; ``Client`` sends it blocking and
``AsyncClient`` awaiting, so the two cannot drift apart. The functions'
signatures and docstrings are the clients' methods'.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from json.encoder import encode_basestring as _string
from typing import Any, Callable, Dict, Generic, List, Mapping, Optional, Sequence, TypeVar, Union
from urllib.parse import quote

from . import models as m
from ._codec import decode, dumps, encode

T = TypeVar("T")
JSON = Any
Headers = Mapping[str, str]

IDEMPOTENT_REPLAYED_HEADER = "idempotent-replayed"
SINGLETON_HEADER = "steadfast-singleton"


class _Unset:
    """A field left out of a merge patch (``None`` sends ``null``: clear it)."""

    def __repr__(self) -> str:
        return "UNSET"


#: Leaves a field of a merge patch as it is.
UNSET: Any = _Unset()


class RawJson:
    """A request body already encoded (the worker encodes each output once,
    when the handler returns, and splices it into batches)."""

    __slots__ = ("data",)

    def __init__(self, data: str) -> None:
        self.data = data


@dataclasses.dataclass(frozen=True)
class Call(Generic[T]):
    """One request, and how its answer becomes a ``T``."""

    method: str
    path: str
    read: Callable[[JSON, Headers], T]
    body: JSON = None
    query: Optional[Dict[str, str]] = None
    #: Sent as the W3C ``traceparent`` header (overrides the client's).
    traceparent: Optional[str] = None


def _seg(text: str) -> str:
    """``text`` as one URL path segment (event ids may hold ``/`` or ``?``)."""
    return quote(str(text), safe="")


def _as(cls: type[T]) -> Callable[[JSON, Headers], T]:
    return lambda body, _headers: decode(cls, body)


def _list_of(cls: type[T], field: str) -> Callable[[JSON, Headers], List[T]]:
    return lambda body, _headers: [decode(cls, item) for item in body[field]]


def _nothing(_body: JSON, _headers: Headers) -> None:
    return None


def _query(**params: Any) -> Optional[Dict[str, str]]:
    query = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            query[name] = encode(value)
        elif isinstance(value, enum.Enum):
            query[name] = value.value
        else:
            query[name] = str(value)
    return query or None


def _fields(**fields: Any) -> Dict[str, JSON]:
    """A request body without its ``None`` fields."""
    return {name: encode(value) for name, value in fields.items() if value is not None}


def _patch(**fields: Any) -> Dict[str, JSON]:
    """A merge patch: ``UNSET`` fields left out, ``None`` sent as ``null``."""
    return {name: encode(value) for name, value in fields.items() if value is not UNSET}


EnqueueItem = Union[m.EnqueueRequest, Mapping[str, Any]]


def _enqueued(body: JSON, headers: Headers) -> m.EnqueuedJob:
    job = decode(m.EnqueuedJob, body)
    return dataclasses.replace(
        job,
        replayed=headers.get(IDEMPOTENT_REPLAYED_HEADER, "").lower() == "true",
        singleton=headers.get(SINGLETON_HEADER),
    )


# -- jobs ---------------------------------------------------------------


def enqueue(
    queue: str,
    payload: JSON,
    idempotency_key: Optional[str] = None,
    *,
    max_attempts: Optional[int] = None,
    timeout_secs: Optional[int] = None,
    run_at: Optional[datetime] = None,
    priority: Optional[int] = None,
    flow_key: Optional[str] = None,
    resource: Optional[str] = None,
    singleton: Union[m.SingletonRequest, Mapping[str, Any], None] = None,
    debounce_ms: Optional[int] = None,
    debounce_max_ms: Optional[int] = None,
    schema_version: Optional[int] = None,
    producer: Union[m.ProducerRequest, Mapping[str, Any], None] = None,
) -> Call[m.EnqueuedJob]:
    """Enqueues a job (``POST /v1/jobs``) and returns it, with ``replayed``
    set when ``idempotency_key`` matched an earlier request (within the dedup
    window, the same key returns the first job instead of making another)."""
    body = _fields(
        queue=queue,
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
        timeout_secs=timeout_secs,
        run_at=run_at,
        priority=priority,
        flow_key=flow_key,
        resource=resource,
        singleton=singleton,
        debounce_ms=debounce_ms,
        debounce_max_ms=debounce_max_ms,
        schema_version=schema_version,
        producer=producer,
    )
    body["payload"] = payload
    return Call("POST", "v1/jobs", _enqueued, body)


def _enqueue_item(job: EnqueueItem) -> Dict[str, JSON]:
    if isinstance(job, m.EnqueueRequest):
        item: Dict[str, JSON] = encode(job)
        item["payload"] = job.payload
        return item
    return dict(job)


def enqueue_batch(jobs: Sequence[EnqueueItem]) -> Call[List[m.BatchItem]]:
    """Enqueues many jobs at once (``POST /v1/jobs/batch``): all are created,
    or none. Each item is an :class:`~steadfast.models.EnqueueRequest` or a
    mapping with the same fields."""
    body = {"jobs": [_enqueue_item(job) for job in jobs]}
    return Call("POST", "v1/jobs/batch", _list_of(m.BatchItem, "jobs"), body)


def get(id: str) -> Call[m.Job]:
    """The job with its attempts, steps, signals, children and origin."""
    return Call("GET", f"v1/jobs/{_seg(id)}", _as(m.Job))


def list_jobs(
    *,
    queue: Optional[str] = None,
    state: Union[m.JobState, str, None] = None,
    limit: Optional[int] = None,
    cursor: Optional[str] = None,
) -> Call[m.JobList]:
    """One page of jobs, newest first; pass ``next_cursor`` on for the next."""
    query = _query(queue=queue, state=state, limit=limit, cursor=cursor)
    return Call("GET", "v1/jobs", _as(m.JobList), query=query)


def retry(id: str, reason: Optional[str] = None) -> Call[m.Job]:
    """Queues a dead or cancelled job again (operator action, audited with
    ``reason``)."""
    return Call("POST", f"v1/jobs/{_seg(id)}/retry", _as(m.Job), _fields(reason=reason))


def cancel(id: str, reason: Optional[str] = None) -> Call[m.Job]:
    """Cancels an unfinished job (operator action, audited with ``reason``)."""
    return Call("POST", f"v1/jobs/{_seg(id)}/cancel", _as(m.Job), _fields(reason=reason))


def replay(id: str, reason: str, *, payload: Any = UNSET) -> Call[m.Job]:
    """Runs a job again as a new job linked to it (``replay_of``), with
    ``payload`` or the original's; the original does not change (operator
    action, audited with ``reason``)."""
    body = _patch(reason=reason, payload=payload)
    return Call("POST", f"v1/jobs/{_seg(id)}/replay", _as(m.Job), body)


def resolve_step(
    id: str, step: str, outcome: m.StepResolution, reason: str, *, output: Any = UNSET
) -> Call[m.Job]:
    """Settles a step whose outcome is uncertain: ``succeeded`` (with
    ``output``), ``failed`` (the job ends dead) or ``reexecute`` (the next
    attempt runs it again). Operator action, audited with ``reason``;
    answers the job with its history."""
    path = f"v1/jobs/{_seg(id)}/steps/{_seg(step)}/resolve"
    return Call("POST", path, _as(m.Job), _patch(outcome=outcome, reason=reason, output=output))


def bulk(
    action: m.BulkAction,
    reason: str,
    *,
    queue: Optional[str] = None,
    state: Optional[m.JobState] = None,
    created_after: Optional[datetime] = None,
    created_before: Optional[datetime] = None,
    error_kind: Optional[str] = None,
) -> Call[m.BulkOperation]:
    """Retries or cancels every job the filter matches, in the background
    (operator action; each job audited with ``reason``). Follow it with
    :func:`get_bulk`; count first with :func:`count_bulk`."""
    filter = _fields(
        queue=queue,
        state=state,
        created_after=created_after,
        created_before=created_before,
        error_kind=error_kind,
    )
    body: Dict[str, JSON] = {"action": action, "filter": filter, "reason": reason}
    return Call("POST", "v1/jobs/bulk", _as(m.BulkOperation), body)


def count_bulk(
    action: m.BulkAction,
    *,
    queue: Optional[str] = None,
    state: Optional[m.JobState] = None,
    created_after: Optional[datetime] = None,
    created_before: Optional[datetime] = None,
    error_kind: Optional[str] = None,
) -> Call[int]:
    """How many jobs :func:`bulk` with this filter would act on now (a dry
    run: nothing changes)."""
    filter = _fields(
        queue=queue,
        state=state,
        created_after=created_after,
        created_before=created_before,
        error_kind=error_kind,
    )
    # A dry run changes nothing; the reason is required all the same.
    body: Dict[str, JSON] = {
        "action": action,
        "filter": filter,
        "reason": "dry run",
        "dry_run": True,
    }
    return Call(
        "POST", "v1/jobs/bulk", lambda body, _headers: decode(m.BulkCount, body).matched, body
    )


def get_bulk(id: str) -> Call[m.BulkOperation]:
    """A bulk operation: its progress, and what failed."""
    return Call("GET", f"v1/bulk/{_seg(id)}", _as(m.BulkOperation))


def list_bulk() -> Call[List[m.BulkOperation]]:
    """The tenant's bulk operations, newest first."""
    return Call("GET", "v1/bulk", _list_of(m.BulkOperation, "operations"))


def cancel_bulk(id: str) -> Call[m.BulkOperation]:
    """Stops a running bulk operation; what it did stays done."""
    return Call("POST", f"v1/bulk/{_seg(id)}/cancel", _as(m.BulkOperation))


def signal(
    id: str, name: str, payload: JSON = None, reason: Optional[str] = None
) -> Call[m.SignalResponse]:
    """Delivers signal ``name`` to a job: it wakes the job if it waits for
    it, and is kept for its next wait on that name otherwise. A ``reason``
    goes into the audit record."""
    path = f"v1/jobs/{_seg(id)}/signals/{_seg(name)}"
    body: Dict[str, JSON] = {"payload": payload, **_fields(reason=reason)}
    return Call("POST", path, _as(m.SignalResponse), body)


# -- workers ------------------------------------------------------------


def lease(
    queues: Sequence[str],
    *,
    worker_id: str,
    max_jobs: Optional[int] = None,
    wait_ms: Optional[int] = None,
) -> Call[List[m.LeasedJob]]:
    """Leases up to ``max_jobs`` ready jobs, waiting up to ``wait_ms`` for one
    when none is ready. :class:`~steadfast.Worker` does this for you."""
    body = _fields(queues=list(queues), worker_id=worker_id, max_jobs=max_jobs, wait_ms=wait_ms)
    return Call("POST", "v1/lease", _list_of(m.LeasedJob, "jobs"), body)


def heartbeat(id: str, lease_token: str) -> Call[m.HeartbeatResponse]:
    """Extends a lease (raises :class:`~steadfast.LeaseLost` once it is gone)."""
    body = {"lease_token": lease_token}
    return Call("POST", f"v1/jobs/{_seg(id)}/heartbeat", _as(m.HeartbeatResponse), body)


def release(id: str, lease_token: str) -> Call[m.Job]:
    """Hands a leased job back unfinished (a worker shutting down): the
    attempt ends ``released`` without being spent, and the job is ready again
    at once. :class:`~steadfast.Worker` does this at the end of its grace."""
    body = {"lease_token": lease_token}
    return Call("POST", f"v1/jobs/{_seg(id)}/release", _as(m.Job), body)


def complete(id: str, lease_token: str, output: JSON = None) -> Call[m.Job]:
    """Reports success, with the job's output."""
    body = {"lease_token": lease_token, "output": output}
    return Call("POST", f"v1/jobs/{_seg(id)}/complete", _as(m.Job), body)


def complete_batch(
    completions: Sequence[Union[m.Completion, Mapping[str, Any]]],
) -> Call[List[m.CompletionResult]]:
    """Reports many successes in one request. Each result stands alone:
    check its ``error`` (e.g. ``lease_lost``)."""
    body = {"completions": [encode(c) for c in completions]}
    return Call("POST", "v1/jobs/batch/complete", _list_of(m.CompletionResult, "results"), body)


def fail(
    id: str,
    lease_token: str,
    message: str,
    *,
    kind: Optional[str] = None,
    retryable: bool = True,
    retry_after_ms: Optional[int] = None,
) -> Call[m.Job]:
    """Reports failure. The retry policy decides what comes next;
    ``retryable=False`` sends the job to ``dead`` at once, and
    ``retry_after_ms`` holds its next attempt back at least that long."""
    body = _fields(
        lease_token=lease_token,
        error=_fields(message=message, kind=kind),
        retryable=retryable,
        retry_after_ms=retry_after_ms,
    )
    return Call("POST", f"v1/jobs/{_seg(id)}/fail", _as(m.Job), body)


def start_step(id: str, step: str, lease_token: str) -> Call[m.StepInfo]:
    """Marks a step started, before its side effect."""
    path = f"v1/jobs/{_seg(id)}/steps/{_seg(step)}/start"
    return Call("POST", path, _as(m.StepInfo), {"lease_token": lease_token})


def checkpoint_step(id: str, step: str, lease_token: str, output: JSON = None) -> Call[m.StepInfo]:
    """Checkpoints a step's result; answers the stored step (an earlier
    checkpoint's, if one won)."""
    path = f"v1/jobs/{_seg(id)}/steps/{_seg(step)}"
    return Call("PUT", path, _as(m.StepInfo), {"lease_token": lease_token, "output": output})


def steps_batch(
    operations: Sequence[Union[m.StepOperation, Mapping[str, Any]]],
) -> Call[List[m.StepResult]]:
    """Starts and checkpoints steps of many running jobs in one request.
    Each result stands alone: check its ``error``."""
    body = {"steps": [encode(op) for op in operations]}
    return Call("POST", "v1/jobs/batch/steps", _list_of(m.StepResult, "results"), body)


def wait(
    id: str,
    lease_token: str,
    step: str,
    *,
    sleep_ms: Optional[int] = None,
    until: Optional[datetime] = None,
    signal: Optional[str] = None,
    timeout_secs: Optional[int] = None,
) -> Call[m.WaitResponse]:
    """Parks the job in ``step`` until a time or a signal. Give exactly one
    of ``sleep_ms``, ``until`` or ``signal``."""
    body = _fields(
        lease_token=lease_token,
        step=step,
        sleep_ms=sleep_ms,
        until=until,
        signal=signal,
        timeout_secs=timeout_secs,
    )
    return Call("POST", f"v1/jobs/{_seg(id)}/wait", _as(m.WaitResponse), body)


def spawn_child(id: str, lease_token: str, step: str, job: EnqueueItem) -> Call[m.Job]:
    """Enqueues a child job from the parent's ``step``, once: every attempt
    gets the same child."""
    body = {"lease_token": lease_token, "step": step, "job": _enqueue_item(job)}
    return Call("POST", f"v1/jobs/{_seg(id)}/children", _as(m.Job), body)


# -- queues and resources -----------------------------------------------


def list_queues() -> Call[List[m.QueueInfo]]:
    """Every queue with unfinished jobs or a policy: its policy, counts by
    state, busiest keys and the jobs flow control holds now."""
    return Call("GET", "v1/queues", _list_of(m.QueueInfo, "queues"))


def queue_policy(queue: str) -> Call[m.QueuePolicy]:
    """A queue's flow policy."""
    return Call("GET", f"v1/queues/{_seg(queue)}/policy", _as(m.QueuePolicy))


def set_queue_policy(
    queue: str,
    *,
    paused: Optional[bool] = UNSET,
    concurrency: Optional[int] = UNSET,
    key_concurrency: Optional[int] = UNSET,
    rate: Union[m.Rate, Mapping[str, Any], None] = UNSET,
    key_rate: Union[m.Rate, Mapping[str, Any], None] = UNSET,
    fairness: Union[m.Fairness, str, None] = UNSET,
    weights: Optional[Mapping[str, int]] = UNSET,
    retry_budget: Union[m.RetryBudget, Mapping[str, Any], None] = UNSET,
) -> Call[m.QueuePolicy]:
    """Changes a queue's flow policy (admin key). A merge patch: a rule left
    out stays as it is, ``None`` removes it, a value sets it."""
    body = _patch(
        paused=paused,
        concurrency=concurrency,
        key_concurrency=key_concurrency,
        rate=rate,
        key_rate=key_rate,
        fairness=fairness,
        weights=weights,
        retry_budget=retry_budget,
    )
    return Call("PUT", f"v1/queues/{_seg(queue)}/policy", _as(m.QueuePolicy), body)


def pause_queue(queue: str) -> Call[m.QueuePolicy]:
    """Stops granting leases from a queue (admin key)."""
    return set_queue_policy(queue, paused=True)


def resume_queue(queue: str) -> Call[m.QueuePolicy]:
    """Grants leases from a paused queue again (admin key)."""
    return set_queue_policy(queue, paused=False)


def queue_retention(queue: str) -> Call[m.QueueRetention]:
    """How long a queue keeps finished jobs."""
    return Call("GET", f"v1/queues/{_seg(queue)}/retention", _as(m.QueueRetention))


def set_queue_retention(
    queue: str,
    *,
    retain_succeeded_secs: Optional[int] = None,
    retain_failed_secs: Optional[int] = None,
) -> Call[m.QueueRetention]:
    """Sets how long a queue keeps finished jobs (admin key); ``None``
    follows the server's default."""
    body = {
        "retain_succeeded_secs": retain_succeeded_secs,
        "retain_failed_secs": retain_failed_secs,
    }
    return Call("PUT", f"v1/queues/{_seg(queue)}/retention", _as(m.QueueRetention), body)


def put_resource(
    name: str,
    *,
    breaker: Union[m.BreakerConfig, Mapping[str, Any], None] = None,
    concurrency: Optional[int] = None,
    rate: Union[m.Rate, Mapping[str, Any], None] = None,
) -> Call[m.Resource]:
    """Sets a downstream's whole configuration (admin key): its circuit
    breaker, concurrency and rate over every queue."""
    body = _fields(breaker=breaker, concurrency=concurrency, rate=rate)
    return Call("PUT", f"v1/resources/{_seg(name)}", _as(m.Resource), body)


def get_resource(name: str) -> Call[m.Resource]:
    """A downstream's configuration and its breaker's state now."""
    return Call("GET", f"v1/resources/{_seg(name)}", _as(m.Resource))


def list_resources() -> Call[List[m.Resource]]:
    """Every configured downstream."""
    return Call("GET", "v1/resources", _list_of(m.Resource, "resources"))


def delete_resource(name: str) -> Call[None]:
    """Removes a downstream's configuration (admin key)."""
    return Call("DELETE", f"v1/resources/{_seg(name)}", _nothing)


# -- payload schemas -----------------------------------------------------


def put_schema(
    queue: str,
    version: int,
    schema: JSON,
    *,
    output_schema: Optional[JSON] = None,
    force: Optional[bool] = None,
    reason: Optional[str] = None,
) -> Call[m.PayloadSchema]:
    """Registers ``version`` of the queue's payload schema (admin key): a
    JSON Schema (draft 2020-12) every later enqueue is validated against. A
    version that breaks the previous one raises
    :class:`~steadfast.SchemaIncompatible` unless ``force=True`` with a
    ``reason``; registering the same content again returns it."""
    body = _fields(output_schema=output_schema, force=force, reason=reason)
    body["schema"] = schema
    path = f"v1/queues/{_seg(queue)}/schemas/{int(version)}"
    return Call("PUT", path, _as(m.PayloadSchema), body)


def get_schema(queue: str, version: int) -> Call[m.PayloadSchema]:
    """One registered version of a queue's payload schema."""
    return Call("GET", f"v1/queues/{_seg(queue)}/schemas/{int(version)}", _as(m.PayloadSchema))


def list_schemas(queue: Optional[str] = None) -> Call[List[m.PayloadSchema]]:
    """Every registered version, by queue then version (one queue's if given)."""
    return Call(
        "GET", "v1/schemas", _list_of(m.PayloadSchema, "schemas"), query=_query(queue=queue)
    )


# -- producers and the outbox --------------------------------------------


def get_producer(id: str) -> Call[m.ProducerInfo]:
    """The highest sequence number received from a producer, and the ranges
    below it never received: empty ``missing`` proves nothing was lost."""
    return Call("GET", f"v1/producers/{_seg(id)}", _as(m.ProducerInfo))


def list_producers(
    *, after: Optional[str] = None, limit: Optional[int] = None
) -> Call[m.ProducerList]:
    """One page of the tenant's producers by id; pass ``next_after`` on."""
    query = _query(after=after, limit=limit)
    return Call("GET", "v1/producers", _as(m.ProducerList), query=query)


def list_outbox() -> Call[List[m.OutboxEntry]]:
    """Requests written with ``steadfast.enqueue(...)`` (PostgreSQL) whose
    jobs are not made yet, or were refused, with the error."""
    return Call("GET", "v1/outbox", _list_of(m.OutboxEntry, "entries"))


# -- schedules -----------------------------------------------------------


def put_schedule(
    name: str,
    cron: str,
    queue: str,
    payload: JSON = None,
    *,
    timezone: Optional[str] = None,
    overlap: Optional[m.ScheduleOverlap] = None,
    catch_up: Optional[m.ScheduleCatchUp] = None,
) -> Call[m.ScheduleInfo]:
    """Creates or replaces a schedule (admin key): each tick of ``cron`` (5
    fields, or 6 with seconds first) in ``timezone`` (default UTC) enqueues
    one job to ``queue`` with ``payload``, however many nodes run."""
    body = _fields(cron=cron, queue=queue, timezone=timezone, overlap=overlap, catch_up=catch_up)
    body["payload"] = payload
    return Call("PUT", f"v1/schedules/{_seg(name)}", _as(m.ScheduleInfo), body)


def get_schedule(name: str) -> Call[m.ScheduleInfo]:
    """A schedule with its next 5 fire times and its last tick."""
    return Call("GET", f"v1/schedules/{_seg(name)}", _as(m.ScheduleInfo))


def list_schedules() -> Call[List[m.ScheduleInfo]]:
    """The tenant's schedules by name."""
    return Call("GET", "v1/schedules", _list_of(m.ScheduleInfo, "schedules"))


def delete_schedule(name: str) -> Call[None]:
    """Removes a schedule (admin key); the jobs it made stay."""
    return Call("DELETE", f"v1/schedules/{_seg(name)}", _nothing)


def pause_schedule(name: str) -> Call[m.ScheduleInfo]:
    """Stops a schedule firing until it is resumed (admin key)."""
    return Call("POST", f"v1/schedules/{_seg(name)}/pause", _as(m.ScheduleInfo), {})


def resume_schedule(name: str) -> Call[m.ScheduleInfo]:
    """Fires again from the first tick after now (admin key)."""
    return Call("POST", f"v1/schedules/{_seg(name)}/resume", _as(m.ScheduleInfo), {})


# -- audit and SLOs ------------------------------------------------------


def audit(
    *,
    since: Optional[datetime] = None,
    until: Optional[datetime] = None,
    actor: Optional[str] = None,
    action: Optional[str] = None,
    job_id: Optional[str] = None,
    limit: Optional[int] = None,
    cursor: Optional[str] = None,
) -> Call[m.AuditList]:
    """One page of the tenant's audit records, oldest first."""
    query = _query(
        since=since,
        until=until,
        actor=actor,
        action=action,
        job_id=job_id,
        limit=limit,
        cursor=cursor,
    )
    return Call("GET", "v1/audit", _as(m.AuditList), query=query)


def audit_head() -> Call[m.AuditCheckpoint]:
    """A signed checkpoint of the tenant's audit chain: keep it elsewhere."""
    return Call("GET", "v1/audit/head", _as(m.AuditCheckpoint))


def verify_audit() -> Call[m.AuditVerification]:
    """Verifies the tenant's whole audit chain on the server."""
    return Call("GET", "v1/audit/verify", _as(m.AuditVerification))


def create_slo(
    name: str,
    queue: str,
    objective: float,
    *,
    latency_threshold_ms: Optional[int] = None,
    window_days: Optional[int] = None,
    notify_url: Optional[str] = None,
) -> Call[m.SloStatus]:
    """Sets an objective for one queue (admin key)."""
    body = _fields(
        name=name,
        queue=queue,
        objective=objective,
        latency_threshold_ms=latency_threshold_ms,
        window_days=window_days,
        notify_url=notify_url,
    )
    return Call("POST", "v1/slos", _as(m.SloStatus), body)


def list_slos() -> Call[List[m.SloStatus]]:
    """Every SLO, with burn rates, budget left and firing alerts."""
    return Call("GET", "v1/slos", _list_of(m.SloStatus, "slos"))


def delete_slo(id: str) -> Call[None]:
    """Removes an SLO (admin key)."""
    return Call("DELETE", f"v1/slos/{_seg(id)}", _nothing)


# -- webhook sources ----------------------------------------------------


def create_source(
    kind: Union[m.SourceKind, str],
    name: str,
    queue: str,
    *,
    secret: Optional[str] = None,
    config: Optional[Mapping[str, Any]] = None,
    dedup_window_secs: Optional[int] = None,
    tolerance_secs: Optional[int] = None,
) -> Call[m.Source]:
    """Creates a webhook source (admin key): where one provider delivers,
    and the queue its events become jobs in."""
    body = _fields(
        kind=kind,
        name=name,
        queue=queue,
        secret=secret,
        config=config,
        dedup_window_secs=dedup_window_secs,
        tolerance_secs=tolerance_secs,
    )
    return Call("POST", "v1/sources", _as(m.Source), body)


def list_sources() -> Call[List[m.Source]]:
    """Every webhook source of the tenant."""
    return Call("GET", "v1/sources", _list_of(m.Source, "sources"))


def get_source(id: str) -> Call[m.Source]:
    """One webhook source."""
    return Call("GET", f"v1/sources/{_seg(id)}", _as(m.Source))


def delete_source(id: str) -> Call[None]:
    """Removes a webhook source (admin key); deliveries to it are refused."""
    return Call("DELETE", f"v1/sources/{_seg(id)}", _nothing)


def add_source_secret(
    id: str,
    *,
    secret: Optional[str] = None,
    expires_at: Optional[datetime] = None,
    retire_others_after_secs: Optional[int] = None,
) -> Call[m.SecretAdded]:
    """Adds a secret to a source (admin key), so a rotation drops no event."""
    body = _fields(
        secret=secret, expires_at=expires_at, retire_others_after_secs=retire_others_after_secs
    )
    return Call("POST", f"v1/sources/{_seg(id)}/secrets", _as(m.SecretAdded), body)


def source_events(
    id: str, *, limit: Optional[int] = None, cursor: Optional[str] = None
) -> Call[m.InboxEventList]:
    """One page of a source's stored events, newest first."""
    query = _query(limit=limit, cursor=cursor)
    return Call("GET", f"v1/sources/{_seg(id)}/events", _as(m.InboxEventList), query=query)


def replay_event(id: str, event_id: str) -> Call[m.Replayed]:
    """Makes a new job from a stored event (admin key)."""
    path = f"v1/sources/{_seg(id)}/events/{_seg(event_id)}/replay"
    return Call("POST", path, _as(m.Replayed))


# -- what the worker sends, with outputs already encoded ------------------
# The typed calls above with a raw body and a raw answer: the worker encodes
# each output once, when the handler returns, and splices it into batches.


def _raw(body: JSON, _headers: Headers) -> Any:
    return body


def _results(body: JSON, _headers: Headers) -> Any:
    return body["results"]


def _jobs(body: JSON, _headers: Headers) -> Any:
    return body["jobs"]


def _json(value: JSON) -> str:
    # Strings (ids, tokens, step names) take the C encoder's fast path.
    return _string(value) if type(value) is str else dumps(value)


def encoded_completion(id: str, lease_token: str, output: str) -> str:
    """One item of ``complete_batch`` (``output`` is encoded JSON)."""
    return f'{{"id":{_json(id)},"lease_token":{_json(lease_token)},"output":{output}}}'


def complete_encoded(id: str, lease_token: str, output: str) -> Call[Any]:
    body = RawJson(f'{{"lease_token":{_json(lease_token)},"output":{output}}}')
    return dataclasses.replace(complete(id, lease_token), body=body, read=_raw)


def complete_batch_encoded(items: Sequence[str]) -> Call[Any]:
    """``complete_batch`` of :func:`encoded_completion` items; answers the raw results."""
    body = RawJson('{"completions":[' + ",".join(items) + "]}")
    return dataclasses.replace(complete_batch([]), body=body, read=_results)


def encoded_step(
    id: str,
    lease_token: str,
    step: str,
    action: str,
    output: Optional[str],
    traceparent: Optional[str],
) -> str:
    """One item of ``steps_batch`` (``output`` is encoded JSON, for a checkpoint)."""
    fields = {"id": id, "lease_token": lease_token, "step": step, "action": action}
    if traceparent:
        fields["traceparent"] = traceparent
    head = _json(fields)
    return head if output is None else f'{head[:-1]},"output":{output}}}'


def step_encoded(
    id: str, lease_token: str, step: str, output: Optional[str], traceparent: Optional[str]
) -> Call[Any]:
    """A lone start (``output`` None) or checkpoint on its own route."""
    if output is None:
        call = start_step(id, step, lease_token)
    else:
        body = RawJson(f'{{"lease_token":{_json(lease_token)},"output":{output}}}')
        call = dataclasses.replace(checkpoint_step(id, step, lease_token), body=body)
    return dataclasses.replace(call, read=_raw, traceparent=traceparent)


def steps_batch_encoded(items: Sequence[str]) -> Call[Any]:
    """``steps_batch`` of :func:`encoded_step` items; answers the raw results."""
    body = RawJson('{"steps":[' + ",".join(items) + "]}")
    return dataclasses.replace(steps_batch([]), body=body, read=_results)


def lease_raw(queues: Sequence[str], worker_id: str, max_jobs: int, wait_ms: int) -> Call[Any]:
    """``lease``, answering the raw jobs (the worker reads what it needs)."""
    call = lease(queues, worker_id=worker_id, max_jobs=max_jobs, wait_ms=wait_ms)
    return dataclasses.replace(call, read=_jobs)


# -- health ---------------------------------------------------------------


def health() -> Call[m.Health]:
    """Whether the server process is up (``GET /healthz``)."""
    return Call("GET", "healthz", _as(m.Health))
