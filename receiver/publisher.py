"""Publishing events to Kafka, with every wait bounded.

The producer uses ``acks="all"``; :meth:`Publisher.publish` returns only once the
broker has acknowledged the record, and raises :class:`Unavailable` when that does
not happen within the send timeout. A producer that cannot start (broker down) is
retried in the background, and a probe keeps :attr:`Publisher.ready` current.

Records of concurrent requests are sent together, batched naturally
(:class:`smsrx.batching.Batcher`): a record that finds no produce request in flight
goes at once, and records that arrive meanwhile share the next request, one batch per
partition (:func:`smsrx.produce.produce`). Under load the batches fill by themselves,
which is what keeps the broker's cost per record low; no record waits for a timer.

A record waits at most for the request in flight (bounded by the send timeout) and
then its own; once a request timed out the broker is taken as down, and records still
waiting fail at once instead of waiting out another timeout.

:meth:`Publisher.publish_many` (spool replay) sends records in order and tells two
failures apart: :class:`Refused` for records the broker refuses for good (too large,
an invalid topic name), while it acknowledges the others; :class:`Unavailable` when
any record is not acknowledged for another reason, which a later retry may mend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from receiver import metrics
from receiver.errors import Refused, Unavailable
from smsrx.batching import Batcher
from smsrx.kafka import make_producer, stop_bounded
from smsrx.privacy import Masked
from smsrx.produce import REFUSED_FOR_GOOD, Outcome, Record, produce
from smsrx.settings import Settings

__all__ = ["Publisher"]

logger = logging.getLogger(__name__)

_PROBE_INTERVAL = 1.0
_MAX_BATCH = 5000


class _NotReady(KafkaError):  # type: ignore[misc]
    """The broker was found down while the record waited for its request."""


class Publisher:
    """One Kafka producer shared by every request of a receiver process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timeout = settings.kafka_send_timeout
        self._producer: AIOKafkaProducer | None = None
        self._ready = False
        self._task: asyncio.Task[None] | None = None
        self._batcher: Batcher[Record, None] = Batcher(
            self._send, name="producer", max_batch=_MAX_BATCH
        )

    @property
    def ready(self) -> bool:
        """Whether the producer is started and the broker answered the last probe."""
        return self._producer is not None and self._ready

    def _set_ready(self, ready: bool) -> None:
        if ready != self._ready:
            logger.info(
                "producer %s bootstrap=%s",
                "ready" if ready else "NOT ready",
                self.settings.kafka_bootstrap,
            )
        self._ready = ready
        metrics.PRODUCER_READY.set(1 if ready else 0)

    async def start(self) -> None:
        """Try to start the producer now; keep trying in the background if the broker is down."""
        metrics.PRODUCER_READY.set(0)
        await self._try_start()
        self._task = asyncio.create_task(self._keep_connected(), name="producer-probe")

    async def _try_start(self) -> None:
        producer = make_producer(self.settings)
        try:
            async with asyncio.timeout(self.timeout):
                await producer.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            logger.warning(
                "producer cannot start yet bootstrap=%s error=%s",
                self.settings.kafka_bootstrap,
                exc,
            )
            await stop_bounded(producer, self.timeout)
            return
        self._producer = producer
        self._set_ready(True)

    async def _keep_connected(self) -> None:
        while True:
            await asyncio.sleep(_PROBE_INTERVAL)
            if self._producer is None:
                await self._try_start()
                continue
            try:
                async with asyncio.timeout(self.timeout):
                    await self._producer.client.fetch_all_metadata()
            except (KafkaError, OSError, TimeoutError):
                self._set_ready(False)
            else:
                self._set_ready(True)

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Send one record and wait for the broker's acknowledgement, or raise Unavailable.

        While the broker is known to be unreachable (a send timed out, or the probe failed),
        this fails at once instead of waiting out the send timeout for every request: the
        caller spools the event (or answers 503) without holding the carrier's connection.
        """
        if self._producer is None or not self._ready:
            metrics.PRODUCER_ERRORS.labels("not_ready").inc()
            raise Unavailable("the event broker is unreachable; retry later")
        started = time.perf_counter()
        try:
            await self._batcher.submit((topic, key, value))
        except TimeoutError:
            metrics.PRODUCER_ERRORS.labels("timeout").inc()
            logger.warning(
                "publish timed out after %.1fs topic=%s key=%s",
                self.timeout,
                topic,
                Masked(key.decode(errors="replace")),
            )
            raise Unavailable("the event broker did not acknowledge in time; retry later") from None
        except _NotReady:
            metrics.PRODUCER_ERRORS.labels("not_ready").inc()
            raise Unavailable("the event broker is unreachable; retry later") from None
        except KafkaError as exc:
            metrics.PRODUCER_ERRORS.labels("error").inc()
            logger.warning("publish failed topic=%s error=%s", topic, exc)
            raise Unavailable("the event broker refused the event; retry later") from None
        metrics.observe_publish(topic, time.perf_counter() - started)

    async def _send(self, records: list[Record]) -> list[Outcome]:
        """One produce request for every record queued meanwhile, bounded by the send timeout."""
        producer = self._producer
        if producer is None or not self._ready:
            return [_NotReady("the broker went away while the record waited")] * len(records)
        try:
            async with asyncio.timeout(self.timeout):
                return await produce(producer, records)
        except TimeoutError:
            self._set_ready(False)  # records still waiting fail at once (see above)
            raise

    async def publish_many(self, records: list[Record]) -> None:
        """Send records in order and wait until the broker acknowledged them.

        Raises :class:`Refused` when the broker refused some records for good and
        acknowledged all the others, and :class:`Unavailable` when any record is not
        acknowledged for another reason (then some others may have been).
        """
        producer = self._producer
        if producer is None or not self._ready:
            raise Unavailable("the event broker is not ready")
        try:
            async with asyncio.timeout(self.timeout):
                outcomes = await produce(producer, records)
        except TimeoutError as exc:
            metrics.PRODUCER_ERRORS.labels("timeout").inc()
            raise Unavailable(f"replay batch not acknowledged: {exc!r}") from None
        refused: dict[int, str] = {}
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, REFUSED_FOR_GOOD):
                refused[index] = str(outcome)
            elif outcome is not None:
                metrics.PRODUCER_ERRORS.labels("error").inc()
                raise Unavailable(f"replay batch not acknowledged: {outcome!r}")
        for index, (topic, _, _) in enumerate(records):
            if index not in refused:
                metrics.EVENTS_PUBLISHED.inc(topic)
        if refused:
            metrics.PRODUCER_ERRORS.labels("error").inc(len(refused))
            raise Refused(f"the broker refused {len(refused)} records for good", reasons=refused)

    async def close(self) -> None:
        """Finish what is queued (within the send timeout), stop probing, stop the producer."""
        await self._batcher.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            await stop_bounded(self._producer, self.timeout)
            self._producer = None
        self._set_ready(False)
