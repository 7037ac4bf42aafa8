"""The poller (``smsrx consumer poller``, group ``smsrx-poller``): delivery statuses of the
carriers that document a status API instead of push receipts (Gateway SMS, VavaSMS).

- **What it polls.** It reads ``sms.submissions.v1`` and schedules, in ``poll_schedule``,
  each recipient of a submission whose provider has a poll client with credentials. It
  reads ``sms.message-status.v1`` too: a final status, pushed or polled, ends polling.
  Both happen in the batch transaction, before the offsets are committed.
- **When.** ``SMSRX_POLL_SCHEDULE`` gives the delays between polls (the first counts from
  the submission); the last repeats until ``SMSRX_EXPIRY_HORIZON``, after which the
  expiry sweep ends a recipient that is still not final.
- **How fast.** One task per provider claims due rows (:func:`~consumers.polling.schedule.claim`)
  and polls them at most ``SMSRX_<PROVIDER>_POLL_RATE`` requests per second, with at most
  ``SMSRX_POLL_CONCURRENCY`` requests in flight across providers. Gateway SMS answers
  for every recipient of a message in one request; VavaSMS has one id per recipient.
- **What it emits.** A carrier value that changed since the previous poll becomes a
  receipt on ``sms.delivery-receipts.v1`` (``source: poll``), with the same deterministic
  event_id a push of that state would have. The schedule moves only after the broker
  acknowledged the receipts: a crash in between polls those rows once more, after
  their lease, and publishes the same event_ids again (status-projection keeps one).
- **Errors.** 5xx, 429 and timeouts back off (:mod:`consumers.polling.decide`); refused
  credentials pause the provider for 15 minutes with one log line, a metric and an alert;
  an id the carrier does not know is tried a few times, then ends ``unknown``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumers.batches import Applied, Batch, Decoder
from consumers.polling import metrics
from consumers.polling.client import Outcome, PollClient, PollResult
from consumers.polling.clients import open_clients, poll_rate
from consumers.polling.decide import AUTH_PAUSE, RETRY_FIRST, decide
from consumers.polling.ratelimit import RateLimit
from consumers.polling.schedule import (
    Claimed,
    Decision,
    claim,
    end_final,
    record,
    schedule_submissions,
    stats,
)
from consumers.worker import Worker
from smsrx import providers
from smsrx.clock import utcnow
from smsrx.codec import decode_status_change, decode_submission, encode
from smsrx.db import DB_ERRORS
from smsrx.events import DeliveryReceipt, StatusChange, Submission
from smsrx.kafka import make_producer, stop_bounded
from smsrx.produce import Record, produce_all
from smsrx.settings import Settings
from smsrx.unmapped import unmapped_status

__all__ = ["Poller"]

logger = logging.getLogger(__name__)

_GAUGE_INTERVAL = 15.0
_IDLE = 1.0
_CLAIM_PER_SLOT = 4


class Poller(Worker):
    """Schedules polls from submissions, polls carriers' status APIs, publishes receipts."""

    role = "poller"
    group = "smsrx-poller"

    def __init__(
        self,
        settings: Settings,
        clients: Mapping[str, PollClient] | None = None,
        *,
        min_lease: float = 60.0,
        retry_first: float = RETRY_FIRST,
        auth_pause: float = AUTH_PAUSE,
        **options: Any,
    ) -> None:
        super().__init__(settings, **options)
        self.min_lease = min_lease
        """Shortest claim on due rows: a poller killed mid-poll leaves them this long."""
        self.retry_first = retry_first
        self.auth_pause = auth_pause
        self.clients: dict[str, PollClient] = dict(clients) if clients is not None else {}
        self._own_clients = clients is None
        self.producer: AIOKafkaProducer | None = None
        self._slots = asyncio.Semaphore(settings.poll_concurrency)
        self._limits: dict[str, RateLimit] = {}
        self._paused_until: dict[str, float] = {}
        self._gauge_at = 0.0
        self.polled = 0
        """Status requests answered (any outcome) since start."""

    @property
    def decoders(self) -> Mapping[str, Decoder]:
        """Submissions, and status changes (a final one ends polling)."""
        topics = self.settings.topics
        return {
            topics.submissions: decode_submission,
            topics.message_status: decode_status_change,
        }

    async def on_start(self) -> None:
        """Open the poll clients and the producer, then start one poll task per provider."""
        if self._own_clients:
            self.clients = open_clients(self.settings)
        for name in self.clients:
            rate = poll_rate(self.settings, name)
            self._limits[name] = RateLimit(name, rate)
            metrics.CREDENTIALS_OK.labels(name).set(1)
        producer = make_producer(self.settings)
        self.producer = producer
        if not await self.retry("broker", producer.start):
            return
        logger.info(
            "poller: polling %s; schedule %s; at most %d requests in flight",
            ", ".join(self.clients) or "nothing (no provider has credentials)",
            ",".join(f"{d:g}s" for d in self.settings.poll_schedule),
            self.settings.poll_concurrency,
        )
        for name in self.clients:
            self.spawn(self._poll_forever(name), f"poll-{name}")

    async def on_stop(self) -> None:
        """Close the clients and the producer."""
        for client in self.clients.values():
            await client.close()
        if self.producer is not None:
            await stop_bounded(self.producer, 5.0)

    async def on_idle(self) -> None:
        """Refresh the schedule gauges now and then."""
        await self._refresh_gauges()

    async def after_batch(self) -> None:
        """Refresh the schedule gauges now and then."""
        await self._refresh_gauges()

    async def apply(self, conn: asyncpg.Connection, batch: Batch) -> Applied:
        """Schedule the recipients of new submissions; end polling at a final status."""
        topics = self.settings.topics
        result = Applied()
        submissions: list[Submission] = batch.of(topics.submissions)
        rows = [
            (s.provider, s.message_id, recipient, s.submitted_at)
            for s in submissions
            if s.provider in self.clients
            for recipient in s.recipients
        ]
        if rows:
            await schedule_submissions(conn, rows, self.settings.poll_schedule[0])
            self._gauge_at = 0.0
        result.applied[topics.submissions] += len(submissions)
        changes: list[StatusChange] = batch.of(topics.message_status)
        finals = [
            (c.provider, c.message_id, c.recipient)
            for c in changes
            if c.is_final and c.provider in providers.PROVIDERS and providers.get(c.provider).polls
        ]
        if finals:
            await end_final(conn, finals, utcnow())
        result.applied[topics.message_status] += len(changes)
        return result

    # --- polling ----------------------------------------------------------------------

    def _lease(self, provider: str, rows: int) -> float:
        """How long a claim holds its rows: their requests at the rate, with room."""
        rate = 1.0 / self._limits[provider].interval
        return max(self.min_lease, 2 * (rows / rate + self.settings.poll_timeout))

    async def _poll_forever(self, provider: str) -> None:
        limit = self.settings.poll_concurrency * _CLAIM_PER_SLOT
        while not self.stopping:
            paused = self._paused_until.get(provider, 0.0) - time.monotonic()
            if paused > 0:
                await self.sleep(min(paused, _IDLE * 5))
                continue
            if self.pool is None:
                await self.sleep(_IDLE)
                continue
            try:
                rows = await claim(
                    self.pool, provider, utcnow(), self._lease(provider, limit), limit
                )
            except DB_ERRORS as exc:
                logger.warning("poller: %s: cannot claim due polls: %r", provider, exc)
                await self.sleep(_IDLE * 5)
                continue
            if not rows:
                await self.sleep(_IDLE)
                continue
            await self._poll_rows(provider, rows)

    async def _poll_rows(self, provider: str, rows: Sequence[Claimed]) -> None:
        client = self.clients[provider]
        groups: dict[str, list[Claimed]] = defaultdict(list)
        for row in rows:
            groups[row.message_id].append(row)
        requests = _requests(provider, groups)
        answers = await asyncio.gather(*(self._ask(client, mid, rs) for mid, rs in requests))
        now = utcnow()
        decisions: list[Decision] = []
        receipts: list[DeliveryReceipt] = []
        for (_, asked), answer in zip(requests, answers, strict=True):
            found = {s.recipient: s for s in answer.statuses}
            for row in asked:
                polled = found.get(row.recipient)
                if polled is not None and not polled.mapped.known:
                    unmapped_status(provider, polled.provider_status)
                decision, receipt = decide(
                    row,
                    answer.outcome,
                    polled,
                    now=now,
                    schedule=self.settings.poll_schedule,
                    horizon=self.settings.expiry_horizon,
                    reason=answer.reason,
                    retry_after=answer.retry_after,
                    retry_first=self.retry_first,
                    auth_pause=self.auth_pause,
                )
                decisions.append(decision)
                if receipt is not None:
                    receipts.append(receipt)
        if receipts and not await self._publish(provider, receipts):
            return  # the leases run out and these rows are polled again
        assert self.pool is not None
        try:
            await record(self.pool, decisions, utcnow())
        except DB_ERRORS as exc:
            logger.warning("poller: %s: schedule not updated, polled again: %r", provider, exc)
            return
        for r in receipts:
            metrics.POLL_RECEIPTS.labels(provider, r.status.value).inc()

    async def _ask(self, client: PollClient, message_id: str, rows: list[Claimed]) -> PollResult:
        provider = client.provider
        if self._paused_until.get(provider, 0.0) > time.monotonic():
            return PollResult(Outcome.AUTH_FAILED, reason="credentials refused earlier")
        await self._limits[provider].acquire()
        async with self._slots:
            started = time.perf_counter()
            result = await client.poll(message_id, [r.recipient for r in rows])
            metrics.POLL_LATENCY.labels(provider).observe(time.perf_counter() - started)
        self.polled += 1
        metrics.POLLS.labels(provider, result.outcome.value).inc()
        self._credentials(provider, result)
        return result

    def _credentials(self, provider: str, result: PollResult) -> None:
        refused = result.outcome is Outcome.AUTH_FAILED
        if refused and self._paused_until.get(provider, 0.0) <= time.monotonic():
            self._paused_until[provider] = time.monotonic() + self.auth_pause
            metrics.CREDENTIALS_OK.labels(provider).set(0)
            envs = " and ".join(providers.get(provider).credential_envs)
            logger.error(
                "poller: %s refused the credentials (%s): polling %s paused for %.0f min; check %s",
                provider,
                result.reason,
                provider,
                self.auth_pause / 60,
                envs,
            )
        elif not refused and result.outcome is not Outcome.RETRY:
            if self._paused_until.pop(provider, None) is not None:
                logger.info("poller: %s accepts the credentials again", provider)
            metrics.CREDENTIALS_OK.labels(provider).set(1)

    async def _publish(self, provider: str, receipts: Sequence[DeliveryReceipt]) -> bool:
        assert self.producer is not None
        topic = self.settings.topics.delivery_receipts
        records: list[Record] = [(topic, r.key, encode(r)) for r in receipts]
        try:
            async with asyncio.timeout(max(1.0, self.settings.kafka_send_timeout * 2)):
                await produce_all(self.producer, records)
        except (KafkaError, TimeoutError) as exc:
            logger.warning(
                "poller: %s: %d receipts not published (%r); polled again after the lease",
                provider,
                len(records),
                exc,
            )
            return False
        return True

    async def _refresh_gauges(self) -> None:
        now = time.monotonic()
        if self.pool is None or now - self._gauge_at < _GAUGE_INTERVAL:
            return
        self._gauge_at = now
        try:
            by_provider = await stats(self.pool, utcnow())
        except DB_ERRORS as exc:
            logger.debug("poller: gauges not refreshed: %r", exc)
            return
        for name in self.clients:
            s = by_provider.get(name)
            metrics.POLLS_PENDING.labels(name).set(s.pending if s else 0)
            metrics.POLLS_DUE.labels(name).set(s.due if s else 0)
            metrics.POLLS_OVERDUE_SECONDS.labels(name).set(s.overdue if s else 0)


def _requests(
    provider: str, groups: Mapping[str, list[Claimed]]
) -> list[tuple[str, list[Claimed]]]:
    """The requests for the claimed rows: one per message where the carrier answers for
    every recipient of a message (Gateway SMS), else one per recipient."""
    if providers.get(provider).polls_per_message:
        return list(groups.items())
    return [(mid, [row]) for mid, rows in groups.items() for row in rows]
