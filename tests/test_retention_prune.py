"""Retention: `prune` against the real PostgreSQL deletes what is past each cutoff, and
only that, with the clock moved forward and back around each one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from tests.retention_harness import (
    DAY,
    HORIZON,
    MINUTE,
    insert_dedup,
    prune_at,
    pruned_rows,
)


async def _event(db, at: datetime, message_id: str = "m") -> uuid.UUID:
    event_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO status_events (event_id, provider, message_id, recipient, status, "
        "provider_status, synthetic, received_at, raw, recorded_at) "
        "VALUES ($1, 'orange', $2, '+2250700000001', 'sent', 'DeliveredToNetwork', false, $3, "
        "'{}', $3)",
        event_id,
        message_id,
        at,
    )
    return event_id


async def _recipient(
    db,
    message_id: str,
    *,
    final_at: datetime | None = None,
    submitted_at: datetime | None = None,
    updated_at: datetime,
) -> None:
    """A recipient: finished at ``final_at`` (delivered), or pending since ``submitted_at``."""
    await db.execute(
        "INSERT INTO recipient_status (provider, message_id, recipient, status, status_rank, "
        "is_final, status_at, submitted_at, first_event_at, updated_at) "
        "VALUES ('orange', $1, '+2250700000001', $2, $3, $4, $5, $6, $5, $7)",
        message_id,
        "delivered" if final_at else None,
        5 if final_at else -1,
        final_at is not None,
        final_at,
        submitted_at,
        updated_at,
    )


async def _submission(db, message_id: str, at: datetime) -> None:
    await db.execute(
        "INSERT INTO submissions (provider, message_id, event_id, recipients, submitted_at, "
        "recorded_at) VALUES ('orange', $1, $1, ARRAY['+2250700000001'], $2, $2)",
        message_id,
        at,
    )


async def _inbound(db, message_id: str, at: datetime) -> None:
    await db.execute(
        "INSERT INTO inbound_messages (provider, message_id, event_id, sender, content, sent_at, "
        "sent_at_text, received_at, raw, recorded_at) VALUES ('vavasms', $1, $1, "
        "'+2250700000009', 'STOP please', $2, '2026-01-01 10:00', $2, '{\"text\": \"STOP please\"}', $2)",
        message_id,
        at,
    )


async def _keys(db, table: str, key: str) -> set[str]:
    return {str(row[0]) for row in await db.fetch(f"SELECT {key} FROM {table}")}


async def test_prune_deletes_exactly_what_is_past_each_cutoff(database_url, db) -> None:
    """Each table loses the rows a minute past its cutoff and keeps those a minute inside it."""
    now = datetime.now(UTC)
    old, young = -MINUTE, MINUTE  # offsets from each cutoff

    for days, table, column in (
        (7, "receiver_dedup", None),
        (14, "analytics_processed_events", "processed_at"),
        (14, "inbound_routed", "routed_at"),
    ):
        for tag, offset in (("old", old), ("young", young)):
            at = now - days * DAY + offset
            if table == "receiver_dedup":
                await insert_dedup(db, f"dedup-{tag}", at)
            elif table == "inbound_routed":
                await db.execute(
                    "INSERT INTO inbound_routed (event_id, route, routed_at) VALUES ($1, $2, $3)",
                    uuid.uuid4(),
                    tag,
                    at,
                )
            else:
                await db.execute(
                    f"INSERT INTO {table} (event_id, {column}) VALUES ($1, $2)", uuid.uuid4(), at
                )
    young_event = await _event(db, now - 90 * DAY + young)
    await _event(db, now - 90 * DAY + old)

    history = now - 90 * DAY
    await _recipient(db, "final-old", final_at=history + old, updated_at=history + old)
    await _recipient(db, "final-young", final_at=history + young, updated_at=history + young)
    # Finished long ago, but a late receipt changed the row since: kept.
    await _recipient(db, "final-touched", final_at=history + old, updated_at=now - DAY)
    unfinished = history - HORIZON
    await _recipient(db, "pending-old", submitted_at=unfinished + old, updated_at=unfinished + old)
    await _recipient(db, "pending-young", submitted_at=unfinished + young, updated_at=unfinished)
    await _submission(db, "gone", unfinished + old)  # no recipient row: due
    await _submission(db, "final-touched", unfinished + old)  # its recipient is kept
    await _submission(db, "pending-young", unfinished + young)

    await _inbound(db, "mo-old", history + old)
    await _inbound(db, "mo-erased", history + young)
    await _inbound(db, "mo-young", now - 30 * DAY + young)
    rollups = now - 400 * DAY
    for table, column, extra in (
        ("analytics_receipts_minute", "minute", "status, events"),
        ("analytics_inbound_minute", "minute", "messages"),
        ("analytics_outcomes_minute", "minute", "status, recipients"),
        ("analytics_latency_hour", "hour", "since, status, le, samples"),
    ):
        values = {
            "status, events": "'delivered', 1",
            "messages": "1",
            "status, recipients": "'delivered', 1",
            "since, status, le, samples": "'submission', 'delivered', 60, 1",
        }[extra]
        for offset in (old, young):
            await db.execute(
                f"INSERT INTO {table} ({column}, provider, country, {extra}) "
                f"VALUES ($1, 'orange', 'CIV', {values})",
                rollups + offset,
            )

    report = await prune_at(database_url, now)

    assert pruned_rows(report) == {
        "receiver_dedup": 1,
        "analytics_processed_events": 1,
        "inbound_routed": 1,
        "status_events": 1,
        "recipient_status": 2,
        "submissions": 1,
        "inbound_messages": 1,
        "inbound_messages.text": 1,
        "analytics_receipts_minute": 1,
        "analytics_inbound_minute": 1,
        "analytics_outcomes_minute": 1,
        "analytics_latency_hour": 1,
    }
    assert await _keys(db, "receiver_dedup", "event_id") == {"dedup-young"}
    assert await db.fetchval("SELECT min(processed_at) FROM analytics_processed_events") > (
        now - 14 * DAY
    )
    assert await _keys(db, "inbound_routed", "route") == {"young"}
    assert await _keys(db, "status_events", "event_id") == {str(young_event)}
    assert await _keys(db, "recipient_status", "message_id") == {
        "final-young",
        "final-touched",
        "pending-young",
    }
    assert await _keys(db, "submissions", "message_id") == {"final-touched", "pending-young"}
    assert await _keys(db, "inbound_messages", "message_id") == {"mo-erased", "mo-young"}
    for table, column in (
        ("analytics_receipts_minute", "minute"),
        ("analytics_inbound_minute", "minute"),
        ("analytics_outcomes_minute", "minute"),
        ("analytics_latency_hour", "hour"),
    ):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 1
        assert await db.fetchval(f"SELECT min({column}) FROM {table}") == rollups + young
    ages = {t.name: t.age(now) for t in report.tables}
    assert ages["status_events"] == pytest.approx((90 * DAY - MINUTE).total_seconds())
    assert ages["receiver_dedup"] == pytest.approx((7 * DAY - MINUTE).total_seconds())
    assert pruned_rows(await prune_at(database_url, now)) == {}, "a second pass finds nothing"


async def test_inbound_text_is_erased_after_its_retention_and_metadata_stays(
    database_url, db
) -> None:
    """Past SMSRX_RETAIN_INBOUND_TEXT an inbound SMS keeps its row but loses its text and raw payload."""
    now = datetime.now(UTC)
    await _inbound(db, "mo-1", now - 30 * DAY - MINUTE)
    await _inbound(db, "mo-2", now - 30 * DAY + MINUTE)
    before = await db.fetchrow("SELECT * FROM inbound_messages WHERE message_id = 'mo-1'")

    report = await prune_at(database_url, now)

    assert pruned_rows(report) == {"inbound_messages.text": 1}
    after = await db.fetchrow("SELECT * FROM inbound_messages WHERE message_id = 'mo-1'")
    assert (after["content"], after["raw"], after["text_erased_at"]) == ("", "{}", now)
    for column in ("provider", "event_id", "sender", "sent_at", "sent_at_text", "received_at"):
        assert after[column] == before[column], column
    kept = await db.fetchrow("SELECT * FROM inbound_messages WHERE message_id = 'mo-2'")
    assert (kept["content"], kept["text_erased_at"]) == ("STOP please", None)
    assert pruned_rows(await prune_at(database_url, now + DAY)) == {"inbound_messages.text": 1}
    assert pruned_rows(await prune_at(database_url, now + DAY)) == {}, (
        "an erased text is erased once"
    )


async def test_dedup_rows_within_their_window_are_kept(database_url, db) -> None:
    """With the clock moved forward, dedup and processed-event rows stay until their window ends."""
    await insert_dedup(db, "e-1", datetime.now(UTC))
    await db.execute("INSERT INTO analytics_processed_events (event_id) VALUES ($1)", uuid.uuid4())
    now = datetime.now(UTC)

    assert pruned_rows(await prune_at(database_url, now + 7 * DAY - MINUTE)) == {}
    assert pruned_rows(await prune_at(database_url, now + 7 * DAY + MINUTE)) == {
        "receiver_dedup": 1
    }
    assert pruned_rows(await prune_at(database_url, now + 14 * DAY - MINUTE)) == {}
    assert pruned_rows(await prune_at(database_url, now + 14 * DAY + MINUTE)) == {
        "analytics_processed_events": 1
    }


async def test_recipient_status_is_kept_while_its_message_is_within_the_horizon(
    database_url, db
) -> None:
    """A message's rows and submission stay within the horizon and SMSRX_RETAIN_HISTORY after it."""
    now = datetime.now(UTC)
    await _submission(db, "msg", now)
    # One recipient unfinished; the other finished, with a carrier time long before: the
    # row was written now, so it is kept as long as the message.
    await _recipient(db, "msg", submitted_at=now, updated_at=now)
    await db.execute(
        "INSERT INTO recipient_status (provider, message_id, recipient, status, status_rank, "
        "is_final, status_at, submitted_at, first_event_at, updated_at) VALUES ('orange', 'msg', "
        "'+2250700000002', 'delivered', 5, true, $1, $2, $1, $2)",
        now - 200 * DAY,
        now,
    )

    assert pruned_rows(await prune_at(database_url, now + HORIZON - MINUTE)) == {}
    assert pruned_rows(await prune_at(database_url, now + 90 * DAY - MINUTE)) == {}
    assert pruned_rows(await prune_at(database_url, now + 90 * DAY + MINUTE)) == {
        "recipient_status": 1
    }
    assert await _keys(db, "recipient_status", "recipient") == {"+2250700000001"}
    assert await _keys(db, "submissions", "message_id") == {"msg"}
    assert pruned_rows(await prune_at(database_url, now + 90 * DAY + HORIZON + MINUTE)) == {
        "recipient_status": 1,
        "submissions": 1,
    }
