"""Spool replay never stops silently: it retries, shows a stall, and sets refused records aside."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
from prometheus_client import REGISTRY

from receiver.keys import PIPELINE
from receiver.spool import Spool
from smsrx.codec import decode_delivery_receipt, encode
from smsrx.events import DeliveryReceipt
from smsrx.statuses import Status
from tests.helpers import read_topic
from tests.receiver_harness import RunningReceiver, client, running_receiver, url_for


def _receipt(number: int) -> DeliveryReceipt:
    """Receipts of one message (one key, so one partition: the topic keeps their order)."""
    return DeliveryReceipt.create(
        provider="orange",
        message_id="m-replay",
        recipient=f"+225070000{number:04d}",
        status=Status.SENT,
        provider_status="DeliveredToNetwork",
        received_at=datetime.now(UTC),
        raw={},
    )


async def _fill(settings, tls_files, records: list[tuple[str, bytes, bytes]]) -> Path:
    """Leave ``records`` in the spool the receiver appends to, as it would after an outage."""
    async with running_receiver(settings, tls_files) as running:  # where is its spool?
        spool = running.app[PIPELINE].spool
        assert spool is not None
        folder = spool.directory
    spool = Spool(folder, max_bytes=64 << 20)
    spool.open()
    try:
        for topic, key, value in records:
            await spool.append(topic, key, value)
    finally:
        spool.close()
    return folder


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return await check()


def _pending(running: RunningReceiver) -> int:
    spool = running.app[PIPELINE].spool
    assert spool is not None
    return spool.pending


def _stalled() -> float | None:
    return REGISTRY.get_sample_value("smsrx_receiver_spool_replay_stalled")


async def test_replay_retries_a_failed_commit_and_shows_the_stall(settings, tls_files) -> None:
    """A commit that fails stalls replay (readyz 503, gauge 1) without killing it; it then finishes, publishing each record once."""
    events = [_receipt(i) for i in range(5)]
    topic = settings.topics.delivery_receipts
    folder = await _fill(settings, tls_files, [(topic, e.key, encode(e)) for e in events])
    blocker = folder / "checkpoint.tmp"
    blocker.mkdir()  # the checkpoint's temporary file cannot be written: every commit fails
    async with running_receiver(settings, tls_files) as running, client(tls_files) as session:
        readyz = url_for(running, "/readyz", "127.0.0.1")
        seen: list[tuple[int, dict[str, str]]] = []

        async def ready_status(expected: int, words: str) -> bool:
            async with session.get(readyz) as response:
                seen.append((response.status, await response.json()))
            status, body = seen[-1]
            return status == expected and words in body.get("detail", "")

        assert await _eventually(lambda: ready_status(503, "spool replay stalled"), 15), seen[-3:]
        assert "checkpoint.tmp" in seen[-1][1]["detail"]  # the last error, for the operator
        assert _stalled() == 1
        assert _pending(running) == len(events)

        blocker.rmdir()

        async def finished() -> bool:
            return _pending(running) == 0 and _stalled() == 0 and await ready_status(200, "")

        assert await _eventually(finished, 40), (_pending(running), _stalled(), seen[-3:])
    records = await read_topic(settings.kafka_bootstrap, topic, idle=1.0)
    # Only the commit was retried: each record was published once, in the spool's order.
    assert [decode_delivery_receipt(r.value).event_id for r in records] == [
        e.event_id for e in events
    ]


async def test_refused_records_are_set_aside_and_replay_goes_on(settings, tls_files) -> None:
    """A record the broker refuses for good goes to the dead-letter topic (else the quarantine file) with its reason; later records are replayed."""
    events = [_receipt(i) for i in range(4)]
    topic = settings.topics.delivery_receipts
    bad_topic = "no spaces allowed!"  # not a legal Kafka topic name: refused for good
    bad_value = encode(_receipt(90))
    huge = b"h" * (2 << 20)  # over the 1 MiB request size, and too large for a dead letter
    folder = await _fill(
        settings,
        tls_files,
        [
            (topic, events[0].key, encode(events[0])),
            (bad_topic, b"m-bad", bad_value),
            (topic, events[1].key, encode(events[1])),
            (topic, b"m-huge", huge),
            (topic, events[2].key, encode(events[2])),
            (topic, events[3].key, encode(events[3])),
        ],
    )

    def counted(destination: str) -> float:
        name = "smsrx_receiver_spool_dead_lettered_events_total"
        return REGISTRY.get_sample_value(name, {"destination": destination}) or 0.0

    before = counted("dead_letter"), counted("quarantine")
    async with running_receiver(settings, tls_files) as running:

        async def drained() -> bool:
            return _pending(running) == 0

        assert await _eventually(drained, 30), f"spool still holds {_pending(running)} records"
        assert _stalled() == 0

    records = await read_topic(settings.kafka_bootstrap, topic, idle=1.0)
    assert [decode_delivery_receipt(r.value).event_id for r in records] == [
        e.event_id for e in events
    ]

    [letter_record] = await read_topic(
        settings.kafka_bootstrap, settings.topics.dead_letter, idle=1.0
    )
    letter = orjson.loads(letter_record.value)
    assert letter_record.key == b"m-bad"
    assert (letter["source"], letter["topic"]) == ("receiver-replay", bad_topic)
    assert "InvalidTopicError" in letter["reason"], letter["reason"]
    assert base64.b64decode(letter["value_base64"]) == bad_value

    [line] = (folder / "quarantine.jsonl").read_bytes().splitlines()
    kept = orjson.loads(line)
    assert (kept["source"], kept["topic"], kept["key"]) == ("receiver-replay", topic, "m-huge")
    assert "MessageSizeTooLargeError" in kept["reason"], kept["reason"]
    assert "too large for a dead letter" in kept["reason"], kept["reason"]
    assert base64.b64decode(kept["value_base64"]) == huge
    assert (counted("dead_letter"), counted("quarantine")) == (before[0] + 1, before[1] + 1)
