"""A worker never records an offset past records it did not apply (issue #10, defect 2).

These tests drive one worker's batch pipeline by hand, in a chosen order: the Kafka
consumer is a stub that records seeks and commits (a deterministic test of the offset
bookkeeping), PostgreSQL is the real one, behind a proxy that is cut to make it
unavailable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from consumers.analytics import Analytics
from smsrx.codec import encode
from smsrx.db import create_pool
from smsrx.settings import Settings
from smsrx.statuses import Status
from tests.consumers.conftest import T0, receipt, sample, wait_for
from tests.consumers.proxy import Proxy


class StubConsumer:
    """Stands in for ``AIOKafkaConsumer``: a fixed assignment; seeks and commits recorded.

    Like aiokafka during a rebalance, ``assignment()`` keeps returning the partitions
    until the test changes them.
    """

    def __init__(self, partitions: Collection[TopicPartition]) -> None:
        self.partitions = set(partitions)
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def committed(self, tp: TopicPartition) -> int | None:
        return next((c[tp] for c in reversed(self.commits) if tp in c), None)


def fetched(tp: TopicPartition, first: int, count: int) -> dict[TopicPartition, list[Any]]:
    """What ``getmany`` returns: ``count`` receipts at offsets ``first``, ``first + 1``..."""
    records = []
    for offset in range(first, first + count):
        event = receipt(f"off-{offset}", "+2250700000001", Status.SENT, T0)
        records.append(
            ConsumerRecord(
                tp.topic, tp.partition, offset, 0, 0, event.key, encode(event), None, 0, 0, ()
            )
        )
    return {tp: records}


@pytest.fixture
async def outage(settings: Settings) -> AsyncIterator[tuple[Proxy, Analytics, StubConsumer]]:
    """An analytics worker (never started) on a stub consumer that owns one partition, with
    a pool on the real database behind a proxy."""
    proxy, behind = Proxy.before(settings)
    await proxy.restore()
    worker = Analytics(behind, handle_signals=False)
    worker.pool = await create_pool(behind.database_url, min_size=1, max_size=4)
    tp = TopicPartition(settings.topics.delivery_receipts, 0)
    consumer = StubConsumer({tp})
    worker.consumer = consumer
    try:
        yield proxy, worker, consumer
    finally:
        await proxy.restore()
        await worker.pool.close()
        await proxy.cut()


def _transient() -> float:
    return sample("smsrx_consumer_database_errors_total", worker="analytics", kind="transient")


async def test_batch_prefetched_before_a_rebalance_is_not_committed(outage, db) -> None:
    """Batch 100-199 is abandoned (database down, partition revoked) while 200-299 was
    prefetched; the partition comes back to the same worker: 200-299 is never applied nor
    committed, 100 is sought back, and once both are fetched again, 300 is committed with
    every record applied."""
    proxy, worker, consumer = outage
    (tp,) = consumer.partitions
    worker._on_assigned({tp})
    first = worker._prepare(fetched(tp, 100, 100))
    second = worker._prepare(fetched(tp, 200, 100))  # prefetched while the first is applied

    await proxy.cut()
    errors = _transient()
    running = asyncio.create_task(worker._run(first))
    await wait_for(lambda: _transient() > errors, "the first batch to fail on the database")
    await worker._on_revoked({tp})  # a second member joins: the first batch is abandoned
    await running
    worker._on_assigned({tp})  # ...and the partition is given back to this worker
    await proxy.restore()
    await worker._run(second)

    assert consumer.commits == [], "an offset was committed past records never applied"
    assert await db.fetchval("SELECT count(*) FROM analytics_processed_events") == 0
    assert (tp, 100) in consumer.seeks

    # The consumer fetches again from the committed position (100).
    await worker._run(worker._prepare(fetched(tp, 100, 100)))
    await worker._run(worker._prepare(fetched(tp, 200, 100)))
    assert consumer.committed(tp) == 300
    assert await db.fetchval("SELECT count(*) FROM analytics_processed_events") == 200


async def test_a_batch_that_does_not_start_where_the_last_one_ended_is_sought_back(
    outage, db
) -> None:
    """A batch whose first offset is past the next one expected (the batch before it was
    lost) is neither applied nor committed, and the partition is sought back to the
    expected offset."""
    _, worker, consumer = outage
    (tp,) = consumer.partitions
    worker._on_assigned({tp})
    await worker._run(worker._prepare(fetched(tp, 100, 100)))
    assert consumer.committed(tp) == 200
    worker._prepare(fetched(tp, 200, 50))  # never run
    await worker._run(worker._prepare(fetched(tp, 250, 50)))

    assert consumer.committed(tp) == 200
    assert consumer.seeks == [(tp, 200)]
    assert await db.fetchval("SELECT count(*) FROM analytics_processed_events") == 100
