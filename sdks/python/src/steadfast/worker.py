"""The worker runtime: lease, run handlers with bounded concurrency,
heartbeat, report in batches, and shut down gracefully.

One event loop does all the talking to the server. Coroutine handlers run
on it; plain handlers run in a pool of ``concurrency`` threads, and their
context's calls are handed to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import queue as _queue
import signal
import socket
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, TypeVar, Union

from . import _api, _batch, _tracing, _transport, errors
from ._codec import dumps
from .client import AsyncClient, Client
from .context import AsyncJobContext, JobContext, JobFailed, Suspended, _Run

JSON = Any
Handler = Callable[..., Any]
H = TypeVar("H", bound=Handler)

logger = logging.getLogger("steadfast.worker")

#: Most jobs one lease request asks for (the server's own bound is 1,000).
MAX_JOBS_PER_LEASE = 1000
#: How long to wait after a lease request failed before the next.
LEASE_RETRY_SECS = 0.5
#: The error kind a job handed back at shutdown is failed with, by a server
#: older than the release route.
SHUTDOWN_KIND = "worker_shutdown"
#: Tries of a completion whose request got no answer or a 503.
COMPLETION_TRIES = 3
#: How often heartbeats are looked at while no job runs.
IDLE_SWEEP_SECS = 1.0
#: At shutdown, how long jobs whose handler ended may still take to report.
REPORT_GRACE_SECS = 10.0

_job_logging: contextvars.ContextVar[Optional[Tuple[str, int]]] = contextvars.ContextVar(
    "steadfast_job", default=None
)


def _install_log_fields() -> None:
    """Every log record made while a handler runs carries ``job_id`` and
    ``attempt``, whichever logger made it. (Records made elsewhere do not
    have them, so ``extra={"job_id": ...}`` still works there.)"""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_steadfast", False):
        return

    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made = factory(*args, **kwargs)
        job = _job_logging.get()
        if job is not None:
            made.job_id, made.attempt = job
        return made

    record._steadfast = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(record)


class _Pace:
    """How long handlers take, to decide how far to lease ahead. A job leased
    ahead waits locally while its lease runs down, so the worker leases
    ahead (up to its concurrency) only while handlers take under a tenth of
    the lease time on average."""

    def __init__(self) -> None:
        self.average = 0.0
        self.ttl = 0.0

    def record(self, took: float, ttl: float) -> None:
        # Weight 1/8 to the newest: steady under noise, quick to notice slow jobs.
        self.average = took if self.average == 0 else self.average + (took - self.average) / 8
        self.ttl = ttl

    def lease_ahead(self, concurrency: int) -> int:
        short = self.average > 0 and self.average * 10 < self.ttl
        return concurrency if short else 0


class _Threads:
    """The pool plain handlers run in. Its threads are daemons: a handler
    stuck past the shutdown grace (its job already handed back) must not
    keep the process from exiting, as ``ThreadPoolExecutor``'s would.
    Results go back to the loop in bunches: one wake-up of the loop for
    whatever finished meanwhile, not one per job."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        self._work: _queue.SimpleQueue[Optional[Callable[[], None]]] = _queue.SimpleQueue()
        self._size = size
        self._started = 0
        self._finished: Deque[Tuple[asyncio.Future[Any], Any, Optional[BaseException]]] = deque()
        self._lock = threading.Lock()
        self._wake_pending = False

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        context = contextvars.copy_context()

        def work() -> None:
            result: Any
            error: Optional[BaseException]
            try:
                result, error = context.run(fn), None
            except StopIteration as raised:
                # A future refuses StopIteration (it would end the coroutine
                # awaiting it): report it as what it is, a bug in the handler.
                result, error = None, RuntimeError(f"the handler raised StopIteration: {raised!r}")
            except BaseException as raised:
                result, error = None, raised
            self._finish(future, result, error)

        if self._started < self._size:
            self._started += 1
            name = f"steadfast-handler-{self._started}"
            threading.Thread(target=self._serve, name=name, daemon=True).start()
        self._work.put(work)
        return future

    def _finish(
        self, future: asyncio.Future[Any], result: Any, error: Optional[BaseException]
    ) -> None:
        self._finished.append((future, result, error))
        with self._lock:
            if self._wake_pending:
                return  # the wake-up already asked for will take this one too
            self._wake_pending = True
        # A handler that outlived the grace finds the worker's loop gone.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._settle_finished)

    def _settle_finished(self) -> None:
        with self._lock:
            self._wake_pending = False
        while self._finished:
            future, result, error = self._finished.popleft()
            try:
                _settle(future, result, error)
            except Exception as refused:  # no job may be stranded by another's result
                _settle(
                    future,
                    None,
                    RuntimeError(f"the handler's result could not be delivered: {refused!r}"),
                )

    def _serve(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                return
            work()

    def stop(self) -> None:
        for _ in range(self._started):
            self._work.put(None)


def _settle(future: asyncio.Future[Any], result: Any, error: Optional[BaseException]) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Completion(_batch.Item):
    __slots__ = ("encoded", "id", "output", "run")

    def __init__(self, run: _Run, output: str) -> None:
        super().__init__(len(output))
        self.run = run
        self.id = run.id
        self.output = output
        self.encoded = _api.encoded_completion(run.id, run.token, output)


class _StepCall(_batch.Item):
    __slots__ = ("encoded", "output", "run", "step")

    def __init__(self, run: _Run, step: str, output: Optional[str]) -> None:
        super().__init__(len(output or ""))
        self.run = run
        self.step = step
        self.output = output
        action = "start" if output is None else "checkpoint"
        self.encoded = _api.encoded_step(run.id, run.token, step, action, output, run.traceparent)


def _item_error(detail: Optional[Dict[str, Any]]) -> Optional[errors.ApiError]:
    if not detail:
        return None
    return errors.for_item(
        str(detail.get("code")), str(detail.get("message")), _transport.violations_of(detail)
    )


class _Steps:
    """Step starts and checkpoints of running jobs, batched."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.batcher: _batch.Batcher[_StepCall] = _batch.Batcher(self._send_batch, self._send_one)

    async def call(self, run: _Run, step: str, output: Optional[str]) -> Dict[str, Any]:
        item = _StepCall(run, step, output)
        self.batcher.push(item)
        info: Dict[str, Any] = await item.answer
        return info

    async def _send_batch(self, batch: List[_StepCall]) -> None:
        results = await self.client._send(_api.steps_batch_encoded([i.encoded for i in batch]))
        _batch.check_count(results, batch)
        for item, result in zip(batch, results):
            error: Optional[errors.SteadfastError] = _item_error(result.get("error"))
            if error is None and not result.get("info"):
                error = errors.SteadfastError("the server answered neither a step nor an error")
            item.settle(result.get("info"), error)

    async def _send_one(self, item: _StepCall) -> None:
        run = item.run
        call = _api.step_encoded(run.id, run.token, item.step, item.output, run.traceparent)
        item.settle(await run.client._send(call))


class _Completions:
    """Completions of running jobs, batched."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.batcher: _batch.Batcher[_Completion] = _batch.Batcher(self._send_batch, self._send_one)

    async def complete(self, run: _Run, output: str) -> None:
        """Reports the job's success; transient failures are tried again."""
        for attempt in range(1, COMPLETION_TRIES + 1):
            item = _Completion(run, output)
            self.batcher.push(item)
            try:
                await item.answer
                return
            except (
                errors.TransportError,
                errors.Unavailable,
                errors.StorageFull,
                errors.RateLimited,
            ):
                if attempt == COMPLETION_TRIES or run.lost:
                    raise
                await asyncio.sleep(0.2 * attempt)

    async def _send_batch(self, batch: List[_Completion]) -> None:
        results = await self.client._send(_api.complete_batch_encoded([i.encoded for i in batch]))
        _batch.check_count(results, batch)
        for item, result in zip(batch, results):
            item.settle(result.get("state"), _item_error(result.get("error")))

    async def _send_one(self, item: _Completion) -> None:
        run = item.run
        job = await run.client._send(_api.complete_encoded(run.id, run.token, item.output))
        item.settle(job.get("state"))


class _Heartbeats:
    """Heartbeats every running job at a third of its lease time, counted
    from when the lease arrived. One task sweeps the running jobs at a sixth
    of the shortest lease (so a beat is at most that late, well inside the
    lease), and is woken when a job with a shorter lease starts: cheaper per
    job than a timer each, as most jobs end before their first beat."""

    def __init__(self) -> None:
        self.due: Dict[_Run, float] = {}
        self.tick = IDLE_SWEEP_SECS
        self.changed = asyncio.Event()
        self.task: Optional[asyncio.Future[None]] = None
        self.in_flight: set[asyncio.Future[None]] = set()

    def add(self, run: _Run) -> None:
        due = run.leased_at + run.ttl / 3
        self.due[run] = due
        if self.task is None:
            self.task = _batch.detached(self._sweep())
        # Wake the sweep if it would look too late: for a shorter lease, or
        # for a job that waited locally and whose first beat is due already.
        if run.ttl / 6 < self.tick or due <= time.monotonic() + self.tick:
            self.changed.set()

    def remove(self, run: _Run) -> None:
        self.due.pop(run, None)

    async def _sweep(self) -> None:
        while True:
            now = time.monotonic()
            shortest = IDLE_SWEEP_SECS * 6
            for run, due in list(self.due.items()):
                shortest = min(shortest, run.ttl)
                if due <= now:
                    # A late beat (a busy loop, a frozen process) sets the
                    # rhythm from now: no burst of catch-up beats.
                    self.due[run] = max(due, now - run.ttl / 3) + run.ttl / 3
                    beat = _batch.detached(self._one(run))
                    self.in_flight.add(beat)
                    beat.add_done_callback(self.in_flight.discard)
            self.tick = max(0.01, shortest / 6)
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), self.tick)

    async def _one(self, run: _Run) -> None:
        sent_at = time.monotonic()
        try:
            await run.client.heartbeat(run.id, run.token)
            run.renewed(sent_at)
        except errors.LeaseLost:
            logger.warning("lease lost: job %s is no longer ours", run.id)
            self.remove(run)
            run.lose()
        except errors.SteadfastError as error:
            logger.warning("heartbeat for job %s failed: %s", run.id, error)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


