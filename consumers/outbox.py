"""The status-change outbox: changes committed with their batch, published after.

A batch writes its status changes to ``status_outbox`` in its own transaction. Once
that transaction commits, the changes are published to ``sms.message-status.v1``
(``acks=all``) in outbox order. Their rows are deleted by the next batch's
transaction (or when the worker is idle or stops), which saves a commit per batch.
Rows left behind by a crash or a broker outage are published on the next start, and
by a periodic recovery.

Publication is at least once: a change can be published twice (a crash between the
broker's acknowledgement and the delete). Each change has a deterministic
``event_id``, and a recipient's status only ever rises in rank, so a consumer stays
right by keeping, per recipient, the change of highest rank it has seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumers import metrics
from consumers.errors import is_transient
from smsrx.produce import produce_all

__all__ = ["Outbox"]

logger = logging.getLogger(__name__)

OutboxRow = tuple[int, bytes, bytes]

_STORED = """
SELECT id, key, value::text AS value FROM status_outbox
 WHERE created_at <= now() - make_interval(secs => $1) AND id > $2
 ORDER BY id
 LIMIT $3
"""


class Outbox:
    """Publishes the committed status changes that are still in ``status_outbox``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        timeout: float,
        chunk: int = 10_000,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.topic = topic
        self.timeout = timeout
        self.chunk = chunk
        self.pending: list[OutboxRow] = []
        """Committed, not yet acknowledged by the broker, in outbox order."""
        self.acknowledged: list[int] = []
        """Ids of rows the broker acknowledged, still to delete."""
        self._order = asyncio.Lock()  # FIFO: one flush at a time, in commit order

    def stage(self, rows: Sequence[OutboxRow]) -> None:
        """Queue rows whose transaction has just committed."""
        self.pending.extend(rows)
        metrics.OUTBOX_PENDING.set(len(self.pending))

    async def flush(self) -> int:
        """Publish what is pending, in order; return how many were published.

        On a broker failure the rows stay pending (and in the table) and a later flush
        or recovery publishes them.
        """
        async with self._order:
            return await self._flush()

    async def _flush(self) -> int:
        published = 0
        while self.pending:
            rows = self.pending[: self.chunk]
            try:
                async with asyncio.timeout(self.timeout):
                    await produce_all(self.producer, [(self.topic, k, v) for _, k, v in rows])
            except (KafkaError, TimeoutError) as exc:
                logger.warning(
                    "outbox: publish failed, %d changes kept: %r", len(self.pending), exc
                )
                break
            del self.pending[: len(rows)]
            self.acknowledged.extend(row[0] for row in rows)
            published += len(rows)
            metrics.STATUS_CHANGES_PUBLISHED.inc(len(rows))
        metrics.OUTBOX_PENDING.set(len(self.pending))
        if len(self.acknowledged) >= self.chunk:
            await self.purge()
        return published

    def deleted(self, ids: Sequence[int]) -> None:
        """Forget ids whose rows a committed transaction deleted."""
        gone = set(ids)
        self.acknowledged = [i for i in self.acknowledged if i not in gone]

    async def purge(self) -> None:
        """Delete the rows of acknowledged changes now."""
        if not self.acknowledged:
            return
        ids = list(self.acknowledged)
        try:
            await self.pool.execute("DELETE FROM status_outbox WHERE id = ANY($1::bigint[])", ids)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The rows stay; a recovery would publish them again: harmless duplicates.
            logger.warning("outbox: delete failed after publishing: %r", exc)
        else:
            self.deleted(ids)

    async def recover(self, older_than: float = 0.0) -> int:
        """Publish the rows in ``status_outbox`` created at least ``older_than`` seconds ago.

        Call with 0 on start (rows a crash left behind); periodically with a margin
        larger than a batch's publish time, so the live rows of other workers are left
        to them.
        """
        recovered = 0
        last = 0
        while True:
            known = {row[0] for row in self.pending} | set(self.acknowledged)
            rows = await self.pool.fetch(_STORED, older_than, last, self.chunk)
            if not rows:
                break
            last = rows[-1]["id"]
            fresh = [
                (r["id"], r["key"].encode(), r["value"].encode())
                for r in rows
                if r["id"] not in known
            ]
            self.stage(fresh)
            recovered += len(fresh)
            if await self.flush() < len(fresh) or len(rows) < self.chunk:
                break
        if recovered:
            logger.info("outbox: recovered %d status changes left unpublished", recovered)
        return recovered
