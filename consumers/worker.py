"""The consumer-group worker that status-projection and analytics are built on.

Its shape follows arq's ``Worker`` (``run()``, ``close()``, a drain on SIGTERM bounded
by ``shutdown_timeout``, ``handle_signals=False`` for tests) and aiokafka's
``local_state_consumer`` example. One loop turn:

1. ``getmany()`` a batch (at most ``batch_max_records``);
2. decode it; a record that does not decode is set aside as a dead letter;
3. apply it in **one** database transaction (:meth:`Worker.apply`), where the
   subclass checks event_id uniqueness, so a redelivered event changes nothing;
4. publish the batch's dead letters to ``sms.dead-letter.v1``;
5. only then commit the Kafka offsets;
6. run :meth:`Worker.after_batch` (publishing the outbox, say).

Steps 1-2 of the next batch run while steps 3-5 of the current one wait on the
database, so Python and PostgreSQL work at the same time; batches still run one at a
time, in order. A worker with ``lanes = 2`` (status-projection) splits each batch by
partition number into two transactions that run concurrently: records of one message
share a partition number on every topic, so the two touch disjoint rows. Offsets of a
lane are committed only once its own transaction has.

When partitions are revoked, the rebalance listener waits for the batch in flight
and commits what is done. When PostgreSQL is down, the same batch is retried with
backoff, uncommitted; a revoke or a stop abandons it, and its partitions are sought
back to it so that it is fetched again. :mod:`consumers.offsets` decides which batches
may be applied and committed: never one fetched before a rebalance or a seek, never one
that does not follow the last applied batch of its partition.

A batch that PostgreSQL refuses for its data is split in halves until the record at
fault is found; that record, like one that does not decode, is counted invalid and
published with the reason to the dead-letter topic, before any offset past it is
committed. When the dead letters cannot be published they are retried like a
database outage, the batch's offsets uncommitted.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumers import metrics
from consumers.errors import DatabaseUnavailable, RecordRejected, is_data_error, is_transient
from consumers.offsets import GAP_TRIES, Offsets, Span
from smsrx.codec import DecodeError
from smsrx.db import create_pool
from smsrx.deadletter import DeadLetter, encode_dead_letter
from smsrx.kafka import make_consumer, make_producer, stop_bounded
from smsrx.produce import produce_all
from smsrx.settings import Settings

__all__ = ["Applied", "Batch", "Decoder", "Rejected", "Worker"]

logger = logging.getLogger(__name__)

Decoder = Callable[[bytes], Any]
"""Turns a record value into an event, or raises :class:`~smsrx.codec.DecodeError`."""

_MAX_BACKOFF = 10.0
_LAG_INTERVAL = 1.0
_T = TypeVar("_T")


class Batch:
    """The decoded events of one ``getmany``, as ``(topic, event)`` in consumption order."""

    __slots__ = ("_by_topic", "items", "lane", "records")

    def __init__(
        self, items: list[tuple[str, Any]], lane: int = 0, records: list[Any] | None = None
    ) -> None:
        self.items = items
        self.lane = lane
        """Which of the worker's concurrent transactions this is (0: the first)."""
        self.records = records
        """The raw record of each item, in the same order (for the dead-letter topic)."""
        self._by_topic: dict[str, list[Any]] | None = None

    def of(self, topic: str) -> list[Any]:
        """The events of one topic, in order."""
        if self._by_topic is None:
            self._by_topic = {}
            for name, event in self.items:
                self._by_topic.setdefault(name, []).append(event)
        return self._by_topic.get(topic, [])

    def halves(self) -> tuple[Batch, Batch]:
        """The first and second half, to isolate a record the database refuses."""
        middle = len(self.items) // 2
        records = self.records
        return (
            Batch(self.items[:middle], self.lane, None if records is None else records[:middle]),
            Batch(self.items[middle:], self.lane, None if records is None else records[middle:]),
        )

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the worker cannot use, bound for the dead-letter topic."""

    record: Any
    """The consumer record, as fetched (topic, partition, offset, key, value)."""
    reason: str
    """Why, in one line."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", " ".join(self.reason.split()))


