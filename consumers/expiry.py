"""The expiry sweep: a synthetic final status for recipients that never got one.

A recipient without a final status ``expiry_horizon`` after its submission (or after
its first receipt, when the submission is unknown) gets a synthetic receipt
``expired`` (``provider_status="smsrx:expired"``, ``synthetic=true``). The sweep does
not write the status itself: it *publishes* the receipt to the delivery-receipt topic,
so status-projection applies it and analytics counts it like any carrier receipt, and
its deterministic ``event_id`` makes a repeated sweep harmless.

Every status-projection worker runs the sweep periodically; a PostgreSQL advisory lock
lets only one of them sweep at a time. A real ``failed`` or ``delivered`` arriving
later still replaces ``expired`` (it ranks higher).

Claim, then publish. Each chunk of due recipients is *claimed* in one short statement
(``expiry_published_at`` set, committed at once) and only then published, outside any
transaction: the sweep never holds a row lock while it waits on the broker, so the
projection never waits on the broker through the sweep either. Publication stays at
least once:

- publishing fails: the chunk's claims are released, and the next sweep publishes it;
- the process dies between claim and publish: the claims expire after
  ``republish_after`` (at least 10 minutes), and a later sweep publishes the chunk;
- part of a chunk reached the broker before a failure: it is published again, with the
  same ``event_id``s, which both workers deduplicate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumers import metrics
from consumers.errors import is_transient
from smsrx.clock import format_rfc3339, utcnow
from smsrx.codec import encode
from smsrx.events import DeliveryReceipt
from smsrx.produce import produce_all
from smsrx.settings import Settings
from smsrx.statuses import Status

__all__ = ["EXPIRED_PROVIDER_STATUS", "ExpirySweeper"]

logger = logging.getLogger(__name__)

EXPIRED_PROVIDER_STATUS = "smsrx:expired"
"""The ``provider_status`` of the synthetic receipts."""

_LOCK = 0x736D7278  # "smrx": one advisory lock id for the sweep of every deployment

# Select and claim in one statement, committed on its own: its row locks last as long as
# the statement. Rows a batch is updating right now are skipped (the next sweep sees
# them). A locked row keeps its ctid, so the update is a TID scan of the rows due, never
# a scan of the table.
_CLAIM = """
UPDATE recipient_status rs SET expiry_published_at = $3
 WHERE rs.ctid = ANY (ARRAY(
        SELECT ctid
          FROM recipient_status
         WHERE NOT is_final
           AND coalesce(submitted_at, first_event_at) <= $1
           AND (expiry_published_at IS NULL OR expiry_published_at <= $2)
         ORDER BY coalesce(submitted_at, first_event_at)
         LIMIT $4
           FOR UPDATE SKIP LOCKED))
RETURNING rs.provider, rs.message_id, rs.recipient,
          coalesce(rs.submitted_at, rs.first_event_at) AS since
"""

# Claims of a chunk that could not be published: due again at the next sweep.
_RELEASE = """
UPDATE recipient_status rs SET expiry_published_at = NULL
  FROM unnest($1::text[], $2::text[], $3::text[]) AS c(provider, message_id, recipient)
 WHERE rs.provider = c.provider AND rs.message_id = c.message_id
   AND rs.recipient = c.recipient AND rs.expiry_published_at = $4
"""


class ExpirySweeper:
    """Publishes ``expired`` receipts for recipients past the expiry horizon."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        *,
        limit: int = 1000,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.producer = producer
        self.limit = limit
        """Recipients claimed per statement: the statement holds their row locks."""
        self.horizon = timedelta(seconds=settings.expiry_horizon)
        # A receipt already published is published again only if it still has not been
        # applied long after (the broker lost it, say): a backlog must not grow with copies.
        self.republish_after = timedelta(seconds=max(600.0, 10 * settings.expiry_sweep_interval))

    async def sweep(self, now: datetime | None = None) -> int | None:
        """Sweep once; return how many receipts were published, or None if another
        worker holds the sweep lock."""
        now = now or utcnow()
        started = time.perf_counter()
        total = 0
        async with self.pool.acquire() as conn:
            # A session lock, held across chunks but outside any transaction: it locks no
            # row, and it goes with the connection if this process dies.
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
                metrics.EXPIRY_SWEEPS.labels("locked").inc()
                return None
            try:
                while True:
                    published = await self._sweep_chunk(conn, now)
                    total += published
                    if published < self.limit:
                        break
            finally:
                await self._unlock(conn)
        metrics.EXPIRY_SWEEPS.labels("done").inc()
        metrics.EXPIRY_SWEEP_DURATION.observe(time.perf_counter() - started)
        if total:
            logger.info("expiry sweep: %d recipients expired (horizon %s)", total, self.horizon)
        else:
            logger.debug("expiry sweep: nothing to expire")
        return total

    async def _sweep_chunk(self, conn: asyncpg.Connection, now: datetime) -> int:
        rows = await conn.fetch(
            _CLAIM, now - self.horizon, now - self.republish_after, now, self.limit
        )
        if not rows:
            return 0
        receipts = [
            DeliveryReceipt.create(
                provider=row["provider"],
                message_id=row["message_id"],
                recipient=row["recipient"],
                status=Status.EXPIRED,
                provider_status=EXPIRED_PROVIDER_STATUS,
                received_at=now,
                raw={
                    "reason": "no final status within the expiry horizon",
                    "horizon_seconds": self.horizon.total_seconds(),
                    "pending_since": format_rfc3339(row["since"]),
                },
                synthetic=True,
            )
            for row in rows
        ]
        try:
            async with asyncio.timeout(max(1.0, self.settings.kafka_send_timeout * 2)):
                topic = self.settings.topics.delivery_receipts
                await produce_all(self.producer, [(topic, r.key, encode(r)) for r in receipts])
        except BaseException:
            await self._release(conn, receipts, now)
            raise
        metrics.EXPIRED.inc(len(receipts))
        return len(receipts)

    @staticmethod
    async def _unlock(conn: asyncpg.Connection) -> None:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # A broken connection: the lock went with its session (the pool resets or
            # closes the connection on release).
            logger.debug("expiry sweep: unlock failed: %r", exc)

    async def _release(
        self, conn: asyncpg.Connection, receipts: list[DeliveryReceipt], now: datetime
    ) -> None:
        try:
            await conn.execute(
                _RELEASE,
                [r.provider for r in receipts],
                [r.message_id for r in receipts],
                [r.recipient for r in receipts],
                now,
            )
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The claims stay: they expire after republish_after, and are published then.
            logger.warning(
                "expiry sweep: %d claims kept after a failed publish: %r", len(receipts), exc
            )

    async def run_forever(self) -> None:
        """Sweep every ``expiry_sweep_interval`` seconds until cancelled."""
        interval = self.settings.expiry_sweep_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except (KafkaError, TimeoutError) as exc:
                metrics.EXPIRY_SWEEPS.labels("failed").inc()
                logger.warning("expiry sweep failed, retrying in %.0fs: %r", interval, exc)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                metrics.EXPIRY_SWEEPS.labels("failed").inc()
                logger.warning("expiry sweep failed, retrying in %.0fs: %r", interval, exc)
