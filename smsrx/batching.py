"""Natural batching: concurrent calls share one batched call, with no timer.

A call that finds no batch in flight starts one at the next turn of the event loop,
so every call made in the same turn joins it. Calls made while a batch is in flight
wait, and all go together in the next one. Under light load a call goes at once;
under heavy load batches grow by themselves to what arrived during one round trip.
No call waits for a timer, and the loop never wakes just to check one.

One :class:`Batcher` serves each batched operation in smsrx: dedup lookups and
writes, Kafka produce, and spool appends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["BatchFunction", "Batcher"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

BatchFunction = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]
"""Takes the items of one batch; returns one result per item, in order, or raises.

An exception *in* the result list fails that item alone; an exception raised fails
the whole batch.
"""


class Batcher(Generic[T, R]):
    """Runs ``batch_fn`` over every item submitted while the previous batch ran."""

    def __init__(
        self,
        batch_fn: BatchFunction[T, R],
        *,
        name: str,
        max_batch: int = 1000,
        concurrency: int = 1,
        pause: float = 0.0,
    ) -> None:
        self._batch_fn = batch_fn
        self.name = name
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._pause = pause
        """Seconds a batcher rests after each batch. Only for work nobody waits on (dedup
        writes): there, fewer and fuller batches are cheaper, and no caller is delayed."""
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._closed = False

    @property
    def pending(self) -> int:
        """Items waiting for a batch to start."""
        return len(self._pending)

    def submit_nowait(self, item: T) -> asyncio.Future[R]:
        """Add ``item`` to the next batch; the future holds its result."""
        if self._closed:
            raise RuntimeError(f"batcher {self.name} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled and len(self._tasks) < self._concurrency:
            self._scheduled = True
            loop.call_soon(self._launch)
        return future

    async def submit(self, item: T) -> R:
        """Add ``item`` to the next batch and wait for its result."""
        return await self.submit_nowait(item)

    def _launch(self) -> None:
        self._scheduled = False
        if self._pending and len(self._tasks) < self._concurrency:
            task = asyncio.get_running_loop().create_task(self._drain(), name=self.name)
            self._tasks.add(task)

    async def _drain(self) -> None:
        try:
            await self._drain_pending()
        finally:
            # Synchronously with the loop's last check: a submit can never find this task
            # still counted once it has stopped taking items.
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)

    async def _drain_pending(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            if self._pending and len(self._tasks) < self._concurrency:
                self._launch()  # more than one batch waiting: use the spare concurrency
            try:
                results = await self._batch_fn([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiter
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:
                for _, future in batch:
                    if not future.done():
                        future.cancel()
                raise
            _settle(batch, results)
            if self._pause and not self._closed:
                await asyncio.sleep(self._pause)

    async def close(self) -> None:
        """Refuse new items, finish the batches in flight and those waiting."""
        self._closed = True
        while self._tasks or self._pending:
            if self._pending and not self._tasks:
                self._launch()
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _settle(batch: list[tuple[T, asyncio.Future[R]]], results: Sequence[R | BaseException]) -> None:
    """Hand each waiter its result, or its own exception."""
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
