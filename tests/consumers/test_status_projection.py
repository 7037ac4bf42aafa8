"""status-projection against the real broker and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import asyncpg

from consumers.expiry import EXPIRED_PROVIDER_STATUS
from smsrx.clock import utcnow
from smsrx.codec import decode_status_change, encode
from smsrx.events import StatusChange
from smsrx.statuses import RANK, Status
from tests.consumers.conftest import (
    T0,
    feed,
    feed_raw,
    inbound,
    oracle,
    projected,
    receipt,
    sample,
    submission,
    wait_for,
    workload,
)
from tests.helpers import read_topic


async def test_receipts_project_by_precedence_and_publish_changes(settings, runner, db) -> None:
    """Shuffled, duplicated receipts end in the precedence state; every event is in the
    history once; each change is published, and the last one per recipient is current."""
    story = workload(300, recipients=2, duplicates=0.4, seed=7)
    topics = settings.topics
    await feed(settings, topics.delivery_receipts, story.sent)
    regressions = sample("smsrx_status_regressions_prevented_total", provider="orange")
    worker = runner.start(runner.projection())
    await runner.drain(worker, records=len(story.sent))

    expected = oracle(story.distinct)
    assert await projected(db) == expected
    assert await db.fetchval("SELECT count(DISTINCT event_id) FROM status_events") == len(
        story.distinct
    )
    assert await db.fetchval("SELECT count(*) FROM status_events") == len(story.distinct)
    assert sample("smsrx_status_regressions_prevented_total", provider="orange") > regressions
    assert sample(
        "smsrx_consumer_events_total",
        worker="status-projection",
        topic=topics.delivery_receipts,
        outcome="duplicate",
    ) >= len(story.sent) - len(story.distinct)

    await wait_for(lambda: _outbox_empty(db), "the outbox to be published and emptied", timeout=30)
    changes = [
        decode_status_change(r.value)
        for r in await read_topic(settings.kafka_bootstrap, topics.message_status)
    ]
    latest: dict[tuple[str, str, str], Status] = {}
    for change in changes:
        key = (change.provider, change.message_id, change.recipient)
        assert bytes(change.key) == f"{change.message_id}/{change.recipient}".encode()
        if key in latest:
            assert RANK[change.status] > RANK[latest[key]], "a change never lowers the status"
        latest[key] = change.status
    assert {k: v.value for k, v in latest.items()} == {k: v["status"] for k, v in expected.items()}


async def _outbox_empty(db) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM status_outbox") == 0)


async def test_early_receipt_is_joined_when_the_submission_arrives(settings, runner, db) -> None:
    """A receipt before its submission is projected at once, then joined to the submission:
    submitted_at, time to final, and a pending row for the recipient with no receipt yet."""
    topics = settings.topics
    first, second = "+2250700000001", "+2250700000002"
    dr = receipt("early-1", first, Status.DELIVERED, T0 + timedelta(seconds=30))
    await feed(settings, topics.delivery_receipts, [dr])
    worker = runner.start(runner.projection())
    await runner.drain(worker, records=1)
    row = await db.fetchrow("SELECT * FROM recipient_status WHERE message_id = 'early-1'")
    assert (row["status"], row["submitted_at"], row["time_to_final"]) == (
        "delivered",
        None,
        timedelta(0),
    )

    sub = submission("early-1", [first, "+225 07 00 00 00 02"], T0)
    await feed(settings, topics.submissions, [sub, sub])
    await runner.drain(worker, records=3)
    rows = {
        r["recipient"]: r
        for r in await db.fetch("SELECT * FROM recipient_status WHERE message_id = 'early-1'")
    }
    assert rows[first]["submitted_at"] == T0
    assert rows[first]["time_to_final"] == timedelta(seconds=30)
    assert (rows[second]["status"], rows[second]["submitted_at"]) == (None, T0)
    assert await db.fetchval("SELECT count(*) FROM submissions") == 1
    tags = await db.fetchval("SELECT tags->>'tenant' FROM submissions WHERE message_id = 'early-1'")
    assert tags == "acme"

    # A receipt after the submission is joined on arrival.
    late = receipt("early-1", second, Status.FAILED, T0 + timedelta(seconds=50))
    await feed(settings, topics.delivery_receipts, [late])
    await runner.drain(worker, records=4)
    row = await db.fetchrow(
        "SELECT * FROM recipient_status WHERE message_id = 'early-1' AND recipient = $1", second
    )
    assert (row["status"], row["time_to_final"]) == ("failed", timedelta(seconds=50))


async def test_inbound_messages_are_stored_once(settings, runner, db) -> None:
    """An inbound SMS notified twice is stored once, unique by (provider, message_id)."""
    messages = [inbound(f"mo-{i}", "+2250709000001", T0) for i in range(20)]
    await feed(settings, settings.topics.inbound, messages + messages[:5])
    worker = runner.start(runner.projection())
    await runner.drain(worker, records=25)
    assert await db.fetchval("SELECT count(*) FROM inbound_messages") == 20


async def test_bad_records_are_counted_and_skipped(settings, runner, db) -> None:
    """Malformed records and receipts PostgreSQL refuses (a NUL byte, an event_id that is
    not a UUID) are counted invalid and skipped; every other receipt is applied."""
    topics = settings.topics
    good = [receipt(f"ok-{i}", "+2250700000001", Status.SENT, T0) for i in range(30)]
    poison = receipt("bad-1", "+2250700000001", Status.SENT, T0, provider_status="nul\x00byte")
    not_uuid = dataclasses.replace(
        receipt("bad-2", "+2250700000001", Status.SENT, T0), event_id="not-a-uuid"
    )
    records = [(r.key, encode(r)) for r in good[:15]]
    records += [(b"x", b"not json"), (b"y", b'{"event_id": 1}'), (poison.key, encode(poison))]
    records += [(not_uuid.key, encode(not_uuid))]
    records += [(r.key, encode(r)) for r in good[15:]]
    before = sample(
        "smsrx_consumer_events_total",
        worker="status-projection",
        topic=topics.delivery_receipts,
        outcome="invalid",
    )
    await feed_raw(settings, topics.delivery_receipts, records)
    worker = runner.start(runner.projection())
    await runner.drain(worker, records=len(records))
    assert await db.fetchval("SELECT count(*) FROM status_events") == 30
    assert await db.fetchval("SELECT count(*) FROM recipient_status") == 30
    invalid = sample(
        "smsrx_consumer_events_total",
        worker="status-projection",
        topic=topics.delivery_receipts,
        outcome="invalid",
    )
    assert invalid - before == 4


async def test_expiry_sweep_sets_expired_after_the_horizon(settings_factory, runner, db) -> None:
    """With a short horizon, the sweep expires a recipient with no final status (a synthetic
    event in the history), leaves a final one alone, and a late real receipt still wins."""
    settings = settings_factory(expiry_horizon=1.0, expiry_sweep_interval=0.3)
    topics = settings.topics
    now = utcnow()
    done, silent, waiting = "+2250700000001", "+2250700000002", "+2250700000003"
    await feed(settings, topics.submissions, [submission("exp-1", [done, silent, waiting], now)])
    await feed(
        settings,
        topics.delivery_receipts,
        [
            receipt("exp-1", done, Status.DELIVERED, now),
            receipt("exp-1", waiting, Status.SENT, now),
        ],
    )
    worker = runner.start(runner.projection(settings))

    async def expired() -> dict[str, str | None]:
        rows = await db.fetch("SELECT recipient, status FROM recipient_status")
        return {r["recipient"]: r["status"] for r in rows}

    await wait_for(
        lambda: _both_expired(expired()), "the sweep to expire the silent recipients", timeout=30
    )
    assert (await expired())[done] == "delivered"
    history = await db.fetch(
        "SELECT recipient, synthetic, provider_status FROM status_events WHERE status = 'expired'"
    )
    assert sorted((r["recipient"], r["synthetic"], r["provider_status"]) for r in history) == [
        (silent, True, EXPIRED_PROVIDER_STATUS),
        (waiting, True, EXPIRED_PROVIDER_STATUS),
    ]
    row = await db.fetchrow("SELECT * FROM recipient_status WHERE recipient = $1", silent)
    assert row["is_final"] and row["time_to_final"] >= timedelta(seconds=1)

    # A real final receipt after expiry replaces it; more sweeps publish nothing new.
    await feed(
        settings,
        topics.delivery_receipts,
        [receipt("exp-1", waiting, Status.DELIVERED, utcnow())],
    )
    await wait_for(
        lambda: _status_is(db, waiting, "delivered"), "delivered to replace expired", timeout=30
    )
    assert worker.sweeper is not None
    assert await worker.sweeper.sweep() == 0
    assert await db.fetchval("SELECT count(*) FROM status_events WHERE status = 'expired'") == 2


async def _both_expired(states) -> bool:
    got = await states
    return sorted(got.values(), key=str) == ["delivered", "expired", "expired"]


async def _status_is(db, recipient: str, status: str) -> bool:
    got = await db.fetchval("SELECT status FROM recipient_status WHERE recipient = $1", recipient)
    return bool(got == status)


async def test_outbox_rows_left_by_a_crash_are_published_on_start(settings, runner, db) -> None:
    """Status changes committed but never published (a crash before the broker acked them)
    are published when a worker starts, and their rows deleted."""
    changes = []
    for i in range(3):
        r = receipt(f"ob-{i}", "+2250700000001", Status.DELIVERED, T0)
        change = StatusChange(
            event_id=StatusChange.id_for(r.provider, r.message_id, r.recipient, r.status),
            provider=r.provider,
            message_id=r.message_id,
            recipient=r.recipient,
            status=r.status,
            previous_status=None,
            is_final=True,
            submitted_at=None,
            first_event_at=T0,
            changed_at=T0,
            cause_event_id=r.event_id,
        )
        changes.append(change)
        await db.execute(
            "INSERT INTO status_outbox (key, value) VALUES ($1, $2)",
            change.key.decode(),
            encode(change).decode(),
        )
    runner.start(runner.projection())
    await wait_for(lambda: _outbox_empty(db), "the outbox to be published", timeout=30)
    published = await read_topic(settings.kafka_bootstrap, settings.topics.message_status)
    by_id = {c.event_id: c for c in (decode_status_change(r.value) for r in published)}
    assert by_id == {c.event_id: c for c in changes}
    assert {bytes(r.key) for r in published} == {c.key for c in changes}


def _message_in_lane(lane: int, partitions: int) -> str:
    """A message id whose records land on a partition of ``lane`` (of 2)."""
    from smsrx.partitioner import partition_for

    return next(
        f"lane-{lane}-{i}"
        for i in range(1000)
        if partition_for(f"lane-{lane}-{i}".encode(), list(range(partitions))) % 2 == lane
    )


async def test_a_blocked_lane_does_not_hold_the_other(settings, runner, db) -> None:
    """A batch is applied as two transactions split by partition: while one waits on a row
    lock, the other commits; once the lock goes, both are applied and offsets committed."""
    partitions = settings.topic_partitions
    waiting, free = _message_in_lane(1, partitions), _message_in_lane(0, partitions)
    recipient = "+2250700000001"
    await db.execute(
        "INSERT INTO recipient_status (provider, message_id, recipient) VALUES ('orange', $1, $2)",
        waiting,
        recipient,
    )
    topic = settings.topics.delivery_receipts
    await feed(
        settings,
        topic,
        [
            receipt(waiting, recipient, Status.DELIVERED, T0),
            receipt(free, recipient, Status.SENT, T0),
        ],
    )
    lock = db.transaction()
    await lock.start()
    try:
        await db.execute("SELECT 1 FROM recipient_status WHERE message_id = $1 FOR UPDATE", waiting)
        worker = runner.start(runner.projection())

        async def visible(message_id: str) -> bool:
            # read on another connection: this one holds the lock's transaction
            conn = await asyncpg.connect(settings.database_url)
            try:
                row = await conn.fetchval(
                    "SELECT status FROM recipient_status WHERE message_id = $1", message_id
                )
            finally:
                await conn.close()
            return row is not None

        await wait_for(lambda: visible(free), "the free lane to commit")
        assert not await visible(waiting)
        assert worker.processed == 0  # offsets wait for both lanes
    finally:
        await lock.rollback()
    await runner.drain(worker, records=2)
    assert (
        await db.fetchval("SELECT status FROM recipient_status WHERE message_id = $1", waiting)
        == "delivered"
    )
