"""The consumer-group worker that status-projection and analytics are built on.

Its shape follows arq's ``Worker`` (``run()``, ``close()``, a drain on SIGTERM bounded
by ``shutdown_timeout``, ``handle_signals=False`` for tests) and aiokafka's
``local_state_consumer`` example. One loop turn:

1. ``getmany()`` a batch (at most ``batch_max_records``);
2. decode it (:func:`consumers.batches.prepare`); a record that does not decode is set
   aside as a dead letter;
3. apply it in **one** database transaction (:meth:`Worker.apply`), where the
   subclass checks event_id uniqueness, so a redelivered event changes nothing;
4. publish the batch's dead letters to ``sms.dead-letter.v1``;
5. only then commit the Kafka offsets;
6. run :meth:`Worker.after_batch` (publishing the outbox, say).

Steps 1-2 of the next batch run while steps 3-5 of the current one wait on the
database, so Python and PostgreSQL work at the same time; batches still run one at a
time, in order. Steps 3-4, with a worker's ``lanes``, retries and the isolation of a
record the database refuses, are :class:`~consumers.applier.Applier`'s; this module
drives the consumer. Offsets of a lane are committed only once its own transaction has.

When partitions are revoked, the rebalance listener waits for the batch in flight
and commits what is done. When PostgreSQL is down, the same batch is retried with
backoff, uncommitted; a revoke or a stop abandons it, and its partitions are sought
back to it so that it is fetched again. :mod:`consumers.offsets` decides which batches
may be applied and committed: never one fetched before a rebalance or a seek, never one
that does not follow the last applied batch of its partition. No offset is committed
past a dead letter that is not published yet.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import signal
import time
from collections.abc import Collection, Coroutine, Mapping
from typing import Any, ClassVar

from aiohttp import web
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from consumers import metrics
from consumers.applier import Applier
from consumers.batches import Applied, Decoder, Prepared, prepare
from smsrx.db import create_pool
from smsrx.kafka import make_consumer, make_producer, stop_bounded
from smsrx.settings import Settings

__all__ = ["Worker"]

logger = logging.getLogger(__name__)

_LAG_INTERVAL = 1.0


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self.worker._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        self.worker._on_assigned(set(assigned))


def _describe(partitions: Collection[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "-"


class Worker(Applier):
    """A consumer-group member that applies each batch in one database transaction.

    A subclass sets ``role``, ``group`` and maybe ``lanes``, and defines ``decoders``
    and :meth:`~consumers.applier.Applier.apply`.
    """

    group: ClassVar[str]
    """Consumer group, after the deployment's topic prefix."""

    def __init__(
        self,
        settings: Settings,
        *,
        handle_signals: bool = True,
        group_id: str | None = None,
        consumer_options: Mapping[str, Any] | None = None,
        poll_timeout: float = 0.5,
    ) -> None:
        super().__init__(settings)
        self.handle_signals = handle_signals
        self.group_id = group_id or settings.topics.prefix + self.group
        self.consumer_options = dict(consumer_options or {})
        self.poll_timeout = poll_timeout
        self.processed = 0
        """Records processed (decoded and committed to the database) since start."""
        self.assigned = asyncio.Event()
        """Set once the group gave this worker partitions (tests wait on it)."""
        self._batch_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[Any] | None = None
        self._closed = False
        self._lag_at = 0.0

    # --- what a worker defines ---------------------------------------------------

    @property
    @abc.abstractmethod
    def decoders(self) -> Mapping[str, Decoder]:
        """The topics to consume, each with the decoder of its records."""

    async def on_start(self) -> None:
        """Called once the database pool exists, before the consumer joins the group."""

    async def after_batch(self) -> None:
        """Called after each batch was committed, to the database and to Kafka."""

    async def on_idle(self) -> None:
        """Called when a poll returned nothing."""

    def http_routes(self) -> list[web.RouteDef]:
        """Routes served beside ``/metrics`` on the worker's internal port; none here."""
        return []

    async def on_stop(self) -> None:
        """Called while closing, after the consumer left the group."""

    # --- lifecycle ----------------------------------------------------------------

    async def run(self) -> None:
        """Consume until :meth:`stop` (or SIGTERM/SIGINT with ``handle_signals``)."""
        self._main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if self.handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            if await self._start():
                await self._consume()
        finally:
            if self.handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            await self.close()

    def stop(self) -> None:
        """Stop taking batches; the one in flight finishes and is committed."""
        if not self._stopping.is_set():
            logger.info("%s stopping: draining the batch in flight", self.role)
        self._stopping.set()
        self._wakeup.set()

    async def close(self) -> None:
        """Commit what is done and release every resource; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        limit = self.settings.shutdown_timeout
        if self.consumer is not None:
            if not self._batch_lock.locked():
                await self._commit()
            await stop_bounded(self.consumer, limit)
            for tp in self._offsets.partitions():
                self._forget(tp)
        if self.dead_letter_producer is not None:
            await stop_bounded(self.dead_letter_producer, limit)
        try:
            await self.on_stop()
        finally:
            if self.pool is not None:
                try:
                    await asyncio.wait_for(self.pool.close(), limit)
                except TimeoutError:
                    self.pool.terminate()
        logger.info("%s stopped ◆ %d records processed", self.role, self.processed)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run a background task that :meth:`close` cancels."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "%s: background task %s failed",
                self.role,
                task.get_name(),
                exc_info=task.exception(),
            )

    def _on_signal(self, sig: int) -> None:
        limit = self.settings.shutdown_timeout
        logger.info(
            "%s: shutdown on %s ◆ draining, at most %.0fs",
            self.role,
            signal.Signals(sig).name,
            limit,
        )
        self.stop()
        if self._main is not None:
            asyncio.get_running_loop().call_later(limit, self._main.cancel)

    async def _start(self) -> bool:
        async def connect() -> None:
            self.pool = await create_pool(self.settings.database_url, min_size=1, max_size=4)

        if not await self.retry("database", connect):
            return False
        await self.on_start()
        for topic in self.decoders:  # from zero, so that the first one is an increase
            metrics.DEAD_LETTERS.labels(self.role, topic)
        if self.dead_letter_producer is None:
            self.dead_letter_producer = make_producer(self.settings)
        if not await self.retry("broker", self.dead_letter_producer.start):
            return False
        consumer = make_consumer(self.settings, group_id=self.group_id, **self.consumer_options)
        consumer.subscribe(topics=list(self.decoders), listener=_Listener(self))
        self.consumer = consumer
        if not await self.retry("broker", consumer.start):
            return False
        logger.info(
            "%s started group=%s topics=%s", self.role, self.group_id, ",".join(self.decoders)
        )
        return True

    async def _consume(self) -> None:
        # Two-stage pipeline: while batch N is in its database transaction, batch N+1 is
        # fetched and decoded. Transactions still run one at a time, in order.
        assert self.consumer is not None
        timeout_ms = int(self.poll_timeout * 1000)
        inflight: asyncio.Task[None] | None = None
        try:
            while not self.stopping:
                try:
                    records = await self.consumer.getmany(
                        timeout_ms=timeout_ms, max_records=self.settings.batch_max_records
                    )
                except KafkaError as exc:
                    if not exc.retriable:
                        raise
                    logger.warning("%s: fetch failed, retrying: %r", self.role, exc)
                    await self.sleep(1.0)
                    continue
                prepared = self._prepare(records) if records else None
                if inflight is not None:
                    await inflight
                    inflight = None
                if prepared is not None and not self.stopping:
                    inflight = asyncio.create_task(self._run(prepared))
                elif prepared is None:
                    await self.on_idle()
                await self._update_lag()
        finally:
            if inflight is not None:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    inflight.cancel()  # the drain timed out: abandon the batch, uncommitted
                await asyncio.gather(inflight, return_exceptions=True)

    # --- one batch ----------------------------------------------------------------

    def _prepare(self, records: Mapping[TopicPartition, list[Any]]) -> Prepared:
        # Called as soon as getmany() returns, with no await in between (see prepare()).
        return prepare(records, self.decoders, self._offsets, time.perf_counter())

    async def _run(self, prepared: Prepared) -> None:
        async with self._batch_lock:
            done = await self._apply_batch(prepared)
            if done is None:
                return
            await self._commit()
            self.processed += done.size
            took = time.perf_counter() - prepared.started
            self._observe(done.result, done.size, done.partitions, took)
        await self.after_batch()

    async def _commit(self, partitions: Collection[TopicPartition] | None = None) -> None:
        if self.consumer is None:
            return
        assigned = set(self.consumer.assignment())  # a copy: aiokafka returns its own
        if partitions is not None:
            assigned.intersection_update(partitions)
        offsets = self._offsets.to_commit(assigned)
        if not offsets:
            return
        try:
            async with asyncio.timeout(max(1.0, self.settings.kafka_send_timeout * 2)):
                await self.consumer.commit(offsets)
        except CommitFailedError as exc:
            metrics.COMMIT_FAILURES.labels(self.role).inc()
            logger.info(
                "%s: offset commit refused after a rebalance (%s); redelivered events "
                "will be deduplicated",
                self.role,
                exc,
            )
        except (KafkaError, TimeoutError) as exc:
            metrics.COMMIT_FAILURES.labels(self.role).inc()
            logger.warning(
                "%s: offset commit failed, will retry with the next batch: %r", self.role, exc
            )
        else:
            self._offsets.committed(offsets)

    def _observe(self, result: Applied, size: int, partitions: int, took: float) -> None:
        role = self.role
        for outcome, counts in (
            ("applied", result.applied),
            ("duplicate", result.duplicate),
            ("invalid", result.invalid),
        ):
            for topic, count in counts.items():
                if count:
                    metrics.EVENTS.labels(role, topic, outcome).inc(count)
        metrics.BATCH_RECORDS.labels(role).observe(size)
        metrics.BATCH_DURATION.labels(role).observe(took)
        logger.debug(
            "%s batch records=%d applied=%d duplicate=%d invalid=%d partitions=%d took=%.1fms",
            role,
            size,
            result.applied.total(),
            result.duplicate.total(),
            result.invalid.total(),
            partitions,
            took * 1000,
        )

    # --- rebalances and lag -------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # A new generation first: a batch fetched before the revoke is never applied (a
        # partition given back to this worker starts again from its committed offset).
        self._offsets.rebalanced()
        if not revoked:
            return
        self._revoking = True
        self._wakeup.set()
        try:
            async with self._batch_lock:
                await self._commit(revoked)
        finally:
            self._revoking = False
            if not self.stopping:
                self._wakeup.clear()
        for tp in revoked:
            self._forget(tp)
        metrics.REBALANCES.labels(self.role, "revoked").inc()
        logger.info("%s partitions revoked: %s", self.role, _describe(revoked))

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._offsets.rebalanced(assigned)
        metrics.REBALANCES.labels(self.role, "assigned").inc()
        logger.info("%s partitions assigned: %s", self.role, _describe(assigned))
        if assigned:
            self.assigned.set()

    def _forget(self, tp: TopicPartition) -> None:
        self._offsets.forget(tp)
        try:
            metrics.LAG.remove(self.role, tp.topic, str(tp.partition))
        except KeyError:
            pass

    async def _update_lag(self) -> None:
        now = time.monotonic()
        if self.consumer is None or now - self._lag_at < _LAG_INTERVAL:
            return
        self._lag_at = now
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                async with asyncio.timeout(0.1):
                    position = await self.consumer.position(tp)
            except (TimeoutError, KafkaError):
                continue
            metrics.LAG.labels(self.role, tp.topic, str(tp.partition)).set(
                max(0, highwater - position)
            )