class _Runtime:
    """What every running job shares with the worker loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, client: AsyncClient, concurrency: int
    ) -> None:
        self.loop = loop
        self.client = client
        self.steps = _Steps(client)
        self.completions = _Completions(client)
        self.heartbeats = _Heartbeats()
        self.threads = _Threads(loop, concurrency)
        self.pace = _Pace()


class Worker:
    """Runs handlers for the queues it serves.

    ::

        worker = steadfast.Worker(client, concurrency=8)

        @worker.handler("emails")
        def send(ctx, payload):
            return ctx.step("send", lambda key: mailer.send(payload, idempotency_key=key))

        worker.run()  # until SIGTERM or SIGINT

    ``concurrency`` bounds the jobs running at once (plain handlers run in
    that many threads). ``poll_wait`` is how long one lease request waits for
    work; ``shutdown_grace`` how long running jobs may take to finish once a
    stop was asked for, after which the rest are handed back.
    """

    def __init__(
        self,
        client: Union[Client, AsyncClient],
        concurrency: int = 8,
        *,
        worker_id: Optional[str] = None,
        poll_wait: float = 5.0,
        shutdown_grace: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0 <= poll_wait <= 30:
            raise ValueError("poll_wait must be 0 to 30 seconds")
        self.config = client.config
        self.concurrency = concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.poll_wait = poll_wait
        self.shutdown_grace = shutdown_grace
        self._handlers: Dict[str, Tuple[Handler, bool]] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stopping: Optional[asyncio.Event] = None
        self._stop_asked = threading.Event()
        self._grace_over: Optional[asyncio.Event] = None
        self._signals = 0

    def handler(self, queue: str) -> Callable[[H], H]:
        """Registers ``fn(ctx, payload)`` for ``queue``: a plain function (runs
        in a thread, gets a :class:`JobContext`) or a coroutine function (runs
        on the loop, gets an :class:`AsyncJobContext`). Its return value (JSON)
        becomes the job's output."""

        def register(fn: H) -> H:
            if queue in self._handlers:
                raise ValueError(f"queue {queue!r} already has a handler")
            self._handlers[queue] = (fn, inspect.iscoroutinefunction(fn))
            return fn

        return register

    def run(self) -> None:
        """Runs until SIGTERM or SIGINT, then shuts down gracefully (a second
        signal skips the grace period)."""
        asyncio.run(self.run_async(install_signals=True))

    def stop(self) -> None:
        """Asks the worker to shut down gracefully; callable from any thread."""
        self._stop_asked.set()
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)

    def _signal(self) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.warning("second signal: handing running jobs back now")
            self.shutdown_grace = 0
            if self._grace_over is not None:
                self._grace_over.set()
        self.stop()

    async def run_async(self, install_signals: bool = False) -> None:
        """Runs on the current event loop until :meth:`stop` (or a signal,
        with ``install_signals``)."""
        if not self._handlers:
            raise errors.ConfigError(
                "the worker has no handlers: register one with @worker.handler"
            )
        _install_log_fields()
        loop = asyncio.get_running_loop()
        self._loop, self._stopping = loop, asyncio.Event()
        self._grace_over = asyncio.Event()
        if self._stop_asked.is_set():
            self._stopping.set()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._signal)
        client = AsyncClient.from_config(self.config, max_connections=self.concurrency + 16)
        runtime = _Runtime(loop, client, self.concurrency)
        grace = self.shutdown_grace
        try:
            await _Loop(self, runtime).run()
        finally:
            runtime.heartbeats.stop()
            runtime.threads.stop()
            await client.aclose()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            # Ready to run again.
            self._loop, self._stopping, self._grace_over = None, None, None
            self._stop_asked.clear()
            self._signals, self.shutdown_grace = 0, grace


