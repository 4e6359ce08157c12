"""The clients: :class:`Client` blocks, :class:`AsyncClient` awaits.

Both have the same methods, made from the call builders in ``_api`` (one
place says what each call sends and how its answer reads)::

    client = steadfast.Client()  # STEADFAST_URL and STEADFAST_KEY
    job = client.enqueue("emails", {"to": "a@example.com"}, idempotency_key="signup-42")
    print(job.id, job.state)
    client.get(job.id)
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import importlib.util
import sys
import time
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Optional,
    Type,
    TypeVar,
    Union,
)

import httpx

from . import _api, errors
from . import models as m
from ._transport import RATE_LIMITED_RETRIES, Config, Verify, answer, request, retry_after

T = TypeVar("T")

if TYPE_CHECKING:
    from typing_extensions import Concatenate, ParamSpec

    P = ParamSpec("P")
    ClientT = TypeVar("ClientT")

    def _sync(builder: Callable[P, _api.Call[T]]) -> Callable[Concatenate[Client, P], T]: ...

    def _async(
        builder: Callable[P, _api.Call[T]],
    ) -> Callable[Concatenate[AsyncClient, P], Awaitable[T]]: ...

else:

    def _sync(builder):
        @functools.wraps(builder)
        def method(self, *args, **kwargs):
            return self._send(builder(*args, **kwargs))

        return method

    def _async(builder):
        @functools.wraps(builder)
        async def method(self, *args, **kwargs):
            return await self._send(builder(*args, **kwargs))

        return method


def _remember_sniffio_is_absent() -> None:
    """httpcore tries ``import sniffio`` on every async request; when the
    package is not installed, each failed import searches ``sys.path`` again
    (a tenth of a millisecond, more than the rest of a request's work in a
    batch). Recording its absence once turns that into a dictionary lookup
    with the same outcome; nothing changes where sniffio is installed."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def _transport_error(error: httpx.HTTPError) -> errors.TransportError:
    return errors.TransportError(f"no answer from the server: {type(error).__name__}: {error}")


