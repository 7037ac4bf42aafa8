"""From canonical event to durable record: dedup, publish (or spool), remember.

An event is durable once the broker acknowledged it or, when the broker cannot
within the send timeout, once it is fsynced in the local spool.

Concurrent copies of one event (a carrier retrying while the first attempt is still
in flight) wait for the first copy's outcome instead of publishing again.
"""

from __future__ import annotations

import asyncio

from receiver import metrics
from receiver.dedup import Dedup
from receiver.errors import Unavailable
from receiver.publisher import Publisher
from receiver.spool import Spool
from smsrx.codec import CarrierEvent as Event
from smsrx.codec import encode
from smsrx.events import DeliveryReceipt, InboundMessage
from smsrx.topics import Topics

__all__ = ["Pipeline"]


class Pipeline:
    """Accepts events: returns True when published now, False when already published."""

    def __init__(
        self, publisher: Publisher, dedup: Dedup, topics: Topics, spool: Spool | None = None
    ) -> None:
        self.publisher = publisher
        self.dedup = dedup
        self.spool = spool
        self._topic = {DeliveryReceipt: topics.delivery_receipts, InboundMessage: topics.inbound}
        self._in_flight: dict[str, asyncio.Future[bool]] = {}

    async def accept(self, event: Event) -> bool:
        """Make ``event`` durable unless it already is; raise Unavailable if it cannot be."""
        event_id = event.event_id
        if self.dedup.cached(event_id):
            metrics.dedup_hit(event.provider, "cache")
            return False
        first = self._in_flight.get(event_id)
        if first is not None:
            await asyncio.shield(first)  # re-raises the first copy's Unavailable
            metrics.dedup_hit(event.provider, "in_flight")
            return False
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._in_flight[event_id] = outcome
        try:
            if await self.dedup.seen(event_id):
                metrics.dedup_hit(event.provider, "database")
                published = False
            else:
                await self._make_durable(event)
                published = True
        except BaseException as exc:
            if isinstance(exc, Exception):
                outcome.set_exception(exc)
            else:  # cancelled: copies waiting on this one must not be cancelled too
                outcome.set_exception(Unavailable("the first copy of this event was interrupted"))
            outcome.exception()  # retrieved: waiters, if any, re-raise it themselves
            raise
        finally:
            del self._in_flight[event_id]
        outcome.set_result(published)
        return published

    async def _make_durable(self, event: Event) -> None:
        topic, value = self._topic[type(event)], encode(event)
        try:
            await self.publisher.publish(topic, event.key, value)
        except Unavailable:
            if self.spool is None:
                raise
            await self.spool.append(topic, event.key, value)  # Unavailable when full
            metrics.SPOOLED.labels(topic).inc()
            self.dedup.remember(event.event_id)  # the store learns it once replayed
            return
        self.dedup.published(event.event_id, event.provider, event.message_id)
