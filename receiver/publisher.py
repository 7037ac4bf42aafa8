"""Publishing events to Kafka, with every wait bounded.

The producer uses ``acks="all"``; :meth:`Publisher.publish` returns only once the
broker has acknowledged the record, and raises :class:`Unavailable` when that does
not happen within the send timeout. A producer that cannot start (broker down) is
retried in the background, and a probe keeps :attr:`Publisher.ready` current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from receiver import metrics
from receiver.errors import Unavailable
from smsrx.kafka import make_producer, stop_bounded
from smsrx.settings import Settings

__all__ = ["Publisher"]

logger = logging.getLogger(__name__)

_PROBE_INTERVAL = 1.0


class Publisher:
    """One Kafka producer shared by every request of a receiver process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timeout = settings.kafka_send_timeout
        self._producer: AIOKafkaProducer | None = None
        self._ready = False
        self._task: asyncio.Task[None] | None = None

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
        """Send one record and wait for the broker's acknowledgement, or raise Unavailable."""
        producer = self._producer
        if producer is None:
            metrics.PRODUCER_ERRORS.labels("not_ready").inc()
            raise Unavailable("the event broker is unreachable; retry later")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                await (await producer.send(topic, value, key=key))
        except TimeoutError:
            metrics.PRODUCER_ERRORS.labels("timeout").inc()
            self._set_ready(False)
            logger.warning(
                "publish timed out after %.1fs topic=%s key=%s",
                self.timeout,
                topic,
                key.decode(errors="replace"),
            )
            raise Unavailable("the event broker did not acknowledge in time; retry later") from None
        except KafkaError as exc:
            metrics.PRODUCER_ERRORS.labels("error").inc()
            logger.warning("publish failed topic=%s error=%s", topic, exc)
            raise Unavailable("the event broker refused the event; retry later") from None
        metrics.PUBLISH_SECONDS.labels(topic).observe(time.perf_counter() - started)
        metrics.EVENTS_PUBLISHED.labels(topic).inc()

    async def publish_many(self, records: list[tuple[str, bytes, bytes]]) -> None:
        """Send records in order and wait until the broker acknowledged all, or raise Unavailable."""
        producer = self._producer
        if producer is None or not self._ready:
            raise Unavailable("the event broker is not ready")
        try:
            async with asyncio.timeout(self.timeout):
                futures = [
                    await producer.send(topic, value, key=key) for topic, key, value in records
                ]
                await asyncio.gather(*futures)
        except (TimeoutError, KafkaError) as exc:
            metrics.PRODUCER_ERRORS.labels(
                "timeout" if isinstance(exc, TimeoutError) else "error"
            ).inc()
            raise Unavailable(f"replay batch not acknowledged: {exc!r}") from None
        for topic, _, _ in records:
            metrics.EVENTS_PUBLISHED.labels(topic).inc()

    async def close(self) -> None:
        """Stop probing and stop the producer, within the send timeout."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            await stop_bounded(self._producer, self.timeout)
            self._producer = None
        self._set_ready(False)
