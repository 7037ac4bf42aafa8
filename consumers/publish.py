"""Publishing many records of one topic at once, through the one produce path.

A thin shape over :func:`smsrx.produce.produce_all` for the workers, which publish
to one topic at a time (the outbox, the expiry sweep, dead letters).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from smsrx.produce import produce_all

__all__ = ["publish_many"]


async def publish_many(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
) -> None:
    """Publish ``(key, value)`` records and wait until the broker acknowledged all of them.

    Raises the first failure (a ``KafkaError``); some records may then have been
    published and others not. Bound it with ``asyncio.timeout()``.
    """
    await produce_all(producer, [(topic, key, value) for key, value in records])
