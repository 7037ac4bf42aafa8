"""The inbound worker (``smsrx consumer inbound``, group ``smsrx-inbound``).

It owns what inbound SMS *do*, apart from storing them (status-projection keeps the
messages; analytics counts them):

- **Routing.** Each new message of ``sms.inbound.v1`` gets a route from its first
  keyword (:mod:`consumers.routes`) and is published to ``sms.inbound.routed.v1``, or
  to its rule's own topic. A message that matches nothing gets ``default``.
- **Opt-outs.** A message that is an opt-out or opt-in keyword also becomes an event on
  ``sms.opt-outs.v1``, keyed by the sender's number.
- **The suppression list.** Every event of ``sms.opt-outs.v1``, from a keyword or from
  ``smsrx optouts add|remove|import``, is applied to ``suppressions`` in PostgreSQL,
  which ``GET /v1/optouts/{e164}`` on this worker's internal port reads.

Why a worker of its own rather than status-projection: opt-outs are a legal duty
with their own topic, tables and read API; they should not wait behind a bulk
campaign's receipts, and under least privilege its database role touches only the
suppression tables.

A message is routed once: its event_id goes into ``inbound_routed`` in the same
transaction that publishes its records, so a carrier's second notification or a replay
of the topic publishes nothing. A crash between the broker's acknowledgement and the
commit publishes the records again, with the same event_ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumers import metrics
from consumers.batches import Applied, Batch, Decoder
from consumers.errors import BrokerUnavailable, RecordRejected
from consumers.optouts_api import OptOutReader
from consumers.optouts_sql import apply_opt_outs, count_suppressed, mark_routed
from consumers.routes import Decision, Rules, recipient_of
from consumers.worker import Worker
from smsrx.codec import decode_inbound, decode_opt_out, encode, encode_routed
from smsrx.events import InboundMessage, OptOut
from smsrx.kafka import create_topics, make_producer, stop_bounded
from smsrx.phones import country_alpha3
from smsrx.produce import REFUSED_FOR_GOOD, Record, produce_all
from smsrx.settings import Settings

__all__ = ["Inbound"]

logger = logging.getLogger(__name__)

_GAUGE_INTERVAL = 15.0


class Inbound(Worker):
    """Routes inbound SMS, turns keywords into opt-outs, keeps the suppression list."""

    role = "inbound"
    group = "smsrx-inbound"

    def __init__(self, settings: Settings, rules: Rules | None = None, **options: Any) -> None:
        super().__init__(settings, **options)
        self.rules = rules or Rules()
        self.producer: AIOKafkaProducer | None = None
        self.reader: OptOutReader | None = None
        self._gauge_at = 0.0

    @property
    def decoders(self) -> Mapping[str, Decoder]:
        """Inbound SMS and opt-out events."""
        topics = self.settings.topics
        return {topics.inbound: decode_inbound, topics.opt_outs: decode_opt_out}

    def http_routes(self) -> list[web.RouteDef]:
        """``GET /v1/optouts/{e164}``, served beside ``/metrics`` on the internal port."""
        self.reader = OptOutReader(lambda: self.pool)
        return self.reader.routes()

    async def on_start(self) -> None:
        """Start the producer, and create the per-route topics the rules name."""
        producer = make_producer(self.settings)
        self.producer = producer
        if not await self.retry("broker", producer.start):
            return
        extra = self.rules.topics()
        if extra:
            await self.retry("broker", lambda: create_topics(self.settings, extra))
        routes = ", ".join(r.name for r in self.rules.routes) or "none"
        logger.info("inbound: routes %s; per-route topics %s", routes, ", ".join(extra) or "none")

    async def on_stop(self) -> None:
        """Stop the read API's lookups and the producer."""
        if self.reader is not None:
            await self.reader.close()
        if self.producer is not None:
            await stop_bounded(self.producer, 5.0)

    async def on_idle(self) -> None:
        """Refresh the suppressed-numbers gauge now and then."""
        await self._refresh_gauge()

    async def after_batch(self) -> None:
        """Refresh the suppressed-numbers gauge now and then."""
        await self._refresh_gauge()

    async def apply(self, conn: asyncpg.Connection, batch: Batch) -> Applied:
        """Route new inbound messages, then apply opt-out events to the suppression list."""
        topics = self.settings.topics
        result = Applied()
        inbound: list[InboundMessage] = batch.of(topics.inbound)
        if inbound:
            await self._route(conn, inbound, result)
        opt_outs: list[OptOut] = batch.of(topics.opt_outs)
        if opt_outs:
            applied = await apply_opt_outs(conn, opt_outs)
            fresh = {e.event_id: e for e in opt_outs if e.event_id in applied.new}
            result.applied[topics.opt_outs] += len(fresh)
            result.duplicate[topics.opt_outs] += len(opt_outs) - len(fresh)
            result.on_commit.append(lambda: _count_opt_outs(fresh.values()))
            if applied.moved:
                self._gauge_at = 0.0  # refresh soon
        return result

    async def _route(
        self, conn: asyncpg.Connection, inbound: list[InboundMessage], result: Applied
    ) -> None:
        topics = self.settings.topics
        distinct = {m.event_id: m for m in inbound}
        decisions = {
            event_id: self.rules.decide(m.content, recipient_of(m.raw))
            for event_id, m in distinct.items()
        }
        new = await mark_routed(conn, [(i, d.route) for i, d in decisions.items()])
        records: list[Record] = []
        routed: list[str] = []
        for event_id in new:
            message, decision = distinct[event_id], decisions[event_id]
            records.extend(self._records(message, decision))
            routed.append(decision.route)
        result.applied[topics.inbound] += len(new)
        result.duplicate[topics.inbound] += len(inbound) - len(new)
        if records:
            await self._publish(records)
            result.on_commit.append(lambda: _count_routes(routed))

    def _records(self, message: InboundMessage, decision: Decision) -> list[Record]:
        topics = self.settings.topics
        records: list[Record] = [
            (
                decision.topic or topics.inbound_routed,
                message.key,
                encode_routed(message, decision.route),
            )
        ]
        if decision.optout is not None:
            event = OptOut.from_keyword(
                phone=message.sender,
                action=decision.optout.action,
                keyword=decision.optout.keyword,
                provider=message.provider,
                inbound_message_id=message.message_id,
                occurred_at=message.sent_at or message.received_at,
                received_at=message.received_at,
            )
            records.append((topics.opt_outs, event.key, encode(event)))
        return records

    async def _publish(self, records: Sequence[Record]) -> None:
        """Publish before the transaction commits; a failure retries the whole batch."""
        assert self.producer is not None
        try:
            async with asyncio.timeout(max(1.0, self.settings.kafka_send_timeout * 2)):
                await produce_all(self.producer, records)
        except REFUSED_FOR_GOOD as exc:
            # Isolated down to the message at fault, which goes to the dead-letter topic.
            raise RecordRejected(f"the broker refuses a routed record: {exc!r}") from exc
        except (KafkaError, TimeoutError) as exc:
            raise BrokerUnavailable(f"publishing {len(records)} routed records: {exc!r}") from exc

    async def _refresh_gauge(self) -> None:
        now = time.monotonic()
        if self.pool is None or now - self._gauge_at < _GAUGE_INTERVAL:
            return
        self._gauge_at = now
        try:
            metrics.SUPPRESSED.set(await count_suppressed(self.pool))
        except (asyncpg.PostgresError, OSError) as exc:
            logger.debug("inbound: suppressed-numbers gauge not refreshed: %r", exc)


def _count_opt_outs(events: Any) -> None:
    for e in events:
        metrics.OPTOUTS.labels(
            e.action.value,
            e.source.value,
            e.provider or "none",
            country_alpha3(e.phone),
            e.keyword or "none",
        ).inc()


def _count_routes(routes: Sequence[str]) -> None:
    for route in routes:
        metrics.INBOUND_ROUTED.labels(route).inc()
