"""Which partition a keyed record goes to: Kafka's default partitioner, computed fast.

The result is exactly what the Java client and aiokafka's ``DefaultPartitioner`` give
(``murmur2(key) & 0x7fffffff`` modulo the partition count), so a message's records land
on the same partition whichever client produced them. Reading the key as little-endian
words with ``struct`` is several times cheaper than aiokafka's pure-Python murmur2, which
matters once per callback (figures: bench/README.md, "Costs the code relies on").
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = ["murmur2", "partition_for"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 of ``data`` as Kafka computes it (an unsigned 32-bit integer)."""
    length = len(data)
    h = _SEED ^ length
    words = length >> 2
    if words:
        for k in struct.unpack_from(f"<{words}I", data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            k = (k * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    base = length & ~3
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail:
        h = ((h ^ data[base]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of a keyed record, among ``partitions`` in the producer's order."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