class Client:
    """A blocking client for the Steadfast HTTP API.

    ``url`` and ``key`` default to ``STEADFAST_URL`` and ``STEADFAST_KEY``.
    Over ``https`` it trusts the system's roots (and ``SSL_CERT_FILE``'s),
    or what ``verify`` says. Calls answered ``429 rate_limited`` are sent
    again after the server's ``Retry-After`` (when it is at most 30 s), up
    to ``rate_limit_retries`` times.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        key: Optional[str] = None,
        *,
        timeout: float = 60.0,
        verify: Verify = True,
        traceparent: Optional[str] = None,
        rate_limit_retries: int = RATE_LIMITED_RETRIES,
    ) -> None:
        self.config = Config.resolve(url, key, timeout, verify, traceparent, rate_limit_retries)
        self._http = httpx.Client(timeout=timeout, verify=verify)

    def with_traceparent(self, traceparent: Optional[str]) -> Client:
        """A client sharing this one's connections whose calls carry
        ``traceparent`` (W3C trace context), so they join that trace."""
        other = copy.copy(self)
        other.config = dataclasses.replace(self.config, traceparent=traceparent)
        return other

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    def _send(self, call: _api.Call[T]) -> T:
        parts = request(self.config, call)
        retries = self.config.rate_limit_retries
        for attempt in range(retries + 1):
            try:
                response = self._http.request(
                    parts.method,
                    parts.url,
                    headers=parts.headers,
                    content=parts.content,
                    params=parts.params,
                )
            except httpx.HTTPError as error:
                raise _transport_error(error) from error
            wait = retry_after(response.status_code, response.headers)
            if wait is None or attempt == retries:
                break
            time.sleep(wait)
        return answer(call, response.status_code, response.headers, response.content)

    def iter_jobs(
        self,
        *,
        queue: Optional[str] = None,
        state: Union[m.JobState, str, None] = None,
        page: int = 500,
    ) -> Iterator[m.Job]:
        """Every job matching the filters, newest first, page by page."""
        cursor = None
        while True:
            jobs = self.list_jobs(queue=queue, state=state, limit=page, cursor=cursor)
            yield from jobs.jobs
            if not jobs.next_cursor:
                return
            cursor = jobs.next_cursor

    enqueue = _sync(_api.enqueue)
    enqueue_batch = _sync(_api.enqueue_batch)
    get = _sync(_api.get)
    list_jobs = _sync(_api.list_jobs)
    retry = _sync(_api.retry)
    cancel = _sync(_api.cancel)
    replay = _sync(_api.replay)
    resolve_step = _sync(_api.resolve_step)
    bulk = _sync(_api.bulk)
    count_bulk = _sync(_api.count_bulk)
    get_bulk = _sync(_api.get_bulk)
    list_bulk = _sync(_api.list_bulk)
    cancel_bulk = _sync(_api.cancel_bulk)
    signal = _sync(_api.signal)
    lease = _sync(_api.lease)
    heartbeat = _sync(_api.heartbeat)
    release = _sync(_api.release)
    complete = _sync(_api.complete)
    complete_batch = _sync(_api.complete_batch)
    fail = _sync(_api.fail)
    start_step = _sync(_api.start_step)
    checkpoint_step = _sync(_api.checkpoint_step)
    steps_batch = _sync(_api.steps_batch)
    wait = _sync(_api.wait)
    spawn_child = _sync(_api.spawn_child)
    list_queues = _sync(_api.list_queues)
    queue_policy = _sync(_api.queue_policy)
    set_queue_policy = _sync(_api.set_queue_policy)
    pause_queue = _sync(_api.pause_queue)
    resume_queue = _sync(_api.resume_queue)
    queue_retention = _sync(_api.queue_retention)
    set_queue_retention = _sync(_api.set_queue_retention)
    put_resource = _sync(_api.put_resource)
    get_resource = _sync(_api.get_resource)
    list_resources = _sync(_api.list_resources)
    put_schema = _sync(_api.put_schema)
    get_schema = _sync(_api.get_schema)
    list_schemas = _sync(_api.list_schemas)
    get_producer = _sync(_api.get_producer)
    list_producers = _sync(_api.list_producers)
    list_outbox = _sync(_api.list_outbox)
    put_schedule = _sync(_api.put_schedule)
    get_schedule = _sync(_api.get_schedule)
    list_schedules = _sync(_api.list_schedules)
    delete_schedule = _sync(_api.delete_schedule)
    pause_schedule = _sync(_api.pause_schedule)
    resume_schedule = _sync(_api.resume_schedule)
    delete_resource = _sync(_api.delete_resource)
    audit = _sync(_api.audit)
    audit_head = _sync(_api.audit_head)
    verify_audit = _sync(_api.verify_audit)
    create_slo = _sync(_api.create_slo)
    list_slos = _sync(_api.list_slos)
    delete_slo = _sync(_api.delete_slo)
    create_source = _sync(_api.create_source)
    list_sources = _sync(_api.list_sources)
    get_source = _sync(_api.get_source)
    delete_source = _sync(_api.delete_source)
    add_source_secret = _sync(_api.add_source_secret)
    source_events = _sync(_api.source_events)
    replay_event = _sync(_api.replay_event)
    health = _sync(_api.health)


class AsyncClient:
    """The same API as :class:`Client`, for ``asyncio``: every call is a
    coroutine. Use one per event loop."""

    def __init__(
        self,
        url: Optional[str] = None,
        key: Optional[str] = None,
        *,
        timeout: float = 60.0,
        verify: Verify = True,
        traceparent: Optional[str] = None,
        rate_limit_retries: int = RATE_LIMITED_RETRIES,
        max_connections: int = 100,
    ) -> None:
        self.config = Config.resolve(url, key, timeout, verify, traceparent, rate_limit_retries)
        _remember_sniffio_is_absent()
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.AsyncClient(timeout=timeout, verify=verify, limits=limits)

    @classmethod
    def from_config(cls, config: Config, max_connections: int = 100) -> AsyncClient:
        """A client for ``config`` (e.g. a blocking client's)."""
        return cls(
            config.url,
            config.key,
            timeout=config.timeout,
            verify=config.verify,
            traceparent=config.traceparent,
            rate_limit_retries=config.rate_limit_retries,
            max_connections=max_connections,
        )

    def with_traceparent(self, traceparent: Optional[str]) -> AsyncClient:
        """A client sharing this one's connections whose calls carry ``traceparent``."""
        other = copy.copy(self)
        other.config = dataclasses.replace(self.config, traceparent=traceparent)
        return other

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: Optional[Type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.aclose()

    async def _send(self, call: _api.Call[T]) -> T:
        parts = request(self.config, call)
        retries = self.config.rate_limit_retries
        for attempt in range(retries + 1):
            try:
                response = await self._http.request(
                    parts.method,
                    parts.url,
                    headers=parts.headers,
                    content=parts.content,
                    params=parts.params,
                )
            except httpx.HTTPError as error:
                raise _transport_error(error) from error
            wait = retry_after(response.status_code, response.headers)
            if wait is None or attempt == retries:
                break
            await asyncio.sleep(wait)
        return answer(call, response.status_code, response.headers, response.content)

    async def iter_jobs(
        self,
        *,
        queue: Optional[str] = None,
        state: Union[m.JobState, str, None] = None,
        page: int = 500,
    ) -> AsyncIterator[m.Job]:
        """Every job matching the filters, newest first, page by page."""
        cursor = None
        while True:
            jobs = await self.list_jobs(queue=queue, state=state, limit=page, cursor=cursor)
            for job in jobs.jobs:
                yield job
            if not jobs.next_cursor:
                return
            cursor = jobs.next_cursor

    enqueue = _async(_api.enqueue)
    enqueue_batch = _async(_api.enqueue_batch)
    get = _async(_api.get)
    list_jobs = _async(_api.list_jobs)
    retry = _async(_api.retry)
    cancel = _async(_api.cancel)
    replay = _async(_api.replay)
    resolve_step = _async(_api.resolve_step)
    bulk = _async(_api.bulk)
    count_bulk = _async(_api.count_bulk)
    get_bulk = _async(_api.get_bulk)
    list_bulk = _async(_api.list_bulk)
    cancel_bulk = _async(_api.cancel_bulk)
    signal = _async(_api.signal)
    lease = _async(_api.lease)
    heartbeat = _async(_api.heartbeat)
    release = _async(_api.release)
    complete = _async(_api.complete)
    complete_batch = _async(_api.complete_batch)
    fail = _async(_api.fail)
    start_step = _async(_api.start_step)
    checkpoint_step = _async(_api.checkpoint_step)
    steps_batch = _async(_api.steps_batch)
    wait = _async(_api.wait)
    spawn_child = _async(_api.spawn_child)
    list_queues = _async(_api.list_queues)
    queue_policy = _async(_api.queue_policy)
    set_queue_policy = _async(_api.set_queue_policy)
    pause_queue = _async(_api.pause_queue)
    resume_queue = _async(_api.resume_queue)
    queue_retention = _async(_api.queue_retention)
    set_queue_retention = _async(_api.set_queue_retention)
    put_resource = _async(_api.put_resource)
    get_resource = _async(_api.get_resource)
    list_resources = _async(_api.list_resources)
    put_schema = _async(_api.put_schema)
    get_schema = _async(_api.get_schema)
    list_schemas = _async(_api.list_schemas)
    get_producer = _async(_api.get_producer)
    list_producers = _async(_api.list_producers)
    list_outbox = _async(_api.list_outbox)
    put_schedule = _async(_api.put_schedule)
    get_schedule = _async(_api.get_schedule)
    list_schedules = _async(_api.list_schedules)
    delete_schedule = _async(_api.delete_schedule)
    pause_schedule = _async(_api.pause_schedule)
    resume_schedule = _async(_api.resume_schedule)
    delete_resource = _async(_api.delete_resource)
    audit = _async(_api.audit)
    audit_head = _async(_api.audit_head)
    verify_audit = _async(_api.verify_audit)
    create_slo = _async(_api.create_slo)
    list_slos = _async(_api.list_slos)
    delete_slo = _async(_api.delete_slo)
    create_source = _async(_api.create_source)
    list_sources = _async(_api.list_sources)
    get_source = _async(_api.get_source)
    delete_source = _async(_api.delete_source)
    add_source_secret = _async(_api.add_source_secret)
    source_events = _async(_api.source_events)
    replay_event = _async(_api.replay_event)
    health = _async(_api.health)
