"""What a handler sees of its job: the payload, and durable building blocks.

A plain ``def`` handler gets a :class:`JobContext`, whose calls block; an
``async def`` handler gets an :class:`AsyncJobContext`, whose calls are
awaited. Both run the same protocol, in :class:`_Run` on the worker's event
loop: the blocking context hands each call to the loop and waits.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Union

from . import _api, errors
from . import models as m
from ._codec import decode, dumps, parse_time

if TYPE_CHECKING:
    from .client import AsyncClient
    from .worker import _Runtime

JSON = Any


class Suspended(BaseException):
    """The job parked (a durable sleep or a signal wait) and this attempt is
    over: the worker reports nothing, and the job resumes in a later attempt.

    A ``BaseException``, like ``asyncio.CancelledError``, so that a handler's
    ``except Exception`` does not swallow it. Let it propagate.
    """


class JobFailed(Exception):
    """Raise it from a handler to fail the job on your terms.

    ``kind`` classifies the failure: ``downstream_unavailable``, ``timeout``
    and ``rate_limited`` count against the job's resource's circuit breaker,
    and ``rate_limited`` spends no attempt. ``retryable=False`` sends the job
    to ``dead`` at once. ``retry_after`` (seconds) holds the next attempt back
    at least that long, e.g. a downstream's ``Retry-After``.

    Any other exception fails the job too, retryably, with its type and
    message.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: Optional[str] = None,
        retryable: bool = True,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.retryable = retryable
        self.retry_after = retry_after


_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def _check_name(name: str) -> None:
    """Step and signal names are 1-128 ASCII letters, digits and ``-_.:``:
    refused here, before a batch carries them, as the server would."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ValueError(f"{name!r}: a step or signal name is 1-128 ASCII letters, digits and -_.:")


class _Started:
    """A step's start: either its stored output (done) or its key to run with."""

    __slots__ = ("done", "key", "output")

    def __init__(self, done: bool, key: str, output: JSON) -> None:
        self.done = done
        self.key = key
        self.output = output


