"""The analytics worker (``smsrx consumer analytics``).

Consumes delivery receipts, inbound SMS and status changes, and adds them to
per-minute rollups and latency histograms in PostgreSQL (see :mod:`consumers.rollups`).
Each event_id is counted once: the ids are recorded in ``analytics_processed_events``
in the same transaction as the counts, so a replayed event changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import asyncpg

from consumers import metrics
from consumers.analytics_sql import mark_processed, write_tally
from consumers.batches import Applied, Batch, Decoder
from consumers.rollups import Tally
from consumers.worker import Worker
from smsrx.codec import decode_delivery_receipt, decode_inbound, decode_status_change

__all__ = ["Analytics"]

logger = logging.getLogger(__name__)


class Analytics(Worker):
    """Counts receipts, inbound SMS and final outcomes into rollups, exactly once."""

    role = "analytics"
    group = "smsrx-analytics"

    @property
    def decoders(self) -> Mapping[str, Decoder]:
        """Receipts, inbound SMS and status changes."""
        topics = self.settings.topics
        return {
            topics.delivery_receipts: decode_delivery_receipt,
            topics.inbound: decode_inbound,
            topics.message_status: decode_status_change,
        }

    async def apply(self, conn: asyncpg.Connection, batch: Batch) -> Applied:
        """Count the events of the batch never counted before."""
        topics = self.settings.topics
        distinct: dict[str, tuple[str, Any]] = {}
        for topic, event in batch.items:
            distinct.setdefault(event.event_id, (topic, event))
        new = await mark_processed(conn, list(distinct))
        tally = Tally()
        result = Applied()
        for topic, _ in batch.items:
            result.duplicate[topic] += 1
        for event_id, (topic, event) in distinct.items():
            if event_id not in new:
                continue
            result.applied[topic] += 1
            result.duplicate[topic] -= 1
            if topic == topics.delivery_receipts:
                tally.add_receipt(event)
            elif topic == topics.inbound:
                tally.add_inbound(event)
            else:
                tally.add_change(event)
        await write_tally(conn, tally)
        result.on_commit.append(lambda: _observe(tally))
        return result


def _observe(tally: Tally) -> None:
    for (_, provider, _, status), count in tally.receipts.items():
        metrics.ANALYTICS_RECEIPTS.labels(provider, status).inc(count)
    for (_, provider, _), count in tally.inbound.items():
        metrics.ANALYTICS_INBOUND.labels(provider).inc(count)
    for (_, provider, _, status), count in tally.outcomes.items():
        if count > 0:
            metrics.ANALYTICS_OUTCOMES.labels(provider, status).inc(count)
    for provider, since, seconds in tally.samples:
        metrics.ANALYTICS_LATENCY.labels(provider, since).observe(seconds)
