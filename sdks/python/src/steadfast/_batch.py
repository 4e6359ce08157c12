"""Batching of the calls running jobs make (completions, step starts and
checkpoints): whatever queued up while earlier requests were in flight goes
out in one request. Nothing waits to fill a batch: a lone call goes alone,
on its own route."""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from typing import Any, Awaitable, Callable, Deque, Generic, List, Optional, TypeVar

from . import errors

T = TypeVar("T")


def detached(coroutine: Awaitable[T]) -> asyncio.Future[T]:
    """A task that runs in a context of its own, not in that of the job
    (its log fields and trace) that happened to start it."""
    return contextvars.Context().run(asyncio.ensure_future, coroutine)


#: Batch requests in flight at once: while one commits, the next gathers.
CONCURRENT_BATCHES = 4
#: Most encoded bytes one batch carries, well under the server's default
#: 1 MiB body limit; a larger item goes in a request of its own.
MAX_BATCH_BYTES = 256 * 1024
#: Most items per request (the server's own bound is 1,000).
MAX_PER_REQUEST = 250


class Item:
    """One queued call: its encoded size, and where its answer goes."""

    __slots__ = ("answer", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def settle(self, result: Any = None, error: Optional[BaseException] = None) -> None:
        if self.answer.done():
            return
        if error is not None:
            self.answer.set_exception(error)
        else:
            self.answer.set_result(result)


ItemT = TypeVar("ItemT", bound=Item)


class CountMismatch(Exception):
    """The server answered a batch with a different number of results."""


def check_count(results: List[Any], batch: List[Any]) -> None:
    if len(results) != len(batch):
        raise CountMismatch(f"{len(results)} results for {len(batch)} items")


def retry_alone(error: BaseException) -> bool:
    """Whether a batch refused whole is worth sending again item by item: the
    server answered with a 4xx about the batch (too large, an older server
    without the route, one item it could not take). A 5xx, no answer, a rate
    limit or quota (429) or a timeout (408) would fail each item alike, and
    sending them one by one would multiply the load on a struggling server."""
    if isinstance(error, CountMismatch):
        return True
    return (
        isinstance(error, errors.ApiError)
        and 400 <= error.status < 500
        and error.status not in (408, 429)
    )


class Batcher(Generic[ItemT]):
    """The queue of one kind of call, drained by one task.

    ``send_batch`` answers every item of a batch of two or more (or raises,
    and then ``send_one`` is tried item by item if :func:`retry_alone`
    says so); ``send_one`` answers one item.
    """

    def __init__(
        self,
        send_batch: Callable[[List[ItemT]], Awaitable[None]],
        send_one: Callable[[ItemT], Awaitable[None]],
    ) -> None:
        self._send_batch = send_batch
        self._send_one = send_one
        self._pending: Deque[ItemT] = deque()
        self._draining: Optional[asyncio.Future[None]] = None
        self._slots = asyncio.Semaphore(CONCURRENT_BATCHES)
        self._sending: set[asyncio.Future[None]] = set()

    def push(self, item: ItemT) -> None:
        self._pending.append(item)
        if self._draining is None or self._draining.done():
            self._draining = detached(self._drain())

    async def _drain(self) -> None:
        while self._pending:
            await self._slots.acquire()
            # Jobs leased together tend to reach the same point together:
            # give the others a turn to queue theirs before the batch is cut.
            for _ in range(2):
                await asyncio.sleep(0)
            batch: List[ItemT] = []
            size = 0
            while self._pending and len(batch) < MAX_PER_REQUEST:
                if batch and size + self._pending[0].size > MAX_BATCH_BYTES:
                    break
                item = self._pending.popleft()
                size += item.size
                batch.append(item)
            task = detached(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: List[ItemT]) -> None:
        try:
            if len(batch) > 1:
                try:
                    await self._send_batch(batch)
                    return
                except Exception as error:
                    if not retry_alone(error):
                        for item in batch:
                            item.settle(error=error)
                        return
            for item in batch:
                try:
                    await self._send_one(item)
                except Exception as error:
                    item.settle(error=error)
        finally:
            self._slots.release()
            for item in batch:
                item.settle(error=errors.SteadfastError("the batch answered nothing for this item"))