class _Run:
    """One attempt of one job, on the worker's event loop: the protocol both
    contexts speak (memoized steps, waits, children, fencing)."""

    def __init__(self, runtime: _Runtime, job: Dict[str, Any], leased_at: float) -> None:
        self.runtime = runtime
        self.job = job
        self.ttl: float = job["lease_ttl_ms"] / 1000
        #: When the lease arrived (``time.monotonic()``).
        self.leased_at = leased_at
        #: Until when the lease is surely ours by this process's clock: a
        #: tenth of the lease short of its end, for the answer's trip (a
        #: long-poll lease is granted just before it is answered), or
        #: counted from when the last answered heartbeat was sent.
        self.valid_until = leased_at + self.ttl * 0.9
        self.id: str = job["id"]
        self.token: str = job["lease_token"]
        self.traceparent: Optional[str] = job.get("traceparent")
        self.completed: Dict[str, JSON] = dict(job.get("steps") or {})
        self.lost = False
        #: The handler has ended (its outcome may still be reporting).
        self.finished = False
        #: Its concurrency slot was given back.
        self.slot_freed = False
        #: Cancelled when the lease is lost, if the handler is a coroutine.
        self.handler_task: Optional[asyncio.Future[Any]] = None
        self._client: Optional[AsyncClient] = None

    @property
    def client(self) -> AsyncClient:
        """The worker's client, in the job's trace (made when first needed:
        most jobs only complete, in batches)."""
        if self._client is None:
            self._client = self.runtime.client.with_traceparent(self.traceparent)
        return self._client

    def lose(self) -> None:
        """The lease is gone: nothing this attempt does may count any more."""
        if not self.lost:
            self.lost = True
            # A coroutine handler is cancelled at its next await. When it found
            # out itself, it gets the LeaseLost first, and the cancel only if
            # it carries on regardless.
            task = self.handler_task
            if task is not None and task is asyncio.current_task():
                asyncio.get_running_loop().call_soon(self._cancel_if_still_handling, task)
            elif task is not None:
                task.cancel()

    def renewed(self, sent_at: float) -> None:
        """A heartbeat sent at ``sent_at`` was answered: the lease runs on."""
        self.valid_until = max(self.valid_until, sent_at + self.ttl)

    def _cancel_if_still_handling(self, task: Optional[asyncio.Future[Any]]) -> None:
        if task is not None and self.handler_task is task:
            task.cancel()

    def check(self) -> None:
        """Raises :class:`LeaseLost` if the lease is lost, or has run out by
        this process's clock (a process frozen past its lease, e.g. by
        SIGSTOP or a long GC pause, finds out here without asking the server)."""
        if not self.lost and time.monotonic() >= self.valid_until:
            self.lose()
        if self.lost:
            raise errors.LeaseLost(
                409, "lease_lost", "the lease was lost: stop working on this job"
            )

    def _lease_lost(self, error: BaseException) -> BaseException:
        if isinstance(error, errors.LeaseLost):
            self.lose()
        return error

    async def step_call(self, step: str, output: Optional[str]) -> Optional[Dict[str, Any]]:
        """Starts (``output`` None) or checkpoints ``step``, batched with
        other running jobs' step calls."""
        self.check()
        try:
            info: Optional[Dict[str, Any]] = await self.runtime.steps.call(self, step, output)
        except errors.SteadfastError as error:
            raise self._lease_lost(error) from None
        return info

    async def begin_step(self, name: str) -> _Started:
        _check_name(name)
        self.check()
        if name in self.completed:
            return _Started(True, "", self.completed[name])
        info = await self.step_call(name, None)
        if info is None:
            raise errors.SteadfastError(
                f"the server answered neither a step nor an error for {name!r}"
            )
        if info.get("state") == "completed":
            self.completed[name] = info.get("output")
            return _Started(True, info["idempotency_key"], info.get("output"))
        return _Started(False, info["idempotency_key"], None)

    async def finish_step(self, name: str, value: JSON) -> JSON:
        info = await self.step_call(name, dumps(value, f"step {name!r}'s result"))
        output = None if info is None else info.get("output")
        self.completed[name] = output
        return output

    async def park(self, step: str, **wait: Any) -> JSON:
        """Waits in ``step``: its output if the wait already ended, else
        the job parks and :class:`Suspended` ends this attempt."""
        self.check()
        if step in self.completed:
            return self.completed[step]
        try:
            answer = await self.client.wait(self.id, self.token, step, **wait)
        except errors.SteadfastError as error:
            raise self._lease_lost(error) from None
        if answer.suspended or answer.step is None:
            self.lost = True  # the attempt is over: nothing more may count
            raise Suspended(f"job {self.id} waits in step {step!r}")
        self.completed[step] = answer.step.output
        return answer.step.output

    async def sleep(self, name: str, seconds: float) -> None:
        _check_name(name)
        await self.park(f"sleep:{name}", sleep_ms=max(0, round(seconds * 1000)))

    async def wait_for_signal(self, name: str, timeout: Optional[float]) -> JSON:
        _check_name(name)
        timeout_secs = None if timeout is None else max(1, round(timeout))
        outcome = await self.park(f"signal:{name}", signal=name, timeout_secs=timeout_secs)
        if isinstance(outcome, Mapping) and outcome.get("outcome") == "signal":
            return outcome.get("payload")
        return None

    async def spawn(self, step: str, queue: str, payload: JSON, options: Dict[str, Any]) -> m.Job:
        self.check()
        job = _api.enqueue(queue, payload, **options).body
        try:
            return await self.client.spawn_child(self.id, self.token, step, job)
        except errors.SteadfastError as error:
            raise self._lease_lost(error) from None


_LOG = logging.getLogger("steadfast.job")


class _Context:
    """What both contexts share: the job's facts."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self.log = _LOG
        """A logger for the handler; like every logger's records while the
        handler runs, its records carry ``job_id`` and ``attempt``."""

    @property
    def id(self) -> str:
        return self._run.id

    @property
    def queue(self) -> str:
        queue: str = self._run.job["queue"]
        return queue

    @property
    def attempt(self) -> int:
        """1 for the first attempt."""
        attempt: int = self._run.job["attempt"]
        return attempt

    @property
    def payload(self) -> JSON:
        return self._run.job["payload"]

    @property
    def lease_token(self) -> str:
        return self._run.token

    @property
    def flow_key(self) -> Optional[str]:
        return self._run.job.get("flow_key")

    @property
    def resource(self) -> Optional[str]:
        return self._run.job.get("resource")

    @property
    def schema_version(self) -> Optional[int]:
        """The version of the queue's payload schema the payload passed."""
        return self._run.job.get("schema_version")

    @property
    def traceparent(self) -> Optional[str]:
        """The job's W3C trace context, if it has one."""
        return self._run.traceparent

    @property
    def deadline(self) -> datetime:
        """The attempt's hard deadline: heartbeats stop extending the lease there."""
        return parse_time(self._run.job["deadline"])

    @property
    def lease_lost(self) -> bool:
        """Whether the lease was lost (expired, superseded, cancelled). From
        then on nothing this attempt does counts: stop as soon as you can."""
        return self._run.lost

    @property
    def job(self) -> m.LeasedJob:
        """The leased job as the server sent it."""
        return decode(m.LeasedJob, self._run.job)

    def uncertain(self, name: str) -> Optional[Dict[str, Any]]:
        """If an earlier attempt started step ``name`` and vanished before its
        checkpoint, what is known of that attempt (``attempt``,
        ``worker_id``, ``started_at``, ``attempt_ended_at``,
        ``attempt_outcome``): its side effect may or may not have happened,
        so ask the downstream before acting again. ``None`` otherwise."""
        uncertain = (self._run.job.get("uncertain_steps") or {}).get(name)
        return dict(uncertain) if uncertain is not None else None


