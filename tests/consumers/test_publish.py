"""Publishing helpers: the partition of a key is Kafka's."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from smsrx.partitioner import murmur2, partition_for


def test_murmur2_is_kafkas() -> None:
    """The fast murmur2 equals aiokafka's for keys of every length, so status changes land
    on the partition any Kafka client computes for their key."""
    rng = random.Random(4)
    keys = [bytes(rng.randrange(256) for _ in range(n % 90)) for n in range(3000)]
    keys.append(b"8f3a2c1e-5b7d-4e9a-a1c3-2d4f6e8b0a9c/+2250700000000")
    partitioner = DefaultPartitioner()
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key)
        for count in (1, 4, 12):
            partitions = list(range(count))
            assert partition_for(key, partitions) == partitioner(key, partitions, partitions)
