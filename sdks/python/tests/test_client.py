"""Every client call against a real server, through the blocking client; the
async client is checked to have the same calls and to make them alike."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

import steadfast
from conftest import Server, eventually, wait_state
from steadfast import _api, models


def test_the_url_and_key_come_from_the_environment(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEADFAST_URL", server.url)
    monkeypatch.setenv("STEADFAST_KEY", server.admin_key)
    with steadfast.Client() as client:
        assert client.health().status == "ok"
    monkeypatch.delenv("STEADFAST_KEY")
    with pytest.raises(steadfast.ConfigError, match="STEADFAST_KEY"):
        steadfast.Client()


def test_enqueue_get_and_replay(client: steadfast.Client, queue: str) -> None:
    run_at = datetime.now(timezone.utc) + timedelta(hours=1)

    def enqueue() -> steadfast.EnqueuedJob:
        return client.enqueue(
            queue,
            {"to": "a@example.com"},
            idempotency_key=f"{queue}-1",
            max_attempts=3,
            timeout_secs=30,
            run_at=run_at,
            priority=5,
            flow_key="customer-7",
            resource="mailer",
        )

    job = enqueue()
    assert isinstance(job.id, str)
    assert uuid.UUID(job.id)
    assert job.state == "scheduled"
    assert not job.replayed
    assert (job.max_attempts, job.timeout_secs, job.priority) == (3, 30, 5)
    assert (job.flow_key, job.resource) == ("customer-7", "mailer")
    assert abs(job.run_at - run_at) < timedelta(milliseconds=1)
    assert job.run_at.tzinfo is not None

    again = enqueue()  # the same request again
    assert again.replayed
    assert again.id == job.id

    got = client.get(job.id)
    assert got.payload == {"to": "a@example.com"}
    assert got.attempts == []
    assert got.idempotency_key == f"{queue}-1"


def test_a_naive_run_at_is_refused_before_sending(client: steadfast.Client, queue: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        client.enqueue(queue, {}, run_at=datetime(2030, 1, 1))


def test_singletons_answer_how_they_were_taken(client: steadfast.Client, queue: str) -> None:
    first = client.enqueue(queue, {"n": 1}, singleton={"key": "nightly"})
    skipped = client.enqueue(queue, {"n": 2}, singleton=models.SingletonRequest(key="nightly"))
    assert skipped.id == first.id
    assert skipped.singleton == "skipped"
    replaced = client.enqueue(queue, {"n": 3}, singleton={"key": "nightly", "mode": "replace"})
    assert replaced.singleton == "replaced"
    assert client.get(first.id).payload == {"n": 3}


def test_batches_lists_and_pages(client: steadfast.Client, queue: str) -> None:
    items = client.enqueue_batch(
        [
            models.EnqueueRequest(payload={"i": 0}, queue=queue, priority=1),
            {"queue": queue, "payload": {"i": 1}, "idempotency_key": f"{queue}-b1"},
            {"queue": queue, "payload": {"i": 2}},
        ]
    )
    assert [item.job.payload for item in items] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert not any(item.replayed for item in items)
    page = client.list_jobs(queue=queue, state="queued", limit=2)
    assert len(page.jobs) == 2
    assert page.next_cursor
    rest = client.list_jobs(queue=queue, state="queued", cursor=page.next_cursor)
    assert {j.id for j in page.jobs + rest.jobs} == {item.job.id for item in items}
    assert sorted(j.payload["i"] for j in client.iter_jobs(queue=queue, page=1)) == [0, 1, 2]


def test_cancel_retry_and_signals(client: steadfast.Client, queue: str) -> None:
    job = client.enqueue(queue, {})
    signalled = client.signal(job.id, "approval", {"by": "ops"}, reason="approved by phone")
    assert not signalled.woke
    cancelled = client.cancel(job.id)
    assert cancelled.state == "cancelled"
    assert cancelled.finished_at is not None
    retried = client.retry(job.id, reason="the customer asked again")
    assert retried.state == "queued"
    detail = client.get(job.id)
    assert [(s.name, s.payload) for s in detail.signals or []] == [("approval", {"by": "ops"})]
    reasons = {r.action: r.summary.get("reason") for r in client.audit(job_id=job.id).records}
    assert reasons["job.retried"] == "the customer asked again"
    assert reasons["signal.received"] == "approved by phone"
    assert reasons["job.cancelled"] is None


def test_bulk_retry_by_filter(client: steadfast.Client, queue: str) -> None:
    for _ in range(3):
        client.enqueue(queue, {})
        [leased] = client.lease([queue], worker_id="by-hand")
        client.fail(leased.id, leased.lease_token, "no", kind="declined", retryable=False)
    assert client.count_bulk("retry", queue=queue, error_kind="declined") == 3
    started = client.bulk("retry", "the processor is back", queue=queue, state="dead")
    assert (started.status, started.matched, started.created_by.name) == (
        "running",
        3,
        started.created_by.name,
    )
    assert started.filter.queue == queue
    assert started.filter.state == "dead"
    deadline = time.monotonic() + 30
    while (done := client.get_bulk(started.id)).status == "running":
        assert time.monotonic() < deadline, "the bulk retry did not finish"
        time.sleep(0.05)
    assert (done.status, done.done, done.failed) == ("completed", 3, 0)
    assert started.id in [op.id for op in client.list_bulk()]
    assert client.cancel_bulk(started.id).status == "completed"
    assert {job.state for job in client.iter_jobs(queue=queue)} == {"queued"}


def test_replay_and_resolving_an_uncertain_step(client: steadfast.Client, queue: str) -> None:
    job = client.enqueue(queue, {"claim": 1})
    [leased] = client.lease([queue], worker_id="by-hand")
    client.start_step(leased.id, "charge", leased.lease_token)
    client.release(leased.id, leased.lease_token)
    assert [s.state for s in client.get(job.id).steps or []] == ["uncertain"]

    resolved = client.resolve_step(
        job.id, "charge", "succeeded", "ch_1 exists", output={"charge": "ch_1"}
    )
    assert [(s.state, s.output) for s in resolved.steps or []] == [
        ("completed", {"charge": "ch_1"})
    ]
    with pytest.raises(steadfast.InvalidState):
        client.resolve_step(job.id, "charge", "reexecute", "again")

    replay = client.replay(job.id, "run it once more", payload={"claim": 2})
    assert (replay.replay_of, replay.payload, replay.queue) == (job.id, {"claim": 2}, queue)
    same = client.replay(job.id, "and with its own payload")
    assert same.payload == {"claim": 1}


def test_the_worker_calls_by_hand(client: steadfast.Client, queue: str) -> None:
    parent = client.enqueue(queue, {"claim": 1}, max_attempts=2)
    [leased] = client.lease([queue], worker_id="by-hand", max_jobs=5)
    assert leased.id == parent.id
    assert leased.attempt == 1
    assert leased.lease_ttl_ms > 0
    assert leased.steps == {}
    beat = client.heartbeat(leased.id, leased.lease_token)
    assert beat.lease_expires_at > datetime.now(timezone.utc)

    started = client.start_step(leased.id, "charge", leased.lease_token)
    assert started.state == "started"
    assert started.idempotency_key == f"{leased.id}/charge"
    stored = client.checkpoint_step(leased.id, "charge", leased.lease_token, {"charge": "ch_1"})
    assert stored.state == "completed"
    assert stored.output == {"charge": "ch_1"}
    results = client.steps_batch(
        [
            {"id": leased.id, "lease_token": leased.lease_token, "step": "b", "action": "start"},
            models.StepOperation(
                action="checkpoint",
                id=leased.id,
                lease_token=leased.lease_token,
                step="b",
                output=[1, 2],
            ),
            {"id": leased.id, "lease_token": "wrong", "step": "c", "action": "start"},
        ]
    )
    assert results[1].info is not None
    assert results[1].info.output == [1, 2]
    assert results[1].first is True
    assert results[2].error is not None
    assert results[2].error.code == "lease_lost"

    child = client.spawn_child(
        leased.id, leased.lease_token, "notify", {"queue": f"{queue}-children", "payload": {}}
    )
    assert child.parent == models.ParentInfo(id=leased.id, step="notify")
    again = client.spawn_child(
        leased.id, leased.lease_token, "notify", {"queue": f"{queue}-children", "payload": {}}
    )
    assert again.id == child.id

    waited = client.wait(leased.id, leased.lease_token, "sleep:nap", sleep_ms=60_000)
    assert waited.suspended
    assert client.get(leased.id).wait == models.WaitInfo(
        step="sleep:nap",
        until=client.get(leased.id).wait.until,  # type: ignore[union-attr]
    )


def test_complete_fail_and_batches_of_completions(client: steadfast.Client, queue: str) -> None:
    for i in range(4):
        client.enqueue(queue, {"i": i}, max_attempts=1)
    leased = client.lease([queue], worker_id="by-hand", max_jobs=4)
    assert len(leased) == 4
    done = client.complete(leased[0].id, leased[0].lease_token, {"ok": 0})
    assert (done.state, done.output) == ("succeeded", {"ok": 0})
    results = client.complete_batch(
        [
            {"id": leased[1].id, "lease_token": leased[1].lease_token, "output": 1},
            models.Completion(id=leased[2].id, lease_token="stale"),
        ]
    )
    assert results[0].state == "succeeded"
    assert results[1].error is not None
    assert results[1].error.code == "lease_lost"
    failed = client.fail(
        leased[3].id,
        leased[3].lease_token,
        "the mailer said no",
        kind="downstream_unavailable",
        retryable=False,
    )
    assert failed.state == "dead"
    assert failed.last_error == models.ErrorInfo(
        message="the mailer said no", kind="downstream_unavailable"
    )
    history = client.get(leased[3].id).attempts or []
    assert [a.outcome for a in history] == ["failed"]


def test_queues_policies_retention_and_resources(client: steadfast.Client, queue: str) -> None:
    client.enqueue(queue, {}, flow_key="k1")
    policy = client.set_queue_policy(
        queue,
        concurrency=4,
        key_concurrency=1,
        rate=models.Rate(limit=10, period_ms=1000),
        retry_budget={"ratio": 0.1},
    )
    assert (policy.concurrency, policy.key_concurrency) == (4, 1)
    assert policy.rate == models.Rate(limit=10, period_ms=1000, burst=10)
    cleared = client.set_queue_policy(queue, rate=None)
    assert cleared.rate is None
    assert cleared.concurrency == 4, "a rule left out stays"
    assert client.pause_queue(queue).paused
    assert not client.resume_queue(queue).paused
    assert client.queue_policy(queue) == client.resume_queue(queue)
    [info] = [q for q in client.list_queues() if q.queue == queue]
    assert info.counts.queued == 1
    assert info.held.key_concurrency == 0

    retention = client.set_queue_retention(queue, retain_succeeded_secs=3600)
    assert retention.effective_succeeded_secs == 3600
    assert client.queue_retention(queue).retain_failed_secs is None

    resource = client.put_resource(
        f"{queue}-api",
        breaker=models.BreakerConfig(
            failure_ratio=0.5, min_requests=10, window_secs=30, open_secs=5, half_open_probes=1
        ),
        concurrency=3,
    )
    assert resource.state == "closed"
    assert client.get_resource(f"{queue}-api").concurrency == 3
    assert f"{queue}-api" in [r.name for r in client.list_resources()]
    client.delete_resource(f"{queue}-api")
    with pytest.raises(steadfast.NotFound):
        client.get_resource(f"{queue}-api")


def test_payload_schemas(client: steadfast.Client, queue: str) -> None:
    schema = {
        "type": "object",
        "required": ["order_id"],
        "properties": {"order_id": {"type": "string"}},
    }
    first = client.put_schema(queue, 1, schema)
    assert (first.version, first.schema, first.forced) == (1, schema, False)
    assert client.put_schema(queue, 1, schema) == first, "the same content again is a replay"
    job = client.enqueue(queue, {"order_id": "o1"})
    assert job.schema_version == 1
    with pytest.raises(steadfast.PayloadInvalid) as invalid:
        client.enqueue(queue, {"order_id": 7})
    assert [(v.pointer, v.rule) for v in invalid.value.violations] == [("/order_id", "type")]
    breaking = {**schema, "required": ["order_id", "currency"]}
    with pytest.raises(steadfast.SchemaIncompatible) as refused:
        client.put_schema(queue, 2, breaking)
    assert [(v.pointer, v.rule) for v in refused.value.violations] == [
        ("/required", "required_added")
    ]
    forced = client.put_schema(queue, 2, breaking, force=True, reason="currency is required now")
    assert (forced.forced, forced.reason) == (True, "currency is required now")
    pinned = client.enqueue(queue, {"order_id": "o2"}, schema_version=1)
    assert pinned.schema_version == 1
    assert [s.version for s in client.list_schemas(queue)] == [1, 2]
    assert client.get_schema(queue, 2).schema == breaking


def test_producer_sequence_numbers(client: steadfast.Client, queue: str) -> None:
    sent = [
        client.enqueue(queue, {"point": n}, producer={"id": "truck-12", "sequence": n})
        for n in (1, 2, 5)
    ]
    again = client.enqueue(queue, {"point": 2}, producer=models.ProducerRequest("truck-12", 2))
    assert again.replayed
    assert again.id == sent[1].id
    seen = client.get_producer("truck-12")
    assert (seen.highest_sequence, seen.missing_count, seen.gaps_total) == (5, 2, 1)
    assert seen.missing == [models.SequenceRange(start=3, end=4)]
    assert [p.id for p in client.list_producers().producers] == ["truck-12"]
    assert client.list_outbox() == [], "the embedded store has no outbox"


def test_schedules(client: steadfast.Client, queue: str) -> None:
    created = client.put_schedule(
        "pulse", "* * * * * *", queue, {"hello": 1}, timezone="Europe/Berlin", overlap="allow"
    )
    assert (created.name, created.timezone, created.overlap, created.catch_up) == (
        "pulse",
        "Europe/Berlin",
        "allow",
        "none",
    )
    assert len(created.next_fire_times) == 5
    fired = eventually(lambda: client.get_schedule("pulse").last_job_id, what="a tick")
    job = client.get(fired)
    assert job.payload == {"hello": 1}
    assert job.idempotency_key is not None
    assert job.idempotency_key.startswith("schedule:pulse:")
    paused = client.pause_schedule("pulse")
    assert paused.paused
    assert paused.next_fire_times == []
    assert client.resume_schedule("pulse").paused is False
    assert [s.name for s in client.list_schedules()] == ["pulse"]
    with pytest.raises(steadfast.ValidationFailed):
        client.put_schedule("bad", "* * *", queue)
    client.delete_schedule("pulse")
    with pytest.raises(steadfast.NotFound):
        client.get_schedule("pulse")


def test_audit_and_slos(client: steadfast.Client, queue: str) -> None:
    job = client.enqueue(queue, {})
    page = client.audit(job_id=job.id)
    assert [r.action for r in page.records] == ["job.enqueued"]
    record = page.records[0]
    assert record.actor.kind == "key"
    assert len(record.hash) == 64
    since = client.audit(since=record.at, action="job.enqueued", limit=1000)
    assert record.seq in [r.seq for r in since.records]
    head = client.audit_head()
    assert head.seq >= record.seq
    assert head.algorithm == "ed25519"
    verified = client.verify_audit()
    assert verified.intact
    assert verified.head_seq >= record.seq

    slo = client.create_slo(f"{queue}-slo", queue, 0.99, latency_threshold_ms=5000)
    assert slo.objective == 0.99
    assert slo.window_days == 28
    assert slo.id in [s.id for s in client.list_slos()]
    client.delete_slo(slo.id)
    assert slo.id not in [s.id for s in client.list_slos()]


def _deliver_github(server: Server, source: models.Source, delivery: str, body: bytes) -> None:
    assert source.secret is not None
    signature = hmac.new(source.secret.encode(), body, hashlib.sha256).hexdigest()
    answer = httpx.post(
        server.url + source.ingest_path,
        content=body,
        headers={
            "content-type": "application/json",
            "x-github-event": "push",
            "x-github-delivery": delivery,
            "x-hub-signature-256": f"sha256={signature}",
        },
    )
    assert answer.status_code == 200, answer.text


def test_webhook_sources(server: Server, client: steadfast.Client, queue: str) -> None:
    source = client.create_source("github", f"{queue}-gh", queue)
    assert source.kind == "github"
    assert source.secret, "Steadfast made the secret and answers it once"
    assert client.get_source(source.id).secret is None
    assert source.id in [s.id for s in client.list_sources()]
    _deliver_github(server, source, "delivery-1", b'{"ref": "main"}')
    [event] = client.source_events(source.id, limit=10).events
    assert event.event_id == "delivery-1"
    replayed = client.replay_event(source.id, "delivery-1")
    assert replayed.job_id != event.job_id
    assert client.get(replayed.job_id).payload["body"] == {"ref": "main"}
    added = client.add_source_secret(source.id, retire_others_after_secs=60)
    assert added.secret
    assert len(added.source.secrets) == 2
    client.delete_source(source.id)
    with pytest.raises(steadfast.NotFound):
        client.get_source(source.id)


def test_calls_join_the_callers_trace(server: Server, queue: str) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with server.client(traceparent=traceparent) as client:
        job = client.enqueue(queue, {})
    [leased] = server.client().lease([queue], worker_id="trace")
    assert leased.id == job.id
    assert leased.traceparent is not None
    assert leased.traceparent.split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_the_async_client_has_every_call_of_the_blocking_one() -> None:
    calls = {
        name
        for name, fn in vars(_api).items()
        if inspect.isfunction(fn)
        and not name.startswith("_")
        and str(inspect.signature(fn).return_annotation).startswith("Call[")
        and fn.__module__ == _api.__name__
        and "encoded" not in name
        and name != "lease_raw"
    }
    for cls in (steadfast.Client, steadfast.AsyncClient):
        missing = {name for name in calls if not hasattr(cls, name)}
        assert not missing, f"{cls.__name__} lacks {missing}"
        for name in calls:
            assert inspect.signature(getattr(_api, name)) == inspect.signature(
                getattr(cls, name).__wrapped__
            )


def test_the_async_client_makes_the_same_calls(server: Server, queue: str) -> None:
    async def flow() -> None:
        async with steadfast.AsyncClient(server.url, server.admin_key) as client:
            job = await client.enqueue(queue, {"a": 1}, idempotency_key=f"{queue}-x")
            again = await client.enqueue(queue, {"a": 1}, idempotency_key=f"{queue}-x")
            assert again.replayed
            assert again.id == job.id
            [leased] = await client.lease([queue], worker_id="async")
            await client.complete(leased.id, leased.lease_token, {"done": True})
            assert (await client.get(job.id)).state == "succeeded"
            assert [j.id async for j in client.iter_jobs(queue=queue)] == [job.id]
            with pytest.raises(steadfast.NotFound):
                await client.get(str(uuid.uuid4()))

    asyncio.run(flow())


def test_a_finished_job_reads_back_whole(client: steadfast.Client, queue: str) -> None:
    job = client.enqueue(queue, {"n": 1})
    [leased] = client.lease([queue], worker_id="whole")
    client.start_step(leased.id, "only", leased.lease_token)
    client.checkpoint_step(leased.id, "only", leased.lease_token, "x")
    client.complete(leased.id, leased.lease_token, {"answer": 42})
    done = wait_state(client, job.id, "succeeded")
    assert done.output == {"answer": 42}
    assert [(s.name, s.state, s.output) for s in done.steps or []] == [("only", "completed", "x")]
    assert json.loads(json.dumps(done.payload)) == {"n": 1}
