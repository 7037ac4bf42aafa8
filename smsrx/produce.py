"""The one way smsrx produces records: per-partition batches, acknowledged together.

``producer.send()`` costs tens of microseconds of Python per record; building one
batch per partition with ``create_batch()`` and ``send_batch()`` costs a fraction of
that, and fuller batches are also much cheaper for the broker (bench/README.md). A
record goes to the partition Kafka's default partitioner picks for its key over the
topic's partitions in ascending order (:mod:`smsrx.partitioner`), as the Java client
and ``send(key=...)`` do, so every client agrees where a message's records are, and
records of one key stay in order.

The receiver (callbacks and spool replay), status-projection's outbox, the expiry
sweep, the workers' dead letters and the benchmarks all produce through
:func:`produce`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from smsrx.partitioner import partition_for

__all__ = ["REFUSED_FOR_GOOD", "Outcome", "Record", "produce", "produce_all"]

Record = tuple[str, bytes, bytes]
"""(topic, key, value)."""
Outcome = BaseException | None
"""None when the broker acknowledged the record, else why not."""

REFUSED_FOR_GOOD = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidTopicError)
"""Errors about the record itself: sending it again cannot succeed. (aiokafka marks many
more errors not retriable, KafkaTimeoutError among them, so its flag cannot decide.)"""

_MAX_REQUEST_SIZE = 1024 * 1024
"""aiokafka's default ``max_request_size``, should a producer not say its own."""
_RECORD_OVERHEAD = 61
"""A record batch's header: a record alone in a batch costs its bytes plus this."""
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
"""Kafka's rule for topic names. aiokafka does not check it: for another name it waits
for metadata the broker never gives, until the request timeout."""


async def produce(producer: AIOKafkaProducer, records: Sequence[Record]) -> list[Outcome]:
    """Send ``records`` and wait for the broker; one outcome per record, in order.

    Never raises for a record's failure: each outcome says it. Bound the call with
    ``asyncio.timeout()``; the producer's request timeout bounds each request too.
    """
    outcomes: list[Outcome] = [None] * len(records)
    sends: list[_Sent] = []
    for (topic, partition), indices in (await _by_partition(producer, records, outcomes)).items():
        sends += await _send_partition(producer, topic, partition, records, indices, outcomes)
    acks = await asyncio.gather(*(future for _, future in sends), return_exceptions=True)
    for (members, _), ack in zip(sends, acks, strict=True):
        if isinstance(ack, BaseException):
            for index in members:
                outcomes[index] = ack
    return outcomes


_Sent = tuple[list[int], "asyncio.Future[Any]"]


async def _by_partition(
    producer: AIOKafkaProducer, records: Sequence[Record], outcomes: list[Outcome]
) -> dict[tuple[str, int], list[int]]:
    """Record indices by (topic, partition), in order; a topic without partitions fails its records."""
    groups: dict[tuple[str, int], list[int]] = {}
    partitions: dict[str, list[int] | BaseException] = {}
    for index, (topic, key, _) in enumerate(records):
        known = partitions.get(topic)
        if known is None:
            known = partitions[topic] = await _partitions(producer, topic)
        if isinstance(known, BaseException):
            outcomes[index] = known
        else:
            groups.setdefault((topic, partition_for(key, known)), []).append(index)
    return groups


async def _send_partition(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    records: Sequence[Record],
    indices: list[int],
    outcomes: list[Outcome],
) -> list[_Sent]:
    """Send one partition's records in as few batches as fit; a record too large fails alone."""
    sends: list[_Sent] = []
    builder = producer.create_batch()
    members: list[int] = []
    limit: int = getattr(producer, "_max_request_size", _MAX_REQUEST_SIZE)
    for index in indices:
        _, key, value = records[index]
        if len(key) + len(value) + _RECORD_OVERHEAD > limit:  # as send() checks it
            outcomes[index] = MessageSizeTooLargeError(
                f"a record of {len(key) + len(value)} bytes is over the maximum request size"
                f" ({limit})"
            )
            continue
        if builder.append(key=key, value=value, timestamp=None) is not None:
            members.append(index)
            continue
        if members:  # the batch is full: send it, start the next
            sends.append(
                (members, _watched(await producer.send_batch(builder, topic, partition=partition)))
            )
            builder, members = producer.create_batch(), []
            if builder.append(key=key, value=value, timestamp=None) is not None:
                members.append(index)
                continue
        outcomes[index] = MessageSizeTooLargeError(
            f"a record of {len(key) + len(value)} bytes is larger than a whole batch"
        )
    if members:
        sends.append(
            (members, _watched(await producer.send_batch(builder, topic, partition=partition)))
        )
    return sends


def _watched(future: asyncio.Future[Any]) -> asyncio.Future[Any]:
    """Mark the ack's failure as seen even if the caller gave up (timed out) before
    gathering it: asyncio would otherwise log "exception was never retrieved"."""
    future.add_done_callback(_seen)
    return future


def _seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def produce_all(producer: AIOKafkaProducer, records: Sequence[Record]) -> None:
    """:func:`produce`, raising the first failure (some records may then be published)."""
    for outcome in await produce(producer, records):
        if outcome is not None:
            raise outcome


async def _partitions(producer: AIOKafkaProducer, topic: str) -> list[int] | BaseException:
    error: BaseException
    if not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        error = InvalidTopicError(f"{topic!r} is not a legal Kafka topic name")
        return error
    try:
        found: set[int] = await producer.partitions_for(topic)
    except KafkaError as exc:
        error = exc
        return error
    return sorted(found)
