"""Kafka helpers of the benchmarks: fast pre-filling, committed offsets and high watermarks.

Offsets are read the way that works against the development broker: committed
offsets through a group member's ``committed()``, and high watermarks from fetch
responses. (Tansu 0.6 answers ListOffsets(latest) with the base offset of the last
*batch* plus one, so ``end_offsets()`` and ``seek_to_end()`` undercount there.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from smsrx.kafka import make_producer
from smsrx.produce import produce_all
from smsrx.settings import Settings

__all__ = ["Offsets", "highwaters", "prefill"]


async def prefill(settings: Settings, topic: str, records: Sequence[tuple[bytes, bytes]]) -> float:
    """Produce (key, value) records with the batch API, keyed as the receiver keys them
    (smsrx's one produce path, :func:`smsrx.produce.produce_all`).

    Returns the rate in records per second.
    """
    producer = make_producer(settings)
    await producer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await produce_all(producer, [(topic, k, v) for k, v in records])
    finally:
        await producer.stop()
    return len(records) / (loop.time() - started)


async def highwaters(bootstrap: str, topic: str, limit: float = 10.0) -> dict[int, int]:
    """The high watermark of each partition of ``topic`` (its record count here)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            await consumer.topics()
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = asyncio.get_running_loop().time() + limit
        while True:
            marks = {tp.partition: consumer.highwater(tp) for tp in tps}
            if all(mark is not None for mark in marks.values()):
                return {p: int(mark or 0) for p, mark in marks.items()}
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no high watermark for {topic}: {marks}")
            await consumer.getmany(timeout_ms=200, max_records=1)
    finally:
        await consumer.stop()


class Offsets:
    """Committed offsets of one consumer group, read without joining the group."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self._consumer: AIOKafkaConsumer | None = None

    async def committed(self, topic: str, partitions: Sequence[int]) -> int:
        """The sum of the group's committed offsets over ``partitions`` (0 where none)."""
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False
            )
            await self._consumer.start()
        total = 0
        for partition in partitions:
            offset = await self._consumer.committed(TopicPartition(topic, partition))
            total += offset or 0
        return total

    async def close(self) -> None:
        """Stop the reader."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