@dataclass(slots=True)
class Applied:
    """What a batch did, by topic; reported once its transaction has committed."""

    applied: Counter[str] = field(default_factory=Counter)
    """Events that changed the database."""
    duplicate: Counter[str] = field(default_factory=Counter)
    """Events already applied before (redelivered or repeated in the batch)."""
    invalid: Counter[str] = field(default_factory=Counter)
    """Records that could not be decoded, or that the database refused."""
    on_commit: list[Callable[[], None]] = field(default_factory=list)
    """Run once the transaction committed (metrics, staging the outbox)."""
    rejected: list[Rejected] = field(default_factory=list)
    """Records the database refused, for the dead-letter topic."""

    def merge(self, other: Applied) -> Applied:
        """Add ``other`` into this one and return it."""
        self.applied.update(other.applied)
        self.duplicate.update(other.duplicate)
        self.invalid.update(other.invalid)
        self.on_commit.extend(other.on_commit)
        self.rejected.extend(other.rejected)
        return self


@dataclass(slots=True)
class _Part:
    """The records of one partition in a batch."""

    size: int
    span: Span
    items: list[tuple[str, Any]] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)
    """The raw record of each item."""
    rejected: list[Rejected] = field(default_factory=list)
    """Records that did not decode."""


@dataclass(slots=True)
class _Prepared:
    """A fetched and decoded batch, waiting for its transaction."""

    started: float
    parts: dict[TopicPartition, _Part] = field(default_factory=dict)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self.worker._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        self.worker._on_assigned(set(assigned))


