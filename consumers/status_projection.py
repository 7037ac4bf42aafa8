"""The status-projection worker (``smsrx consumer status-projection``).

Consumes delivery receipts, submissions and inbound SMS; keeps, in PostgreSQL, the
current status of every recipient (by precedence, never by arrival order), the full
receipt history, submissions and inbound messages; publishes every change of current
status to ``sms.message-status.v1`` through the outbox; and runs the expiry sweep. It
never prunes: ``smsrx db prune --every`` does, as its own role (:mod:`smsrx.prune_job`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from consumers import metrics
from consumers.batches import Applied, Batch, Decoder
from consumers.expiry import ExpirySweeper
from consumers.outbox import Outbox
from consumers.projection import Plan, plan_receipts
from consumers.projection_sql import (
    OutboxRow,
    apply_plan,
    insert_inbound,
    insert_receipts,
    insert_submissions,
)
from consumers.worker import Worker
from smsrx.codec import decode_delivery_receipt, decode_inbound, decode_submission
from smsrx.db import is_transient_db_error
from smsrx.events import DeliveryReceipt, Submission
from smsrx.kafka import make_producer, stop_bounded
from smsrx.phones import InvalidPhoneNumber, to_e164
from smsrx.settings import Settings

__all__ = ["StatusProjection"]

logger = logging.getLogger(__name__)

_RECOVERY_INTERVAL = 60.0
_RECOVERY_MARGIN = 60.0


def _normalized(submission: Submission) -> Submission:
    """The submission with its recipients in E.164, each once, so receipts join it."""
    recipients: dict[str, None] = {}
    for recipient in submission.recipients:
        try:
            recipients[to_e164(recipient)] = None
        except InvalidPhoneNumber:
            recipients[recipient] = None
    return dataclasses.replace(submission, recipients=tuple(recipients))


class StatusProjection(Worker):
    """Projects receipts and submissions into the current status of every recipient."""

    role = "status-projection"
    group = "smsrx-status-projection"
    lanes = 2

    def __init__(self, settings: Settings, *, expiry_sweep: bool = True, **options: Any) -> None:
        super().__init__(settings, **options)
        self.expiry_sweep = expiry_sweep
        self.producer: AIOKafkaProducer | None = None
        self.outbox: Outbox | None = None
        self.sweeper: ExpirySweeper | None = None
        self._recovered_at = 0.0
        self._flushes: set[asyncio.Task[int]] = set()

    @property
    def decoders(self) -> Mapping[str, Decoder]:
        """Receipts, submissions and inbound SMS."""
        topics = self.settings.topics
        return {
            topics.submissions: decode_submission,
            topics.delivery_receipts: decode_delivery_receipt,
            topics.inbound: decode_inbound,
        }

    async def on_start(self) -> None:
        """Start the producer, publish what a crash left in the outbox, start the sweep."""
        assert self.pool is not None
        producer = make_producer(self.settings)
        self.producer = producer
        if not await self.retry("broker", producer.start):
            return
        timeout = max(1.0, self.settings.kafka_send_timeout * 2)
        self.outbox = Outbox(
            self.pool, producer, self.settings.topics.message_status, timeout=timeout
        )
        await self.retry("outbox", self.outbox.recover)
        self.sweeper = ExpirySweeper(self.settings, self.pool, producer)
        if self.expiry_sweep:
            self.spawn(self.sweeper.run_forever(), name="expiry-sweep")

    async def apply(self, conn: asyncpg.Connection, batch: Batch) -> Applied:
        """Apply submissions, then receipts, then inbound SMS, deduplicated by event_id."""
        topics = self.settings.topics
        result = Applied()
        submissions = batch.of(topics.submissions)
        if submissions:
            new = await insert_submissions(conn, [_normalized(s) for s in submissions])
            result.applied[topics.submissions] += new
            result.duplicate[topics.submissions] += len(submissions) - new

        received: list[DeliveryReceipt] = batch.of(topics.delivery_receipts)
        if received:
            distinct = list({r.event_id: r for r in reversed(received)}.values())
            distinct.reverse()  # first occurrence of each event_id, in arrival order
            new_receipts, stored = await insert_receipts(conn, distinct)
            plan = plan_receipts(new_receipts, stored)
            # One lane deletes the rows already published: two concurrent transactions
            # deleting the same rows would wait on each other's locks.
            published = (
                list(self.outbox.acknowledged)
                if self.outbox is not None and batch.lane == 0
                else []
            )
            rows = await apply_plan(conn, plan, stored, published) if plan.updates else []
            result.applied[topics.delivery_receipts] += len(new_receipts)
            result.duplicate[topics.delivery_receipts] += len(received) - len(new_receipts)
            if not plan.updates:
                published = []
            result.on_commit.append(lambda: self._committed_plan(plan, rows, published))

        inbound = batch.of(topics.inbound)
        if inbound:
            new = await insert_inbound(conn, inbound)
            result.applied[topics.inbound] += new
            result.duplicate[topics.inbound] += len(inbound) - new
        return result

    def _committed_plan(self, plan: Plan, rows: list[OutboxRow], published: list[int]) -> None:
        for provider, count in plan.regressions.items():
            metrics.REGRESSIONS.labels(provider).inc(count)
        changes = Counter((c.provider, c.status.value) for c in plan.changes)
        for (provider, status), count in changes.items():
            metrics.STATUS_CHANGES.labels(provider, status).inc(count)
        if self.outbox is not None:
            self.outbox.deleted(published)
            self.outbox.stage(rows)

    async def after_batch(self) -> None:
        """Publish the status changes the batch committed, while the next batch is applied
        (the outbox publishes one flush at a time, in commit order)."""
        if self.outbox is not None and self.outbox.pending:
            task = asyncio.create_task(self.outbox.flush(), name="outbox-flush")
            self._flushes.add(task)
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[int]) -> None:
        self._flushes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("outbox flush failed", exc_info=task.exception())

    async def on_idle(self) -> None:
        """Delete acknowledged outbox rows; now and then, publish outbox rows that no live
        worker is publishing. A transient database error waits for the next idle poll;
        any other is a bug and stops the worker (:mod:`consumers.errors`)."""
        if self.outbox is None:
            return
        try:
            await self.outbox.purge()
            now = time.monotonic()
            if now - self._recovered_at >= _RECOVERY_INTERVAL:
                self._recovered_at = now
                await self.outbox.recover(older_than=_RECOVERY_MARGIN)
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise
            logger.warning("outbox maintenance failed: %r", exc)

    async def on_stop(self) -> None:
        """Publish what is pending (bounded), then stop the producer, whatever happened."""
        if self.producer is None:
            return
        try:
            if self._flushes:
                await asyncio.wait(self._flushes, timeout=self.settings.shutdown_timeout)
            if self.outbox is not None:
                await self.outbox.flush()
                await self.outbox.purge()
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise
            logger.warning("outbox flush on stop failed: %r", exc)
        finally:
            await stop_bounded(self.producer, self.settings.shutdown_timeout)
