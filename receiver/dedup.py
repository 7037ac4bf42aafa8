"""Receiver-side deduplication: an in-process cache in front of PostgreSQL.

The PostgreSQL table is shared by every receiver replica. A record is written only
after the broker acknowledged the event, so a failed publish never makes a retry
look like a duplicate. Writes are batched in the background; if the process dies
before one lands, a retry is published again and consumers deduplicate it by
``event_id``, as they always do. If PostgreSQL is down, or refuses a statement for
any reason (:data:`smsrx.db.DB_ERRORS`, transient or not), lookups are skipped for a
while and every event is treated as new: availability beats receiver-side dedup, and
no database error ever turns a callback into a 5xx.

Lookups and writes each keep one pooled connection for as long as it works: going
through ``pool.fetch`` would send the pool's reset query (``RESET ALL; UNLISTEN *;
...``) after every statement, a second round trip per batch. Both are batched
naturally (:class:`smsrx.batching.Batcher`): a lookup that finds none in flight goes
at once, and lookups made meanwhile share the next query. Writes, which nobody waits
on, rest 50 ms between batches so that each INSERT carries many rows.

The lookup connection runs with ``enable_seqscan = off``. The lookup is a primary-key
probe, but PostgreSQL plans it from the table's statistics, and on a table that was
empty when last analyzed (a fresh deployment, until autovacuum's next analyze) it
chooses a sequential scan, and keeps that plan for the prepared statement while the
table grows: measured here, 2,000 rows read per lookup after a few minutes of traffic,
and most of PostgreSQL's CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict

import asyncpg

from receiver import metrics
from smsrx.batching import Batcher
from smsrx.db import DB_ERRORS

__all__ = ["Dedup"]

logger = logging.getLogger(__name__)

_BACKOFF = 5.0  # seconds without lookups after the store failed
_WRITE_BATCH = 5000
_WRITE_PAUSE = 0.05
"""Seconds between dedup writes: nobody waits on them, and one INSERT of a hundred rows
costs PostgreSQL and this process far less than a hundred small ones."""

_LOOKUP = "SELECT event_id FROM receiver_dedup WHERE event_id = ANY($1::text[])"
_INSERT = """INSERT INTO receiver_dedup (event_id, provider, message_id)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
             ON CONFLICT (event_id) DO NOTHING"""


class _Held:
    """One pooled connection kept across statements, and given back when it fails."""

    def __init__(self, pool: asyncpg.Pool, setup: str | None = None) -> None:
        self._pool = pool
        self._setup = setup
        self._conn: asyncpg.Connection | None = None

    async def get(self) -> asyncpg.Connection:
        """The held connection, acquired (and set up) first if needed."""
        if self._conn is not None and self._conn.is_closed():
            await self.discard()  # the server went away: take a fresh one, not an error
        if self._conn is None:
            conn = await self._pool.acquire()
            try:
                if self._setup:
                    await conn.execute(self._setup)
            except BaseException:
                await self._pool.release(conn)
                raise
            self._conn = conn
        return self._conn

    async def discard(self) -> None:
        """Close the held connection (it failed, or a statement was interrupted)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
            with contextlib.suppress(Exception):
                await self._pool.release(conn)

    async def release(self) -> None:
        """Give the connection back to the pool."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(self._pool.release(conn), 1.0)
            except DB_ERRORS:
                conn.terminate()


class Dedup:
    """Has an event id been published already? Answers from memory, then PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool | None, *, cache_size: int, timeout: float = 1.0) -> None:
        self._pool = pool
        # OrderedDict, not dict: evicting a plain dict's oldest key with next(iter(...))
        # scans the deleted slots at its front, which grew to ~100 µs per insert past
        # 200,000 entries (bench/dedup_cache.py); popitem(last=False) is O(1).
        self._cache: OrderedDict[str, None] = OrderedDict()
        self._cache_size = cache_size
        self._timeout = timeout
        self._down_until = 0.0
        self._lookups: Batcher[str, bool] = Batcher(self._lookup_batch, name="dedup-lookup")
        self._lookup_conn = (
            _Held(pool, setup="SET enable_seqscan = off") if pool is not None else None
        )
        self._write_conn = _Held(pool) if pool is not None else None
        self._writes: Batcher[tuple[str, str, str], None] = Batcher(
            self._write_batch, name="dedup-writer", max_batch=_WRITE_BATCH, pause=_WRITE_PAUSE
        )

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
            cache.popitem(last=False)  # the oldest first

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
        except DB_ERRORS as exc:
            self._store_failed("lookup", exc)
            return False
        if found:
            self._remember(event_id)
        return found

    async def _lookup_batch(self, event_ids: list[str]) -> list[bool]:
        held = self._lookup_conn
        assert held is not None
        try:
            async with asyncio.timeout(self._timeout):
                rows = await (await held.get()).fetch(_LOOKUP, event_ids)
        except BaseException:
            await held.discard()
            raise
        found = {row[0] for row in rows}
        return [event_id in found for event_id in event_ids]

    def published(self, event_id: str, provider: str, message_id: str) -> None:
        """Record that the broker acknowledged ``event_id`` (cache now, store soon)."""
        self._remember(event_id)
        if self._pool is not None:
            self._writes.submit_nowait((event_id, provider, message_id))

    async def _write_batch(self, batch: list[tuple[str, str, str]]) -> list[None]:
        """Insert one batch of published ids; a failure only costs receiver-side dedup."""
        held = self._write_conn
        if not self._store_usable() or held is None:
            metrics.DEDUP_ERRORS.labels("write_skipped").inc(len(batch))
            return [None] * len(batch)
        try:
            async with asyncio.timeout(self._timeout * 5):
                conn = await held.get()
                await conn.execute(_INSERT, *map(list, zip(*batch, strict=True)))
        except DB_ERRORS as exc:
            await held.discard()
            self._store_failed("write", exc)
        except BaseException:
            await held.discard()
            raise
        return [None] * len(batch)

    async def close(self) -> None:
        """Write what is pending, and give the connections back."""
        await self._lookups.close()
        await self._writes.close()
        for held in (self._lookup_conn, self._write_conn):
            if held is not None:
                await held.release()
