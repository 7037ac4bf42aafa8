"""Receiver-side deduplication: an in-process cache in front of PostgreSQL.

The PostgreSQL table is shared by every receiver replica. A record is written only
after the broker acknowledged the event, so a failed publish never makes a retry
look like a duplicate. Writes are batched in the background; if the process dies
before one lands, a retry is published again and consumers deduplicate it by
``event_id``, as they always do. If PostgreSQL is down, lookups are skipped for a
while and every event is treated as new: availability beats receiver-side dedup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from receiver import metrics
from receiver.batching import Coalescer

__all__ = ["Dedup"]

logger = logging.getLogger(__name__)

_BACKOFF = 5.0  # seconds without lookups after the store failed
_WRITE_BATCH = 5000


class Dedup:
    """Has an event id been published already? Answers from memory, then PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool | None, *, cache_size: int, timeout: float = 1.0) -> None:
        self._pool = pool
        self._cache: dict[str, None] = {}
        self._cache_size = cache_size
        self._timeout = timeout
        self._down_until = 0.0
        self._lookups: Coalescer[str, bool] = Coalescer(self._lookup_batch)
        self._writes: list[tuple[str, str, str]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background writer."""
        self._writer = asyncio.create_task(self._write_loop(), name="dedup-writer")

    def cached(self, event_id: str) -> bool:
        """Whether this process has published ``event_id`` recently."""
        return event_id in self._cache

    def remember(self, event_id: str) -> None:
        """Remember ``event_id`` in this process only (it is durable, not yet published)."""
        self._remember(event_id)

    def _remember(self, event_id: str) -> None:
        cache = self._cache
        cache[event_id] = None
        if len(cache) > self._cache_size:
            del cache[next(iter(cache))]  # oldest first: dicts keep insertion order

    def _store_usable(self) -> bool:
        return self._pool is not None and time.monotonic() >= self._down_until

    def _store_failed(self, operation: str, exc: BaseException) -> None:
        metrics.DEDUP_ERRORS.labels(operation).inc()
        if time.monotonic() >= self._down_until:
            logger.warning(
                "dedup store unavailable (%s: %s); relying on consumer dedup for %.0fs",
                operation,
                exc,
                _BACKOFF,
            )
        self._down_until = time.monotonic() + _BACKOFF

    async def seen(self, event_id: str) -> bool:
        """Whether any replica published ``event_id``; False when the store cannot tell."""
        if not self._store_usable():
            return False
        try:
            found = await self._lookups.submit(event_id)
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            self._store_failed("lookup", exc)
            return False
        if found:
            self._remember(event_id)
        return found

    async def _lookup_batch(self, event_ids: list[str]) -> list[bool]:
        assert self._pool is not None
        async with asyncio.timeout(self._timeout):
            rows = await self._pool.fetch(
                "SELECT event_id FROM receiver_dedup WHERE event_id = ANY($1::text[])", event_ids
            )
        found = {row["event_id"] for row in rows}
        return [event_id in found for event_id in event_ids]

    def published(self, event_id: str, provider: str, message_id: str) -> None:
        """Record that the broker acknowledged ``event_id`` (cache now, store soon)."""
        self._remember(event_id)
        if self._pool is not None:
            self._writes.append((event_id, provider, message_id))
            self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._writes:
            batch, self._writes = self._writes[:_WRITE_BATCH], self._writes[_WRITE_BATCH:]
            if not self._store_usable():
                metrics.DEDUP_ERRORS.labels("write_skipped").inc(len(batch))
                continue
            try:
                assert self._pool is not None
                async with asyncio.timeout(self._timeout * 5):
                    await self._pool.execute(
                        """INSERT INTO receiver_dedup (event_id, provider, message_id)
                           SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                           ON CONFLICT (event_id) DO NOTHING""",
                        *map(list, zip(*batch, strict=True)),
                    )
            except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
                self._store_failed("write", exc)

    async def close(self) -> None:
        """Write what is pending, then stop the writer."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self._flush()
