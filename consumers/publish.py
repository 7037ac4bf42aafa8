"""Publishing many records at once, in per-partition batches.

``producer.send()`` costs tens of microseconds of Python per record; building one
batch per partition with ``create_batch()`` and ``send_batch()`` costs a fraction of
that. Records land on the partition Kafka's default partitioner picks for their key
(murmur2, as ``send(key=...)`` and the Java client do), so per-key order is kept and
other clients agree on the partition of a key.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

__all__ = ["murmur2", "partition_for", "publish_many"]

_M = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash, bit for bit as ``aiokafka.partitioner.murmur2`` computes it,
    about twice as fast (whole 32-bit words instead of bytes)."""
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * _M) & 0xFFFFFFFF
        h = ((h * _M) & 0xFFFFFFFF) ^ k
    extra = length & 3
    if extra:
        if extra == 3:
            h ^= data[-1] << 16
        if extra >= 2:
            h ^= data[(words << 2) + 1] << 8
        h ^= data[words << 2]
        h = (h * _M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)


def partition_for(key: bytes, partitions: Sequence[int]) -> int:
    """The partition Kafka's default partitioner gives ``key`` (``partitions`` sorted)."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


async def publish_many(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
) -> None:
    """Publish ``(key, value)`` records and wait until the broker acknowledged all of them.

    Raises the producer's ``KafkaError`` when any batch fails; some records may then
    have been published and others not. Bound it with ``asyncio.timeout()``.
    """
    if not records:
        return
    partitions = sorted(await producer.partitions_for(topic))
    builders: dict[int, Any] = {}
    futures: list[asyncio.Future[Any]] = []
    for key, value in records:
        partition = partition_for(key, partitions)
        builder = builders.get(partition)
        if builder is None:
            builder = builders[partition] = producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:
            futures.append(await producer.send_batch(builder, topic, partition=partition))
            builder = builders[partition] = producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"record of {len(value)} bytes does not fit in a batch")
    for partition, builder in builders.items():
        if builder.record_count():
            futures.append(await producer.send_batch(builder, topic, partition=partition))
    await asyncio.gather(*futures)