class _Loop:
    """The lease loop of one :meth:`Worker.run_async`."""

    def __init__(self, worker: Worker, runtime: _Runtime) -> None:
        self.worker = worker
        self.runtime = runtime
        self.queues = sorted(worker._handlers)
        self.free = worker.concurrency
        self.local: Deque[Tuple[Dict[str, Any], float]] = deque()
        self.leasing: Optional[asyncio.Task[Any]] = None
        self.running: Dict[_Run, asyncio.Task[None]] = {}
        self.wake = asyncio.Event()
        self.lease_after = 0.0

    def _woken(self, _: Any = None) -> None:
        self.wake.set()

    async def run(self) -> None:
        stopping = self.worker._stopping
        assert stopping is not None
        stop_waiter = asyncio.ensure_future(stopping.wait())
        stop_waiter.add_done_callback(self._woken)
        while not stopping.is_set():
            self._take_leased()
            self._start_local()
            self._lease_more()
            await self.wake.wait()
            self.wake.clear()
        logger.info(
            "worker stopping: no new leases; %d running, %d leased ahead",
            len(self.running),
            len(self.local),
        )
        await self._drain()

    def _take_leased(self) -> None:
        leasing = self.leasing
        if leasing is None or not leasing.done():
            return
        self.leasing = None
        error = leasing.exception()
        if error is None:
            now = time.monotonic()
            self.local.extend((job, now) for job in leasing.result())
        else:
            logger.warning("lease failed; retrying in %.1f s: %s", LEASE_RETRY_SECS, error)
            self.lease_after = time.monotonic() + LEASE_RETRY_SECS
            self.runtime.loop.call_later(LEASE_RETRY_SECS, self._woken)

    def _start_local(self) -> None:
        while self.local and self.free > 0:
            job, leased_at = self.local.popleft()
            self.free -= 1
            run = _Run(self.runtime, job, leased_at)
            task = asyncio.ensure_future(self._run_job(run))
            self.running[run] = task
            task.add_done_callback(lambda task, run=run: self._ended(task, run))  # type: ignore[misc]

    def _free_slot(self, run: _Run) -> None:
        """A job's slot is free once its handler has ended: a finished job is
        not running, and the next lease need not wait for its report."""
        if not run.slot_freed:
            run.slot_freed = True
            self.free += 1
            self.wake.set()

    def _ended(self, task: asyncio.Future[None], run: _Run) -> None:
        self.running.pop(run, None)
        self._free_slot(run)
        self.wake.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "job %s: the worker failed to run or report it",
                run.id,
                exc_info=task.exception(),
            )

    def _lease_more(self) -> None:
        wanted = (
            self.free + self.runtime.pace.lease_ahead(self.worker.concurrency) - len(self.local)
        )
        if self.leasing is not None or wanted <= 0 or time.monotonic() < self.lease_after:
            return
        call = _api.lease_raw(
            self.queues,
            self.worker.worker_id,
            min(wanted, MAX_JOBS_PER_LEASE),
            round(self.worker.poll_wait * 1000),
        )
        self.leasing = asyncio.ensure_future(self.runtime.client._send(call))
        self.leasing.add_done_callback(self._woken)

    async def _drain(self) -> None:
        """Lets running jobs and those leased ahead finish within the grace
        period, hands the rest back, and lets reports under way end."""
        await self._finish_within_grace()
        await self._hand_back_the_rest()
        await self._let_reports_end()

    async def _finish_within_grace(self) -> None:
        grace_over = self.worker._grace_over
        assert grace_over is not None
        self.runtime.loop.call_later(self.worker.shutdown_grace, grace_over.set)
        grace = asyncio.ensure_future(grace_over.wait())
        grace.add_done_callback(self._woken)
        # A lease in flight may already hold jobs on the server: take them too.
        if self.leasing is not None:
            await asyncio.wait([self.leasing, grace], return_when=asyncio.FIRST_COMPLETED)
            if not self.leasing.done():
                self.leasing.cancel()  # the grace is over: what it held will lapse
            self._take_leased()
        while (self.running or self.local) and not grace_over.is_set():
            self._start_local()
            self.wake.clear()
            await self.wake.wait()
        grace.cancel()

    async def _hand_back_the_rest(self) -> None:
        # Handlers that ended just now report rather than being handed back:
        # deliver what the threads finished, and let those jobs see it.
        self.runtime.threads._settle_finished()
        await asyncio.sleep(0)
        unfinished = [run for run in self.running if not run.finished]
        if unfinished or self.local:
            logger.warning(
                "grace period over: handing back %d running and %d unstarted jobs",
                len(unfinished),
                len(self.local),
            )
        handing_back = [self._hand_back(run) for run in unfinished]
        handing_back += [self._hand_back(_Run(self.runtime, job, at)) for job, at in self.local]
        self.local.clear()
        await asyncio.gather(*handing_back, return_exceptions=True)
        for run in unfinished:
            task = self.running.get(run)  # a cancelled coroutine may be gone already
            if task is not None:
                task.cancel()

    async def _let_reports_end(self) -> None:
        """Jobs whose handler ended are reporting: a bounded wait for them (a
        completion is tried at most COMPLETION_TRIES times)."""
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=REPORT_GRACE_SECS)
        for task in self.running.values():
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)

    async def _hand_back(self, run: _Run) -> None:
        """Releases the job: it is ready again at once, its attempt not spent,
        rather than after its lease lapses. Its handler, if still running, can
        no longer count. (A server without the release route gets a retryable
        failure of kind ``worker_shutdown`` instead.)"""
        if run.finished:
            return  # it ended meanwhile, and reports
        run.lose()
        self.runtime.heartbeats.remove(run)
        try:
            try:
                await run.client.release(run.id, run.token)
            except errors.RouteNotFound:
                await run.client.fail(
                    run.id,
                    run.token,
                    "the worker shut down before the job finished",
                    kind=SHUTDOWN_KIND,
                )
        except errors.SteadfastError as error:
            logger.info("could not hand back job %s (its lease will lapse): %s", run.id, error)

    async def _run_job(self, run: _Run) -> None:
        if time.monotonic() >= run.valid_until:
            return  # waited locally past its lease: another worker may hold it by now
        handler, is_async = self.worker._handlers[run.job["queue"]]
        self.runtime.heartbeats.add(run)
        started = time.monotonic()
        try:
            outcome = await self._call_handler(run, handler, is_async)
        finally:
            self.runtime.heartbeats.remove(run)
            self.runtime.pace.record(time.monotonic() - started, run.ttl)
        run.finished = True
        self._free_slot(run)
        await self._report(run, outcome)

    async def _call_handler(self, run: _Run, handler: Handler, is_async: bool) -> Tuple[bool, Any]:
        """``(True, output)`` or ``(False, exception)``."""
        label = (run.id, int(run.job["attempt"]))
        try:
            if is_async:
                # Inline, in this job's own task: losing the lease cancels it.
                run.handler_task = asyncio.current_task()
                _job_logging.set(label)
                try:
                    with _tracing.attached(run.traceparent):
                        return True, await handler(AsyncJobContext(run), run.job["payload"])
                finally:
                    run.handler_task = None
                    _job_logging.set(None)

            sync_context = JobContext(run)

            def call_sync() -> Any:
                _job_logging.set(label)
                with _tracing.attached(run.traceparent):
                    return handler(sync_context, run.job["payload"])

            return True, await self.runtime.threads.submit(call_sync)
        except asyncio.CancelledError:
            if run.lost:
                return False, errors.LeaseLost(409, "lease_lost", "the lease was lost")
            raise
        except (Exception, Suspended) as error:
            return False, error

    async def _report(self, run: _Run, outcome: Tuple[bool, Any]) -> None:
        succeeded, value = outcome
        if run.lost or isinstance(value, (Suspended, errors.LeaseLost)):
            return  # another attempt owns the job, or it parked: nothing to say
        try:
            if succeeded:
                try:
                    output = dumps(value, "the handler's result")
                except TypeError as error:
                    await run.client.fail(run.id, run.token, str(error), retryable=False)
                    return
                try:
                    await self.runtime.completions.complete(run, output)
                except errors.OutputInvalid as error:
                    await self._refuse_output(run, error)
            else:
                await self._fail(run, value)
        except errors.LeaseLost:
            pass  # another attempt owns the job now
        except Exception as error:
            logger.warning(
                "could not report job %s's outcome (its lease will lapse): %s", run.id, error
            )

    async def _refuse_output(self, run: _Run, error: errors.OutputInvalid) -> None:
        """The server refused the handler's result: the attempt fails, for
        good (the same code would return the same result again)."""
        found = "; ".join(f"{v.pointer or '/'}: {v.message}" for v in error.violations[:5])
        await run.client.fail(
            run.id,
            run.token,
            f"the output fails the queue's output schema: {found or error.message}",
            kind="output_invalid",
            retryable=False,
        )

    async def _fail(self, run: _Run, error: BaseException) -> None:
        if isinstance(error, JobFailed):
            retry_after_ms = None if error.retry_after is None else round(error.retry_after * 1000)
            await run.client.fail(
                run.id,
                run.token,
                error.message,
                kind=error.kind,
                retryable=error.retryable,
                retry_after_ms=retry_after_ms,
            )
            return
        logger.warning(
            "job %s attempt %s failed",
            run.id,
            run.job["attempt"],
            exc_info=(type(error), error, error.__traceback__),
            extra={"job_id": run.id, "attempt": run.job["attempt"]},
        )
        kind = "timeout" if isinstance(error, TimeoutError) else None
        await run.client.fail(run.id, run.token, _describe(error), kind=kind)


def _describe(error: BaseException) -> str:
    """The failure as the job's history shows it: the exception, then where
    it was raised (the server keeps the first 4 KiB)."""
    head = "".join(traceback.format_exception_only(type(error), error)).strip()
    frames = traceback.format_tb(error.__traceback__)[-3:]
    return head + ("\n" + "".join(frames) if frames else "")
