"""Publishing events to Kafka, with every wait bounded.

The producer uses ``acks="all"``; :meth:`Publisher.publish` returns only once the
broker has acknowledged the record, and raises :class:`Unavailable` when that does
not happen within the send timeout. A producer that cannot start (broker down) is
retried in the background, and a probe keeps :attr:`Publisher.ready` current.

Records of concurrent requests are sent together. ``publish`` only queues the record;
one sender task takes everything queued, builds one batch per partition with
aiokafka's batch API and submits it, while the next records queue up behind it. This
costs a fraction of one ``producer.send`` per record. Fewer than :data:`_EAGER`
queued records wait :data:`_LINGER` (2 ms) for company first: every produce request
costs the broker and this process a wake-up, and at 1,000–2,000 callbacks/s sharing
them saved 10–25 % of the CPU the receiver, broker and database spend per callback
(bench/README.md). Partitions are chosen as ``producer.send`` chooses them (see
:mod:`smsrx.partitioner`), so each message's records stay on one partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from receiver import metrics
from receiver.errors import Unavailable
from smsrx.kafka import make_producer, stop_bounded
from smsrx.partitioner import partition_for
from smsrx.settings import Settings

__all__ = ["Publisher"]

logger = logging.getLogger(__name__)

_PROBE_INTERVAL = 1.0
_GENERATION = 0.05
"""Records queued within this many seconds share one deadline timer."""
_LINGER = 0.002
"""Seconds a small batch waits for company before it is sent..."""
_EAGER = 8
"""...unless this many records are queued already."""

_Record = tuple[str, bytes, bytes, "asyncio.Future[None]"]


def _fail(futures: list[asyncio.Future[None]], exc: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)


def _settle(futures: list[asyncio.Future[None]]) -> Callable[[asyncio.Future[object]], None]:
    """A callback that hands a batch's outcome to each of its records."""

    def done(batch: asyncio.Future[object]) -> None:
        exc = KafkaError("batch cancelled") if batch.cancelled() else batch.exception()
        if exc is not None:
            _fail(futures, exc)
            return
        for future in futures:
            if not future.done():
                future.set_result(None)

    return done


def _expire(futures: list[asyncio.Future[None]]) -> None:
    _fail(futures, TimeoutError())


class Publisher:
    """One Kafka producer shared by every request of a receiver process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timeout = settings.kafka_send_timeout
        self._producer: AIOKafkaProducer | None = None
        self._ready = False
        self._task: asyncio.Task[None] | None = None
        self._queue: list[_Record] = []
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._generation: list[asyncio.Future[None]] = []
        self._generation_ends = 0.0
        self._partitions: dict[str, list[int]] = {}

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
        self._sender = asyncio.create_task(self._send_loop(), name="producer-sender")

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
            self._partitions.clear()  # re-read from the fresh metadata on the next batch

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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append((topic, key, value, future))
        self._wake.set()
        # One timer bounds every record queued in the same short window (a "generation"):
        # each record waits at most the send timeout, and at least the timeout less 50 ms.
        now = loop.time()
        if now >= self._generation_ends:
            self._generation = []
            self._generation_ends = now + _GENERATION
            loop.call_at(now + self.timeout, _expire, self._generation)
        self._generation.append(future)
        try:
            await future
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
        metrics.observe_publish(topic, time.perf_counter() - started)

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            if _LINGER > 0 and len(self._queue) < _EAGER:
                await asyncio.sleep(_LINGER)
            self._wake.clear()
            while self._queue:
                records, self._queue = self._queue, []
                try:
                    await self._send(records)
                except Exception as exc:  # noqa: BLE001 - handed to each waiting request
                    error = exc if isinstance(exc, KafkaError) else KafkaError(repr(exc))
                    _fail([record[3] for record in records], error)

    async def _send(self, records: list[_Record]) -> None:
        producer = self._producer
        if producer is None:
            raise KafkaError("producer not started")
        by_topic: dict[str, list[_Record]] = {}
        for record in records:
            if not record[3].done():  # expired or cancelled while queued: not sent at all
                by_topic.setdefault(record[0], []).append(record)
        for topic, queued in by_topic.items():
            partitions = self._partitions.get(topic)
            if partitions is None:
                # The same list, in the same order, that producer.send() partitions over.
                partitions = self._partitions[topic] = list(await producer.partitions_for(topic))
            groups: dict[int, list[_Record]] = {}
            for record in queued:
                groups.setdefault(partition_for(record[1], partitions), []).append(record)
            for partition, group in groups.items():
                try:
                    await self._send_group(producer, topic, partition, group)
                except KafkaError as exc:
                    _fail([record[3] for record in group], exc)

    async def _send_group(
        self, producer: AIOKafkaProducer, topic: str, partition: int, group: list[_Record]
    ) -> None:
        start = 0
        while start < len(group):
            builder = producer.create_batch()
            end = start
            while end < len(group):
                _, key, value, _ = group[end]
                if builder.append(key=key, value=value, timestamp=None) is None:
                    break
                end += 1
            if end == start:  # a record larger than a whole batch: send() says why
                await self._send_one(producer, group[start])
                start += 1
                continue
            builder.close()
            sent = await producer.send_batch(builder, topic, partition=partition)
            sent.add_done_callback(_settle([record[3] for record in group[start:end]]))
            start = end

    async def _send_one(self, producer: AIOKafkaProducer, record: _Record) -> None:
        topic, key, value, future = record
        try:
            sent = await producer.send(topic, value, key=key)
        except KafkaError as exc:
            if not future.done():
                future.set_exception(exc)
            return
        sent.add_done_callback(_settle([future]))

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
        for task in (self._task, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for *_, future in self._queue:
            if not future.done():
                future.set_exception(KafkaError("publisher closed"))
        self._queue = []
        if self._producer is not None:
            await stop_bounded(self._producer, self.timeout)
            self._producer = None
        self._set_ready(False)
