"""The real services the suite runs against, and the migration runner."""

from __future__ import annotations

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from smsrx.db import migrate, migrations


async def test_migrate_twice_is_harmless(database_url: str) -> None:
    """A second migrate applies nothing and every migration is recorded once."""
    assert await migrate(database_url) == []
    conn = await asyncpg.connect(database_url)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    finally:
        await conn.close()
    assert sorted(versions) == [m.version for m in migrations()]


async def test_broker_round_trip(settings) -> None:
    """The development broker takes a record with acks=all and gives it back."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.delivery_receipts, b"v", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        settings.topics.delivery_receipts,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()
    values = [r.value for records in batch.values() for r in records]
    assert values == [b"v"]