def _describe(partitions: Collection[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "-"


def _batch(parts: Mapping[TopicPartition, _Part], lane: int) -> Batch:
    return Batch(
        [item for part in parts.values() for item in part.items],
        lane,
        [record for part in parts.values() for record in part.records],
    )


class Worker(abc.ABC):
    """A consumer-group member that applies each batch in one database transaction."""

    role: ClassVar[str]
    """Process role, used in logs and the ``worker`` metrics label."""
    group: ClassVar[str]
    """Consumer group, after the deployment's topic prefix."""
    lanes: ClassVar[int] = 1
    """Concurrent transactions per batch. With more than one, a batch is split by
    partition number (records of one message share it on every topic, keyed alike), so
    the transactions touch disjoint rows and PostgreSQL works on them in parallel."""

    def __init__(
        self,
        settings: Settings,
        *,
        handle_signals: bool = True,
        group_id: str | None = None,
        consumer_options: Mapping[str, Any] | None = None,
        poll_timeout: float = 0.5,
    ) -> None:
        self.settings = settings
        self.handle_signals = handle_signals
        self.group_id = group_id or settings.topics.prefix + self.group
        self.consumer_options = dict(consumer_options or {})
        self.poll_timeout = poll_timeout
        self.pool: asyncpg.Pool | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.dead_letter_producer: AIOKafkaProducer | None = None
        """Publishes dead letters; made on start unless one is given."""
        self.processed = 0
        """Records processed (decoded and committed to the database) since start."""
        self.assigned = asyncio.Event()
        """Set once the group gave this worker partitions (tests wait on it)."""
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._batch_lock = asyncio.Lock()
        self._revoking = False
        self._offsets = Offsets()
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[Any] | None = None
        self._closed = False
        self._lag_at = 0.0

    # --- what a worker defines ---------------------------------------------------

    @property
    @abc.abstractmethod
    def decoders(self) -> Mapping[str, Decoder]:
        """The topics to consume, each with the decoder of its records."""

    @abc.abstractmethod
    async def apply(self, conn: asyncpg.Connection, batch: Batch) -> Applied:
        """Apply a batch inside the open transaction on ``conn``; must be idempotent."""

    async def on_start(self) -> None:  # noqa: B027 (an optional hook)
        """Called once the database pool exists, before the consumer joins the group."""

    async def after_batch(self) -> None:  # noqa: B027 (an optional hook)
        """Called after each batch was committed, to the database and to Kafka."""

    async def on_idle(self) -> None:  # noqa: B027 (an optional hook)
        """Called when a poll returned nothing."""

    async def on_stop(self) -> None:  # noqa: B027 (an optional hook)
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

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stopping.is_set()

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

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up early on :meth:`stop` or a revoke."""
        try:
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        except TimeoutError:
            pass

    async def retry(self, what: str, attempt: Callable[[], Awaitable[Any]]) -> bool:
        """Run ``attempt`` until it succeeds (True) or a stop is requested (False)."""
        delay = 0.2
        while not self.stopping:
            try:
                await attempt()
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, KafkaError):
                    raise
                logger.warning(
                    "%s: %s unavailable, retrying in %.1fs: %r", self.role, what, delay, exc
                )
                await self.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
            else:
                return True
        return False

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

    def _prepare(self, records: Mapping[TopicPartition, list[Any]]) -> _Prepared:
        # Called as soon as getmany() returns, with no await in between: the bookkeeping
        # must see each fetch in the generation and epoch it was made in.
        prepared = _Prepared(started=time.perf_counter())
        for tp, batch in records.items():
            if not batch:
                continue
            decode = self.decoders[tp.topic]
            span = self._offsets.fetched(tp, batch[0].offset, batch[-1].offset + 1)
            part = _Part(len(batch), span)
            for record in batch:
                try:
                    if record.value is None:
                        raise DecodeError("record has no value")  # noqa: TRY301
                    part.items.append((tp.topic, decode(record.value)))
                except DecodeError as exc:
                    part.rejected.append(Rejected(record, str(exc)))
                else:
                    part.records.append(record)
            prepared.parts[tp] = part
        return prepared

    async def _run(self, prepared: _Prepared) -> None:
        async with self._batch_lock:
            parts = self._admit(prepared)
            if not parts:
                return
            lanes: dict[int, dict[TopicPartition, _Part]] = {}
            for tp, part in parts.items():
                lanes.setdefault(tp.partition % self.lanes, {})[tp] = part
            batches = [_batch(lane, index) for index, lane in enumerate(lanes.values())]
            if len(batches) == 1:
                results = [await self._apply_with_retry(batches[0])]
            else:
                results = list(await asyncio.gather(*map(self._apply_with_retry, batches)))
            done: dict[TopicPartition, _Part] = {}
            merged = Applied()
            for lane, result in zip(lanes.values(), results, strict=True):
                if result is None:  # abandoned uncommitted: fetched again if still ours
                    self._abandon(lane)
                    continue
                done.update(lane)
                merged.merge(result)
            if not done:
                return
            for callback in merged.on_commit:
                callback()
            rejected = [r for part in done.values() for r in part.rejected] + merged.rejected
            if rejected and not await self._dead_letter(rejected):
                self._abandon(done)  # applied, but not committed past an unsent dead letter
                return
            size = 0
            for tp, part in done.items():
                merged.invalid[tp.topic] += len(part.rejected)
                size += part.size
                self._offsets.applied(tp, part.span)
            await self._commit()
            self.processed += size
            self._observe(merged, size, len(done), time.perf_counter() - prepared.started)
        await self.after_batch()

    def _admit(self, prepared: _Prepared) -> dict[TopicPartition, _Part]:
        """The parts that may be applied: fetched in this generation and epoch, each
        following the last applied records of its partition."""
        parts = {}
        stale = 0
        for tp, part in prepared.parts.items():
            admission = self._offsets.admit(tp, part.span)
            stale += 0 if admission.apply or admission.seek is not None else part.size
            if admission.seek is not None:
                logger.info(
                    "%s: batch at %s[%d] offset %d does not follow offset %d; fetching again",
                    self.role,
                    tp.topic,
                    tp.partition,
                    part.span.first,
                    admission.seek,
                )
                self._seek(tp, admission.seek)
            if admission.skipped is not None:
                logger.warning(
                    "%s: offsets %d-%d of %s[%d] returned no record in %d fetches: passed as "
                    "offsets without records (transaction markers or compaction)",
                    self.role,
                    admission.skipped[0],
                    admission.skipped[1] - 1,
                    tp.topic,
                    tp.partition,
                    GAP_TRIES + 1,
                )
            if admission.apply:
                parts[tp] = part
        if stale:
            logger.info(
                "%s: %d records fetched before a rebalance or a seek dropped; fetched again",
                self.role,
                stale,
            )
        return parts

    def _abandon(self, parts: Mapping[TopicPartition, _Part]) -> None:
        """Seek back to records that were not applied, so that they are fetched again."""
        for tp, part in parts.items():
            self._seek(tp, self._offsets.abandoned(tp, part.span))

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        if self.consumer is None or tp not in self.consumer.assignment():
            return  # no longer ours: its next owner starts from the committed offset
        try:
            self.consumer.seek(tp, offset)
        except IllegalStateError:
            pass  # unassigned meanwhile

    async def _apply_with_retry(self, batch: Batch) -> Applied | None:
        return await self._until_done(
            "database", len(batch), lambda: self._apply_isolating(batch), DatabaseUnavailable
        )

    async def _until_done(
        self,
        what: str,
        size: int,
        attempt: Callable[[], Awaitable[_T]],
        transient: type[BaseException] | tuple[type[BaseException], ...],
    ) -> _T | None:
        """Retry a batch's ``attempt`` with backoff; None once a stop or a revoke abandons
        it (its records are then redelivered)."""
        delay = 0.2
        while True:
            try:
                return await attempt()
            except transient as exc:
                if self.stopping or self._revoking:
                    logger.warning(
                        "%s: batch of %d abandoned uncommitted (%s unavailable, %s); "
                        "it will be redelivered",
                        self.role,
                        size,
                        what,
                        "revoked" if self._revoking else "stopping",
                    )
                    return None
                logger.warning(
                    "%s: %s unavailable, retrying batch of %d in %.1fs: %s",
                    self.role,
                    what,
                    size,
                    delay,
                    exc.__cause__ or exc,
                )
                await self.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)

    async def _apply_isolating(self, batch: Batch) -> Applied:
        try:
            return await self._transaction(batch)
        except RecordRejected as exc:
            rejected = exc
        metrics.DATABASE_ERRORS.labels(self.role, "data").inc()
        if len(batch) > 1:
            first, second = batch.halves()
            result = await self._apply_isolating(first)
            return result.merge(await self._apply_isolating(second))
        assert batch.records is not None  # every batch the worker builds carries them
        cause = rejected.__cause__ or rejected
        reason = f"refused by the database: {type(cause).__name__}: "
        reason += getattr(cause, "message", None) or str(cause)
        if detail := getattr(cause, "detail", None):
            reason += f" ({detail})"
        return Applied(
            invalid=Counter({batch.items[0][0]: 1}),
            rejected=[Rejected(batch.records[0], reason)],
        )

    async def _transaction(self, batch: Batch) -> Applied:
        assert self.pool is not None
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                return await self.apply(conn, batch)
        except Exception as exc:
            if is_transient(exc):
                metrics.DATABASE_ERRORS.labels(self.role, "transient").inc()
                raise DatabaseUnavailable(str(exc)) from exc
            if is_data_error(exc):
                raise RecordRejected(str(exc)) from exc
            raise

    async def _dead_letter(self, rejected: list[Rejected]) -> bool:
        """Publish ``rejected`` to the dead-letter topic; False if a stop or a revoke came
        first while it could not be written."""
        assert self.dead_letter_producer is not None
        producer = self.dead_letter_producer
        topic = self.settings.topics.dead_letter
        records = [
            (topic, r.record.key or b"", encode_dead_letter(self._letter(r))) for r in rejected
        ]

        async def publish() -> bool:
            async with asyncio.timeout(max(1.0, self.settings.kafka_send_timeout * 2)):
                await produce_all(producer, records)
            return True

        if not await self._until_done(
            "dead-letter topic", len(records), publish, (KafkaError, TimeoutError)
        ):
            return False
        for r in rejected:
            record = r.record
            metrics.DEAD_LETTERS.labels(self.role, record.topic).inc()
            logger.error(
                "%s: dead letter topic=%s partition=%d offset=%d: %s",
                self.role,
                record.topic,
                record.partition,
                record.offset,
                r.reason,
            )
        return True

    def _letter(self, rejected: Rejected) -> DeadLetter:
        record = rejected.record
        return DeadLetter(
            source=self.role,
            reason=rejected.reason,
            topic=record.topic,
            key=record.key,
            value=record.value,
            partition=record.partition,
            offset=record.offset,
        )

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