StepFn = Callable[[str], Any]
Duration = Union[float, timedelta]


def _seconds(duration: Duration) -> float:
    return duration.total_seconds() if isinstance(duration, timedelta) else duration


class JobContext(_Context):
    """The context of a plain ``def`` handler: every call blocks."""

    def _call(self, coroutine: Any) -> Any:
        """Runs ``coroutine`` on the worker's loop and waits for it. A job
        handed back at shutdown is lost: the loop may be gone by then."""
        try:
            self._run.check()
            future = asyncio.run_coroutine_threadsafe(coroutine, self._run.runtime.loop)
        except BaseException:
            coroutine.close()
            raise
        return future.result()

    def step(self, name: str, fn: StepFn) -> JSON:
        """Runs ``fn(idempotency_key)`` once for this job, memoized.

        If an earlier attempt checkpointed step ``name``, its stored result is
        returned and ``fn`` is not called. Otherwise the step is marked
        started, ``fn`` runs with the step's stable key (pass it to
        downstreams that honour idempotency keys), and its result (JSON) is
        checkpointed and returned as stored.
        """
        started: _Started = self._call(self._run.begin_step(name))
        if started.done:
            return started.output
        value = fn(started.key)
        if inspect.isawaitable(value):
            raise TypeError(f"step {name!r}: a plain handler's step must not return an awaitable")
        return self._call(self._run.finish_step(name, value))

    def sleep(self, name: str, duration: Duration) -> None:
        """A durable sleep in step ``name``: the job parks (this attempt ends
        with :class:`Suspended`) and resumes after ``duration`` seconds;
        then the call returns at once."""
        self._call(self._run.sleep(name, _seconds(duration)))

    def wait_for_signal(self, name: str, timeout: Optional[Duration] = None) -> JSON:
        """Waits for signal ``name`` (an approval, an external event), parking
        the job meanwhile. Returns the signal's payload, or ``None`` when
        ``timeout`` (seconds) passed first."""
        seconds = None if timeout is None else _seconds(timeout)
        return self._call(self._run.wait_for_signal(name, seconds))

    def spawn(self, step: str, queue: str, payload: JSON, **options: Any) -> m.Job:
        """Enqueues a child job from step ``step``, once: every attempt gets
        the same child. ``options`` are :meth:`Client.enqueue`'s."""
        job: m.Job = self._call(self._run.spawn(step, queue, payload, options))
        return job


class AsyncJobContext(_Context):
    """The context of an ``async def`` handler: every call is awaited."""

    async def step(self, name: str, fn: StepFn) -> JSON:
        """:meth:`JobContext.step`; ``fn`` may be a plain function or a coroutine function."""
        started = await self._run.begin_step(name)
        if started.done:
            return started.output
        value = fn(started.key)
        if inspect.isawaitable(value):
            value = await value
        return await self._run.finish_step(name, value)

    async def sleep(self, name: str, duration: Duration) -> None:
        """:meth:`JobContext.sleep`."""
        await self._run.sleep(name, _seconds(duration))

    async def wait_for_signal(self, name: str, timeout: Optional[Duration] = None) -> JSON:
        """:meth:`JobContext.wait_for_signal`."""
        seconds = None if timeout is None else _seconds(timeout)
        return await self._run.wait_for_signal(name, seconds)

    async def spawn(self, step: str, queue: str, payload: JSON, **options: Any) -> m.Job:
        """:meth:`JobContext.spawn`."""
        return await self._run.spawn(step, queue, payload, options)
