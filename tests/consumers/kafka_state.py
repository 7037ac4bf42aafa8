"""What the broker holds for a consumer group: its committed offsets and the topic's end."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from smsrx.settings import Settings
from tests.helpers import read_topic


async def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The offsets the group committed on ``topic``, by partition (absent: none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        offsets = await admin.list_consumer_group_offsets(group, partitions=partitions)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """One past the last record of each partition of ``topic`` that has records.

    Read from the records themselves: the development broker answers ListOffsets with
    the last batch's base offset + 1, not the high watermark.
    """
    ends: dict[int, int] = {}
    for record in await read_topic(settings.kafka_bootstrap, topic):
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends
