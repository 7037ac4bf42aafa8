"""Replaying the spool into Kafka once the broker is back, in order, at a bounded rate.

A batch is removed from the spool only after the broker acknowledged all of it. If
the process dies in between, the batch is published again on restart; consumers
deduplicate on ``event_id``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from receiver import metrics
from receiver.dedup import Dedup
from receiver.errors import Unavailable
from receiver.publisher import Publisher
from receiver.spool import Spool

__all__ = ["Replayer"]

logger = logging.getLogger(__name__)

_BATCH = 500


class Replayer:
    """Background task draining the spool while the producer is ready."""

    def __init__(self, spool: Spool, publisher: Publisher, dedup: Dedup, *, rate: float) -> None:
        self.spool = spool
        self.publisher = publisher
        self.dedup = dedup
        self.rate = rate
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start replaying in the background."""
        self._task = asyncio.create_task(self._run(), name="spool-replay")

    async def close(self) -> None:
        """Stop replaying; what is not committed stays in the spool."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        backoff = 1.0
        replaying = False
        while True:
            if not self.spool.pending or not self.publisher.ready:
                if replaying and not self.spool.pending:
                    logger.info("spool replay finished")
                replaying = False
                await asyncio.sleep(0.5)
                continue
            if not replaying:
                logger.info(
                    "spool replay starting events=%d rate=%.0f/s", self.spool.pending, self.rate
                )
                replaying = True
            started = time.monotonic()
            entries = await self.spool.next_batch(min(_BATCH, max(1, int(self.rate))))
            if not entries:
                await asyncio.sleep(0.5)
                continue
            try:
                await self.publisher.publish_many([(e.topic, e.key, e.value) for e in entries])
            except Unavailable as exc:
                logger.warning("spool replay paused: %s; retrying in %.0fs", exc.detail, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            await self.spool.commit(entries)
            metrics.SPOOL_REPLAYED.inc(len(entries))
            for entry in entries:
                doc = orjson.loads(entry.value)
                self.dedup.published(doc["event_id"], doc["provider"], doc["message_id"])
            # Bounded rate: a batch of n events takes at least n / rate seconds.
            await asyncio.sleep(max(0.0, len(entries) / self.rate - (time.monotonic() - started)))
