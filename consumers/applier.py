"""Applying a fetched batch to PostgreSQL: the half of a worker that does not drive Kafka.

:class:`Applier` is the base of :class:`~consumers.worker.Worker`, which fetches, commits
and handles stops and rebalances. For one batch, :meth:`Applier._apply_batch`:

1. admits each partition's part through :mod:`consumers.offsets`, seeking back a
   partition whose part does not follow its last applied records;
2. splits the parts into ``lanes`` (:func:`~consumers.batches.split_lanes`) and applies
   each lane in one transaction, concurrently; a lane that PostgreSQL refuses for its
   data is halved around the bad record (:mod:`consumers.isolation`);
3. publishes the dead letters (records that did not decode or were refused);
4. records the applied offsets, which the worker then commits.

While PostgreSQL or the dead-letter topic is down, the same lane is retried with backoff
(:mod:`smsrx.backoff`); a stop or a revoke abandons it uncommitted, and its partitions
are sought back so that it is fetched again.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from consumers import metrics
from consumers.batches import Applied, Batch, Part, Prepared, Rejected, batch_of, split_lanes
from consumers.errors import (
    BrokerUnavailable,
    DatabaseUnavailable,
    RecordRejected,
    is_data_error,
    is_transient,
)
from consumers.isolation import isolate
from consumers.offsets import GAP_TRIES, Offsets
from smsrx.backoff import delays
from smsrx.deadletter import encode_dead_letter
from smsrx.privacy import Masked
from smsrx.produce import produce_all
from smsrx.settings import Settings

__all__ = ["Applier", "Done"]

logger = logging.getLogger(__name__)

_BACKOFF_FIRST = 0.2
_BACKOFF_MAX = 10.0
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Done:
    """A batch applied, its dead letters published and its offsets recorded."""

    result: Applied
    """What its transactions did, the records that did not decode counted invalid."""
    size: int
    """Records applied, those set aside as dead letters included."""
    partitions: int
    """Partitions it held."""


class Applier(abc.ABC):
    """Applies each fetched batch in one database transaction per lane."""

    role: ClassVar[str]
    """Process role, used in logs and the ``worker`` metrics label."""
    lanes: ClassVar[int] = 1
    """Concurrent transactions per batch. With more than one, a batch is split by
    partition number (records of one message share it on every topic, keyed alike), so
    the transactions touch disjoint rows and PostgreSQL works on them in parallel."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self.consumer: AIOKafkaConsumer | None = None
        """The worker's consumer, once made; abandoned and refused parts seek it back."""
        self.dead_letter_producer: AIOKafkaProducer | None = None
        """Publishes dead letters; made on start unless one is given."""
        self._offsets = Offsets()
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._revoking = False

    @abc.abstractmethod
    async def apply(self, conn: asyncpg.Connection, batch: Batch) -> Applied:
        """Apply a batch inside the open transaction on ``conn``; must be idempotent."""

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stopping.is_set()

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up early on a stop or a revoke."""
        try:
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        except TimeoutError:
            pass

    async def retry(self, what: str, attempt: Callable[[], Awaitable[Any]]) -> bool:
        """Run ``attempt`` until it succeeds (True) or a stop is requested (False)."""
        backoff = delays(_BACKOFF_FIRST, _BACKOFF_MAX)
        while not self.stopping:
            try:
                await attempt()
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, KafkaError):
                    raise
                delay = next(backoff)
                logger.warning(
                    "%s: %s unavailable, retrying in %.1fs: %r", self.role, what, delay, exc
                )
                await self.sleep(delay)
            else:
                return True
        return False

    async def _apply_batch(self, prepared: Prepared) -> Done | None:
        """Apply what may be applied of ``prepared`` and record its offsets; None when
        nothing was (stale, or abandoned uncommitted)."""
        parts = self._admit(prepared)
        if not parts:
            return None
        lanes = split_lanes(parts, self.lanes)
        batches = [batch_of(lane, index) for index, lane in enumerate(lanes)]
        if len(batches) == 1:
            results = [await self._apply_with_retry(batches[0])]
        else:
            results = list(await asyncio.gather(*map(self._apply_with_retry, batches)))
        done: dict[TopicPartition, Part] = {}
        merged = Applied()
        for lane, result in zip(lanes, results, strict=True):
            if result is None:  # abandoned uncommitted: fetched again if still ours
                self._abandon(lane)
                continue
            done.update(lane)
            merged.merge(result)
        if not done:
            return None
        for callback in merged.on_commit:
            callback()
        rejected = [r for part in done.values() for r in part.rejected] + merged.rejected
        if rejected and not await self._dead_letter(rejected):
            self._abandon(done)  # applied, but not committed past an unsent dead letter
            return None
        size = 0
        for tp, part in done.items():
            merged.invalid[tp.topic] += len(part.rejected)
            size += part.size
            self._offsets.applied(tp, part.span)
        return Done(merged, size, len(done))

    def _admit(self, prepared: Prepared) -> dict[TopicPartition, Part]:
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

    def _abandon(self, parts: Mapping[TopicPartition, Part]) -> None:
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
            "database or broker",
            len(batch),
            lambda: isolate(batch, self._transaction),
            (DatabaseUnavailable, BrokerUnavailable),
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
        backoff = delays(_BACKOFF_FIRST, _BACKOFF_MAX)
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
                delay = next(backoff)
                logger.warning(
                    "%s: %s unavailable, retrying batch of %d in %.1fs: %s",
                    self.role,
                    what,
                    size,
                    delay,
                    exc.__cause__ or exc,
                )
                await self.sleep(delay)

    async def _transaction(self, batch: Batch) -> Applied:
        """Apply ``batch`` in one transaction; a failure comes out as
        :class:`DatabaseUnavailable` (retry it) or :class:`RecordRejected` (halve it)."""
        assert self.pool is not None
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                return await self.apply(conn, batch)
        except (BrokerUnavailable, RecordRejected):
            raise
        except Exception as exc:
            if is_transient(exc):
                metrics.DATABASE_ERRORS.labels(self.role, "transient").inc()
                raise DatabaseUnavailable(str(exc)) from exc
            if is_data_error(exc):
                metrics.DATABASE_ERRORS.labels(self.role, "data").inc()
                raise RecordRejected(str(exc)) from exc
            raise

    async def _dead_letter(self, rejected: list[Rejected]) -> bool:
        """Publish ``rejected`` to the dead-letter topic; False if a stop or a revoke came
        first while it could not be written."""
        assert self.dead_letter_producer is not None
        producer = self.dead_letter_producer
        topic = self.settings.topics.dead_letter
        records = [
            (topic, r.record.key or b"", encode_dead_letter(r.letter(self.role))) for r in rejected
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
                Masked(r.reason),
            )
        return True
