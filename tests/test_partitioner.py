"""smsrx.partitioner (the receiver's records, the workers' status changes) agrees with
aiokafka's partitioner, and so with the Java client's."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner, murmur2

from smsrx.partitioner import murmur2 as fast_murmur2
from smsrx.partitioner import partition_for


def test_murmur2_matches_aiokafka_for_every_length() -> None:
    """Random keys of 0 to 99 bytes hash exactly as aiokafka's murmur2 hashes them."""
    rng = random.Random(20240601)
    for length in range(100):
        for _ in range(50):
            key = rng.randbytes(length)
            assert fast_murmur2(key) == murmur2(key)


def test_partition_for_matches_default_partitioner() -> None:
    """A keyed record goes to the partition producer.send() would pick."""
    rng = random.Random(7)
    for count in (1, 3, 4, 12):
        partitions = list(range(count))
        keys = [f"msg-{rng.getrandbits(64):x}".encode() for _ in range(200)]
        keys.append(b"8f3a2c1e-5b7d-4e9a-a1c3-2d4f6e8b0a9c/+2250700000000")  # a status change's
        for key in keys:
            assert partition_for(key, partitions) == DefaultPartitioner()(
                key, partitions, partitions
            )
