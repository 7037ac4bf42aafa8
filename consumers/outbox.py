"""The status-change outbox: changes committed with their batch, published after.

A batch writes its status changes to ``status_outbox`` in its own transaction. Once
that transaction commits, the changes are published to ``sms.message-status.v1``
(``acks=all``) in outbox order and their rows deleted. Rows left behind by a crash
or a broker outage are published on the next start, and by a periodic recovery.

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
from consumers.publish import publish_many

__all__ = ["Outbox"]

logger = logging.getLogger(__name__)

OutboxRow = tuple[int, bytes, bytes]

_STORED = """
SELECT id, key, value FROM status_outbox
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

    def stage(self, rows: Sequence[OutboxRow]) -> None:
        """Queue rows whose transaction has just committed."""
        self.pending.extend(rows)
        metrics.OUTBOX_PENDING.set(len(self.pending))

    async def flush(self) -> int:
        """Publish what is pending, then delete it; return how many were published.

        On a broker or database failure the rows stay (pending, or in the table) and a
        later flush or recovery publishes them.
        """
        published = 0
        while self.pending:
            rows = self.pending[: self.chunk]
            try:
                async with asyncio.timeout(self.timeout):
                    await publish_many(self.producer, self.topic, [(k, v) for _, k, v in rows])
            except (KafkaError, TimeoutError) as exc:
                logger.warning(
                    "outbox: publish failed, %d changes kept: %r", len(self.pending), exc
                )
                break
            del self.pending[: len(rows)]
            published += len(rows)
            metrics.STATUS_CHANGES_PUBLISHED.inc(len(rows))
            try:
                await self.pool.execute(
                    "DELETE FROM status_outbox WHERE id = ANY($1::bigint[])", [r[0] for r in rows]
                )
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # The rows stay and are published again by a recovery: harmless duplicates.
                logger.warning("outbox: delete failed after publishing: %r", exc)
        metrics.OUTBOX_PENDING.set(len(self.pending))
        return published

    async def recover(self, older_than: float = 0.0) -> int:
        """Publish the rows in ``status_outbox`` created at least ``older_than`` seconds ago.

        Call with 0 on start (rows a crash left behind); periodically with a margin
        larger than a batch's publish time, so the live rows of other workers are left
        to them.
        """
        recovered = 0
        last = 0
        while True:
            known = {row[0] for row in self.pending}
            rows = await self.pool.fetch(_STORED, older_than, last, self.chunk)
            if not rows:
                break
            last = rows[-1]["id"]
            fresh = [
                (r["id"], bytes(r["key"]), bytes(r["value"])) for r in rows if r["id"] not in known
            ]
            self.stage(fresh)
            recovered += len(fresh)
            if await self.flush() < len(fresh) or len(rows) < self.chunk:
                break
        if recovered:
            logger.info("outbox: recovered %d status changes left unpublished", recovered)
        return recovered
