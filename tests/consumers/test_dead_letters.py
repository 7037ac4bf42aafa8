"""Records a worker cannot use go to the dead-letter topic, never dropped silently
(issue #10, defect 4, the worker half)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from aiokafka.errors import KafkaConnectionError

from smsrx.codec import encode
from smsrx.kafka import make_producer
from smsrx.statuses import Status
from tests.consumers.conftest import T0, feed_raw, receipt, sample, wait_for
from tests.consumers.kafka_state import committed_offsets, end_offsets
from tests.helpers import read_topic


def _dead_letters(topic: str) -> float:
    return sample("smsrx_consumer_dead_letters_total", worker="status-projection", topic=topic)


async def test_undecodable_and_refused_records_are_dead_lettered(settings, runner, db) -> None:
    """A record that is not JSON and a receipt PostgreSQL refuses (a NUL character in a
    stored text) are published to the dead-letter topic with the reason, their original
    key and bytes, topic, partition and offset; the receipts around them are applied and
    the offsets committed to the end."""
    topics = settings.topics
    good = [receipt(f"ok-{i}", "+2250700000001", Status.SENT, T0) for i in range(20)]
    poison = receipt("bad-1", "+2250700000001", Status.SENT, T0, provider_status="nul\x00byte")
    garbage = (b"garbage-key", b"not json \xff")
    records = [(r.key, encode(r)) for r in good[:10]]
    records += [garbage, (poison.key, encode(poison))]
    records += [(r.key, encode(r)) for r in good[10:]]
    before = _dead_letters(topics.delivery_receipts)
    await feed_raw(settings, topics.delivery_receipts, records)
    worker = runner.start(runner.projection(expiry_sweep=False))
    await runner.drain(worker, records=len(records))
    await runner.stop(worker)

    assert await db.fetchval("SELECT count(*) FROM status_events") == 20
    originals = {
        bytes(r.value): r
        for r in await read_topic(settings.kafka_bootstrap, topics.delivery_receipts)
    }
    published = await read_topic(settings.kafka_bootstrap, topics.dead_letter)
    letters: dict[bytes, tuple[Any, dict[str, Any]]] = {}
    for record in published:
        letter = orjson.loads(record.value)
        letters[base64.b64decode(letter["value_base64"])] = (record, letter)
    assert set(letters) == {garbage[1], encode(poison)}
    for value, (record, letter) in letters.items():
        original = originals[value]
        assert bytes(record.key) == bytes(original.key)
        assert letter["source"] == "status-projection"
        assert letter["topic"] == topics.delivery_receipts
        assert (letter["partition"], letter["offset"]) == (original.partition, original.offset)
        assert letter["key"] == bytes(original.key).decode()
    not_json, refused = letters[garbage[1]][1], letters[encode(poison)][1]
    assert not_json["reason"].startswith("not JSON")
    assert not_json["value_text"] is None  # not UTF-8: only in base64
    assert refused["reason"].startswith("refused by the database: UntranslatableCharacterError")
    assert "\\u0000 cannot be converted to text" in refused["reason"]
    assert "\n" not in not_json["reason"] + refused["reason"]
    assert _dead_letters(topics.delivery_receipts) - before == 2
    assert await committed_offsets(
        settings, worker.group_id, topics.delivery_receipts
    ) == await end_offsets(settings, topics.delivery_receipts)


class FlakyProducer:
    """A real producer whose sends fail, as if the broker were unreachable, until healed."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.down = True
        self.failures = 0

    async def partitions_for(self, topic: str) -> Any:
        if self.down:
            self.failures += 1
            raise KafkaConnectionError("cut by the test")
        return await self.producer.partitions_for(topic)

    def create_batch(self) -> Any:
        return self.producer.create_batch()

    async def send_batch(self, *args: Any, **kwargs: Any) -> Any:
        return await self.producer.send_batch(*args, **kwargs)

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()


async def test_no_offset_is_committed_past_a_dead_letter_not_yet_published(
    settings, runner, db
) -> None:
    """While the dead-letter topic cannot be written, the partition of the bad record is
    not committed past it (the worker retries); once it can, the dead letter is published
    once and the offsets are committed to the end."""
    topics = settings.topics
    good = [receipt(f"ok-{i}", "+2250700000001", Status.SENT, T0) for i in range(6)]
    records = [(r.key, encode(r)) for r in good[:3]]
    records += [(b"bad", b"{not json")]
    records += [(r.key, encode(r)) for r in good[3:]]
    await feed_raw(settings, topics.delivery_receipts, records)
    bad = next(
        r
        for r in await read_topic(settings.kafka_bootstrap, topics.delivery_receipts)
        if r.key == b"bad"
    )

    flaky = FlakyProducer(make_producer(settings))
    worker = runner.projection(expiry_sweep=False)
    worker.dead_letter_producer = flaky
    runner.start(worker)
    await wait_for(lambda: flaky.failures >= 3, "the dead letter to be retried")
    committed = await committed_offsets(settings, worker.group_id, topics.delivery_receipts)
    assert committed.get(bad.partition, 0) <= bad.offset
    assert await read_topic(settings.kafka_bootstrap, topics.dead_letter) == []

    flaky.down = False
    await runner.drain(worker, records=len(records))
    await runner.stop(worker)
    letters = [
        orjson.loads(r.value)
        for r in await read_topic(settings.kafka_bootstrap, topics.dead_letter)
    ]
    assert [(letter["offset"], letter["key"]) for letter in letters] == [(bad.offset, "bad")]
    assert await db.fetchval("SELECT count(*) FROM status_events") == 6
    assert await committed_offsets(
        settings, worker.group_id, topics.delivery_receipts
    ) == await end_offsets(settings, topics.delivery_receipts)
