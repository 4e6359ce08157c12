"""The worker runtime in this process, against a real server: handlers of
both kinds, memoized steps, waits, children, batching, fencing, failures,
shutdown, logging and tracing."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Dict, List

import pytest

import steadfast
from conftest import Server, eventually, running, wait_state


def test_plain_and_async_handlers_run_and_memoize_steps(
    client: steadfast.Client, queue: str
) -> None:
    calls: Dict[str, List[str]] = {"sync": [], "async": []}
    worker = steadfast.Worker(client, concurrency=4, poll_wait=0.5)

    @worker.handler(f"{queue}-sync")
    def plain(ctx: steadfast.JobContext, payload: Dict[str, Any]) -> Dict[str, Any]:
        def charge(key: str) -> str:
            calls["sync"].append(key)
            return f"charged {payload['amount']}"

        first = ctx.step("charge", charge)
        second = ctx.step("charge", charge)
        return {"first": first, "second": second, "attempt": ctx.attempt, "queue": ctx.queue}

    @worker.handler(f"{queue}-async")
    async def coroutine(ctx: steadfast.AsyncJobContext, payload: Dict[str, Any]) -> Any:
        async def lookup(key: str) -> Dict[str, str]:
            calls["async"].append(key)
            await asyncio.sleep(0)
            return {"key": key}

        found = await ctx.step("lookup", lookup)
        plain_fn = await ctx.step("plain-fn", lambda key: len(key))
        return {"found": found, "len": plain_fn}

    sync_job = client.enqueue(f"{queue}-sync", {"amount": 12})
    async_job = client.enqueue(f"{queue}-async", {})
    with running(worker):
        done = wait_state(client, sync_job.id, "succeeded")
        assert done.output == {
            "first": "charged 12",
            "second": "charged 12",
            "attempt": 1,
            "queue": f"{queue}-sync",
        }
        assert calls["sync"] == [f"{sync_job.id}/charge"], "the step ran once, with its key"
        done = wait_state(client, async_job.id, "succeeded")
        assert done.output == {
            "found": {"key": f"{async_job.id}/lookup"},
            "len": len(f"{async_job.id}/plain-fn"),
        }
        assert calls["async"] == [f"{async_job.id}/lookup"]


def test_a_step_checkpointed_by_an_earlier_attempt_is_not_run_again(
    client: steadfast.Client, queue: str
) -> None:
    job = client.enqueue(queue, {})
    [leased] = client.lease([queue], worker_id="first-attempt")
    client.start_step(leased.id, "charge", leased.lease_token)
    client.checkpoint_step(leased.id, "charge", leased.lease_token, {"charge": "ch_1"})
    client.fail(leased.id, leased.lease_token, "crashed after the charge")
    ran: List[str] = []
    worker = steadfast.Worker(client, concurrency=1, poll_wait=0.5)

    def charge_again(key: str) -> Dict[str, str]:
        ran.append(key)
        return {"charge": "ch_2"}

    @worker.handler(queue)
    def handle(ctx: steadfast.JobContext, payload: Any) -> Any:
        charge = ctx.step("charge", charge_again)
        return {"charge": charge, "attempt": ctx.attempt, "uncertain": ctx.uncertain("charge")}

    with running(worker):
        done = wait_state(client, job.id, "succeeded")
    assert ran == []
    assert done.output == {"charge": {"charge": "ch_1"}, "attempt": 2, "uncertain": None}


def test_sleeps_signals_and_children(client: steadfast.Client, queue: str) -> None:
    worker = steadfast.Worker(client, concurrency=2, poll_wait=0.5)
    attempts: List[int] = []

    @worker.handler(queue)
    def flow(ctx: steadfast.JobContext, payload: Any) -> Any:
        attempts.append(ctx.attempt)
        ctx.sleep("cool-off", 0.05)
        approval = ctx.wait_for_signal("approval", timeout=3600)
        child = ctx.spawn("receipt", f"{queue}-receipts", {"for": ctx.id}, priority=3)
        missing = ctx.wait_for_signal("never", timeout=1)
        return {"approval": approval, "child": child.id, "missing": missing}

    job = client.enqueue(queue, {})
    with running(worker):
        waiting = eventually(
            lambda: (lambda j: j if j.wait and j.wait.signal == "approval" else None)(
                client.get(job.id)
            ),
            what="the job to wait for its approval",
        )
        assert waiting.state == "waiting"
        assert client.signal(job.id, "approval", {"by": "ops"}).woke
        done = wait_state(client, job.id, "succeeded")
    assert done.output is not None
    assert done.output["approval"] == {"by": "ops"}
    assert done.output["missing"] is None, "the wait timed out"
    child = client.get(done.output["child"])
    assert (child.queue, child.payload, child.priority) == (f"{queue}-receipts", {"for": job.id}, 3)
    assert child.parent is not None
    assert child.parent.id == job.id
    assert len(attempts) == 4, f"one attempt per park and one to finish: {attempts}"


def test_completions_and_steps_go_in_batches(start_server: Any) -> None:
    server: Server = start_server()
    client = server.client()
    queue = "batched"
    client.enqueue_batch([{"queue": queue, "payload": {"i": i}} for i in range(300)])
    worker = steadfast.Worker(client, concurrency=64, poll_wait=0.5)

    @worker.handler(queue)
    async def handle(ctx: steadfast.AsyncJobContext, payload: Dict[str, int]) -> int:
        return int(await ctx.step("double", lambda key: payload["i"] * 2))

    with running(worker):
        eventually(
            lambda: len(list(client.iter_jobs(queue=queue, state="succeeded"))) == 300,
            what="300 jobs to succeed",
        )
    outputs = sorted(j.output for j in client.iter_jobs(queue=queue, state="succeeded"))
    assert outputs == [2 * i for i in range(300)]
    requests = server.requests()
    batched = requests.get("POST /v1/jobs/batch/complete", 0)
    alone = requests.get("POST /v1/jobs/{id}/complete", 0)
    assert batched > 0, requests
    assert batched + alone < 300, f"completions were batched: {requests}"
    assert requests.get("POST /v1/jobs/batch/steps", 0) > 0, requests


def test_a_batch_the_server_refuses_whole_is_sent_item_by_item(start_server: Any) -> None:
    server: Server = start_server("--max-batch-jobs", "2")
    client = server.client()
    queue = "small-batches"
    for chunk in range(0, 60, 2):
        client.enqueue_batch([{"queue": queue, "payload": i} for i in range(chunk, chunk + 2)])
    worker = steadfast.Worker(client, concurrency=30, poll_wait=0.5)

    @worker.handler(queue)
    async def handle(ctx: steadfast.AsyncJobContext, payload: int) -> int:
        return payload

    with running(worker):
        eventually(
            lambda: len(list(client.iter_jobs(queue=queue, state="succeeded"))) == 60,
            what="60 jobs to succeed",
        )
    requests = server.requests()
    assert requests.get("POST /v1/jobs/batch/complete 422", 0) > 0, "batches were refused"
    assert requests.get("POST /v1/jobs/{id}/complete 200", 0) > 0, requests


def test_failures_are_reported_with_their_kind(client: steadfast.Client, queue: str) -> None:
    worker = steadfast.Worker(client, concurrency=3, poll_wait=0.5)

    @worker.handler(queue)
    def handle(ctx: steadfast.JobContext, payload: str) -> Any:
        if payload == "fatal":
            raise steadfast.JobFailed("bad input", kind="invalid_claim", retryable=False)
        if payload == "later":
            raise steadfast.JobFailed("busy", kind="rate_limited", retry_after=3600)
        if payload == "set":
            return {1, 2}
        raise KeyError("missing-field")

    fatal = client.enqueue(queue, "fatal")
    later = client.enqueue(queue, "later")
    crash = client.enqueue(queue, "crash", max_attempts=1)
    not_json = client.enqueue(queue, "set")
    with running(worker):
        dead = wait_state(client, fatal.id, "dead")
        assert dead.last_error == steadfast.models.ErrorInfo(
            message="bad input", kind="invalid_claim"
        )
        held = wait_state(client, later.id, "scheduled")
        assert held.run_at.timestamp() > time.time() + 3000, "retry_after holds it back"
        assert held.attempts_left == held.max_attempts, "a rate-limited attempt is free"
        crashed = wait_state(client, crash.id, "dead")
        assert crashed.last_error is not None
        assert crashed.last_error.message.startswith("KeyError: 'missing-field'")
        assert "test_worker.py" in crashed.last_error.message, "where it was raised"
        refused = wait_state(client, not_json.id, "dead")
        assert refused.last_error is not None
        assert "not JSON" in refused.last_error.message


def test_an_output_the_queue_refuses_fails_the_job(client: steadfast.Client, queue: str) -> None:
    client.put_schema(
        queue,
        1,
        {"type": "object"},
        output_schema={"type": "object", "required": ["receipt"]},
    )
    worker = steadfast.Worker(client, concurrency=2, poll_wait=0.5)

    @worker.handler(queue)
    def handle(ctx: steadfast.JobContext, payload: Dict[str, Any]) -> Any:
        assert ctx.schema_version == 1
        return {"receipt": "r1"} if payload.get("good") else {"oops": True}

    good = client.enqueue(queue, {"good": True})
    bad = client.enqueue(queue, {"good": False})
    with running(worker):
        assert wait_state(client, good.id, "succeeded").output == {"receipt": "r1"}
        dead = wait_state(client, bad.id, "dead")
    assert dead.last_error is not None
    assert dead.last_error.kind == "output_invalid"
    assert "receipt" in dead.last_error.message
    assert dead.attempt == 1, "not retried: the same code returns the same output"


def test_a_handler_whose_lease_is_lost_is_told_and_cannot_complete(start_server: Any) -> None:
    server: Server = start_server("--lease-ttl-secs", "1")
    client = server.client()
    queue = "fenced"
    cancelled_inside = threading.Event()
    release = threading.Event()
    seen: Dict[str, Any] = {}
    contexts: List[steadfast.JobContext] = []
    worker = steadfast.Worker(client, concurrency=2, poll_wait=0.5)

    @worker.handler(f"{queue}-async")
    async def slow(ctx: steadfast.AsyncJobContext, payload: Any) -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled_inside.set()
            raise
        return "never"

    @worker.handler(f"{queue}-sync")
    def blocking(ctx: steadfast.JobContext, payload: Any) -> str:
        contexts.append(ctx)
        release.wait(60)
        seen["lost"] = ctx.lease_lost
        try:
            ctx.step("after", lambda key: "should not run")
        except steadfast.LeaseLost:
            seen["step"] = "LeaseLost"
        return "from the fenced attempt"

    coroutine_job = client.enqueue(f"{queue}-async", {})
    thread_job = client.enqueue(f"{queue}-sync", {})
    with running(worker):
        wait_state(client, coroutine_job.id, "running")
        wait_state(client, thread_job.id, "running")
        client.cancel(coroutine_job.id)
        client.cancel(thread_job.id)
        assert cancelled_inside.wait(30), "the coroutine was cancelled when its lease was lost"
        # The next heartbeat (a third of the 1 s lease) is refused.
        eventually(lambda: contexts and contexts[0].lease_lost, what="the heartbeat to fail")
        release.set()
        eventually(lambda: "step" in seen, what="the plain handler to end")
    assert seen == {"lost": True, "step": "LeaseLost"}
    job = client.get(thread_job.id)
    assert job.state == "cancelled"
    assert job.output is None
    assert [s.name for s in job.steps or []] == []
    requests = server.requests()
    for route in ("POST /v1/jobs/{id}/complete", "POST /v1/jobs/batch/complete"):
        assert requests.get(route, 0) == 0, f"the fenced attempts sent no completion: {requests}"
    assert requests.get("POST /v1/jobs/batch/steps", 0) == 0
    assert requests.get("POST /v1/jobs/{id}/steps/{name}/start", 0) == 0


def test_shutdown_finishes_running_jobs_within_the_grace_and_hands_back_the_rest(
    client: steadfast.Client, queue: str
) -> None:
    started = threading.Event()
    quick = steadfast.Worker(client, concurrency=1, poll_wait=0.5, shutdown_grace=30)

    @quick.handler(f"{queue}-quick")
    def short(ctx: steadfast.JobContext, payload: Any) -> str:
        started.set()
        time.sleep(0.3)
        return "finished during the grace"

    job = client.enqueue(f"{queue}-quick", {})
    with running(quick):
        assert started.wait(30)
    assert client.get(job.id).output == "finished during the grace"

    stuck_started = threading.Event()
    stuck = steadfast.Worker(client, concurrency=1, poll_wait=0.5, shutdown_grace=0.2)

    @stuck.handler(f"{queue}-stuck")
    async def forever(ctx: steadfast.AsyncJobContext, payload: Any) -> str:
        stuck_started.set()
        await asyncio.sleep(3600)
        return "never"

    stuck_job = client.enqueue(f"{queue}-stuck", {})
    with running(stuck):
        assert stuck_started.wait(30)
    handed_back = client.get(stuck_job.id)
    assert handed_back.state == "queued", "ready again at once"
    assert handed_back.last_error is None, "a hand-back is not a failure"
    assert handed_back.attempts_left == handed_back.max_attempts, "nor a spent attempt"
    assert [a.outcome for a in handed_back.attempts or []] == ["released"]


def test_log_records_carry_the_job(
    client: steadfast.Client, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    worker = steadfast.Worker(client, concurrency=2, poll_wait=0.5)

    @worker.handler(queue)
    def handle(ctx: steadfast.JobContext, payload: Any) -> None:
        logging.getLogger("claims").info("processing")
        ctx.log.info("via the context")

    @worker.handler(f"{queue}-async")
    async def handle_async(ctx: steadfast.AsyncJobContext, payload: Any) -> None:
        logging.getLogger("claims").info("processing async")

    job = client.enqueue(queue, {})
    async_job = client.enqueue(f"{queue}-async", {})
    with running(worker):
        wait_state(client, job.id, "succeeded")
        wait_state(client, async_job.id, "succeeded")
    records = {r.getMessage(): r for r in caplog.records}
    for message, job_id in [
        ("processing", job.id),
        ("via the context", job.id),
        ("processing async", async_job.id),
    ]:
        assert records[message].job_id == job_id  # type: ignore[attr-defined]
        assert records[message].attempt == 1  # type: ignore[attr-defined]


def test_the_jobs_trace_is_the_current_context(server: Server, queue: str) -> None:
    from opentelemetry import trace

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with server.client(traceparent=f"00-{trace_id}-00f067aa0ba902b7-01") as producer:
        job = producer.enqueue(queue, {})
    client = server.client()
    worker = steadfast.Worker(client, concurrency=1, poll_wait=0.5)

    @worker.handler(queue)
    def handle(ctx: steadfast.JobContext, payload: Any) -> str:
        return format(trace.get_current_span().get_span_context().trace_id, "032x")

    with running(worker):
        done = wait_state(client, job.id, "succeeded")
    assert done.output == trace_id


def test_heartbeats_keep_jobs_longer_than_their_lease(start_server: Any) -> None:
    server: Server = start_server("--lease-ttl-secs", "1")
    client = server.client()
    worker = steadfast.Worker(client, concurrency=3, poll_wait=0.5)
    started = threading.Semaphore(0)

    @worker.handler("long")
    def long(ctx: steadfast.JobContext, payload: int) -> int:
        started.release()
        time.sleep(2.5)  # work that outlasts the 1 s lease twice over
        return payload

    first = client.enqueue("long", 1)
    with running(worker):
        assert started.acquire(timeout=30)
        # The others start while the first runs: each keeps its own rhythm.
        later = [client.enqueue("long", n) for n in (2, 3)]
        done = [wait_state(client, job.id, "succeeded") for job in [first, *later]]
    for job in done:
        history = client.get(job.id).attempts or []
        assert [a.outcome for a in history] == ["succeeded"], history


def test_jobs_are_leased_ahead_while_they_are_short(client: steadfast.Client, queue: str) -> None:
    ended: Dict[str, float] = {}
    worker = steadfast.Worker(client, concurrency=1, poll_wait=0.5)

    @worker.handler(queue)
    def short(ctx: steadfast.JobContext, payload: int) -> int:
        time.sleep(0.02)  # a short job's work
        ended[ctx.id] = time.time()
        return payload

    jobs = [client.enqueue(queue, i) for i in range(20)]
    with running(worker):
        for job in jobs:
            wait_state(client, job.id, "succeeded")
    leased = {j.id: (client.get(j.id).attempts or [])[0].started_at.timestamp() for j in jobs}
    order = sorted(jobs, key=lambda j: ended[j.id])
    ahead = [
        later.id for earlier, later in zip(order, order[1:]) if leased[later.id] < ended[earlier.id]
    ]
    assert ahead, "some job was leased while the one before it still ran"


def test_a_job_whose_lease_lapsed_while_waiting_locally_is_not_started(
    start_server: Any,
) -> None:
    server: Server = start_server("--lease-ttl-secs", "1", "--retry-base-ms", "10")
    client = server.client()
    seen: List[Any] = []
    worker = steadfast.Worker(client, concurrency=1, poll_wait=0.5)

    @worker.handler("mixed")
    def handle(ctx: steadfast.JobContext, payload: str) -> str:
        seen.append((payload, ctx.attempt))
        if payload == "slow":
            time.sleep(2.0)  # while the job leased ahead waits past its 1 s lease
        return payload

    names = [f"quick-{i}" for i in range(8)] + ["slow"] + [f"after-{i}" for i in range(3)]
    jobs = {name: client.enqueue("mixed", name) for name in names}
    with running(worker):
        for job in jobs.values():
            wait_state(client, job.id, "succeeded")
    lapsed = [
        name
        for name, job in jobs.items()
        if [a.outcome for a in client.get(job.id).attempts or []] == ["lease_expired", "succeeded"]
    ]
    assert lapsed, "a job leased ahead waited past its lease"
    for name in lapsed:
        assert (name, 1) not in seen, f"{name}'s lapsed attempt was not started"
        assert (name, 2) in seen
