"""Coalescing many concurrent calls into one batched call.

Requests that arrive together each want a dedup lookup; one ``WHERE id = ANY($1)``
query answers all of them for the price of one round trip.

With ``linger``, a batch waits that long for company before it starts, unless
``eager`` items are already waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Runs ``batch_fn`` over every item submitted while the previous batch ran."""

    def __init__(
        self,
        batch_fn: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 1000,
        linger: float = 0.0,
        eager: int = 32,
    ) -> None:
        self._batch_fn = batch_fn
        self._max_batch = max_batch
        self._linger = linger
        self._eager = eager
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running = False
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, item: T) -> R:
        """Add ``item`` to the next batch and wait for its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if not self._running:
            self._running = True
            if self._linger > 0:
                self._timer = loop.call_later(self._linger, self._launch)
            else:
                loop.call_soon(self._launch)
        elif self._timer is not None and len(self._pending) >= self._eager:
            self._timer.cancel()
            self._timer = None
            loop.call_soon(self._launch)
        return await future

    def _launch(self) -> None:
        self._timer = None
        asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = (
                    self._pending[: self._max_batch],
                    self._pending[self._max_batch :],
                )
                try:
                    results = await self._batch_fn([item for item, _ in batch])
                except Exception as exc:  # noqa: BLE001 - handed to every waiter
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._running = False
