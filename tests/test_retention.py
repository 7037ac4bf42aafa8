"""Retention: the policy, `smsrx db prune` and status-projection's periodic prune, against
the real PostgreSQL (and the real broker where workers run)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from smsrx.prune import PRUNE_LOCK, PruneReport, connect_for_prune, prune
from smsrx.retention import NEVER_PRUNED, policy
from smsrx.settings import ConfigError, Settings
from tests.consumers.conftest import (
    T0,
    Runner,
    feed,
    inbound,
    oracle,
    projected,
    sample,
    wait_for,
    workload,
)
from tests.helpers import process_env

DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)
# The defaults: dedup 7d, processed 14d, history 90d, inbound text 30d, rollups 400d, and
# the expiry horizon 72h.
DEFAULTS = Settings()
HORIZON = timedelta(seconds=DEFAULTS.expiry_horizon)


@pytest.fixture
async def runner(settings: Settings) -> AsyncIterator[Runner]:
    """Workers against the test's broker and database; all stopped at teardown."""
    run = Runner(settings)
    yield run
    await run.close()


async def _prune(database_url: str, now: datetime, **settings: object) -> PruneReport:
    conn = await connect_for_prune(database_url)
    try:
        report = await prune(conn, policy(DEFAULTS.with_(**settings)), now=now)
    finally:
        await conn.close()
    assert report is not None
    return report


def _rows(report: PruneReport) -> dict[str, int]:
    return {t.name: t.rows for t in report.tables if t.rows}


async def _dedup(db, event_id: str, at: datetime) -> None:
    await db.execute(
        "INSERT INTO receiver_dedup (event_id, provider, message_id, published_at) "
        "VALUES ($1, 'orange', 'm', $2)",
        event_id,
        at,
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


async def test_every_table_has_a_retention_or_a_reason_to_keep_it(db) -> None:
    """Every table of the schema is pruned by a rule or listed, with its reason, as never pruned."""
    tables = {
        row[0]
        for row in await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    pruned = {rule.table for rule in policy(DEFAULTS)}
    assert pruned.isdisjoint(NEVER_PRUNED)
    assert tables == pruned | set(NEVER_PRUNED)
    assert {"suppressions", "optout_events"} <= set(NEVER_PRUNED)


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
                await _dedup(db, f"dedup-{tag}", at)
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

    report = await _prune(database_url, now)

    assert _rows(report) == {
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
    assert _rows(await _prune(database_url, now)) == {}, "a second pass finds nothing"


async def test_inbound_text_is_erased_after_its_retention_and_metadata_stays(
    database_url, db
) -> None:
    """Past SMSRX_RETAIN_INBOUND_TEXT an inbound SMS keeps its row but loses its text and raw payload."""
    now = datetime.now(UTC)
    await _inbound(db, "mo-1", now - 30 * DAY - MINUTE)
    await _inbound(db, "mo-2", now - 30 * DAY + MINUTE)
    before = await db.fetchrow("SELECT * FROM inbound_messages WHERE message_id = 'mo-1'")

    report = await _prune(database_url, now)

    assert _rows(report) == {"inbound_messages.text": 1}
    after = await db.fetchrow("SELECT * FROM inbound_messages WHERE message_id = 'mo-1'")
    assert (after["content"], after["raw"], after["text_erased_at"]) == ("", "{}", now)
    for column in ("provider", "event_id", "sender", "sent_at", "sent_at_text", "received_at"):
        assert after[column] == before[column], column
    kept = await db.fetchrow("SELECT * FROM inbound_messages WHERE message_id = 'mo-2'")
    assert (kept["content"], kept["text_erased_at"]) == ("STOP please", None)
    assert _rows(await _prune(database_url, now + DAY)) == {"inbound_messages.text": 1}
    assert _rows(await _prune(database_url, now + DAY)) == {}, "an erased text is erased once"


async def test_dedup_rows_within_their_window_are_kept(database_url, db) -> None:
    """With the clock moved forward, dedup and processed-event rows stay until their window ends."""
    await _dedup(db, "e-1", datetime.now(UTC))
    await db.execute("INSERT INTO analytics_processed_events (event_id) VALUES ($1)", uuid.uuid4())
    now = datetime.now(UTC)

    assert _rows(await _prune(database_url, now + 7 * DAY - MINUTE)) == {}
    assert _rows(await _prune(database_url, now + 7 * DAY + MINUTE)) == {"receiver_dedup": 1}
    assert _rows(await _prune(database_url, now + 14 * DAY - MINUTE)) == {}
    assert _rows(await _prune(database_url, now + 14 * DAY + MINUTE)) == {
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

    assert _rows(await _prune(database_url, now + HORIZON - MINUTE)) == {}
    assert _rows(await _prune(database_url, now + 90 * DAY - MINUTE)) == {}
    assert _rows(await _prune(database_url, now + 90 * DAY + MINUTE)) == {"recipient_status": 1}
    assert await _keys(db, "recipient_status", "recipient") == {"+2250700000001"}
    assert await _keys(db, "submissions", "message_id") == {"msg"}
    assert _rows(await _prune(database_url, now + 90 * DAY + HORIZON + MINUTE)) == {
        "recipient_status": 1,
        "submissions": 1,
    }


async def test_a_second_concurrent_prune_is_refused(database_url, db) -> None:
    """While one prune holds the lock, another returns None, and the command says so and exits 1."""
    holder = await connect_for_prune(database_url)
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK)
        conn = await connect_for_prune(database_url)
        try:
            assert await prune(conn, policy(DEFAULTS)) is None
        finally:
            await conn.close()
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "smsrx.cli", "db", "prune"],
            env=process_env(DATABASE_URL=database_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        await holder.close()
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        "smsrx db prune: another prune is running (status-projection or 'smsrx db prune'); "
        "try again later\n"
    )
    assert done.stdout == ""


async def test_workers_keep_running_during_a_prune(
    settings_factory, runner, database_url, db
) -> None:
    """Receipts fed during a prune of 60,000 old rows keep being applied, every one of them."""
    settings = settings_factory(prune_interval=0.0)
    old = datetime.now(UTC) - 200 * DAY
    await db.execute(
        "INSERT INTO status_events (event_id, provider, message_id, recipient, status, "
        "provider_status, synthetic, received_at, raw, recorded_at) "
        "SELECT gen_random_uuid(), 'orange', 'old-' || (i % 1000), '+2250700000001', 'sent', "
        "'x', false, $1, '{}', $1 FROM generate_series(1, 60000) i",
        old,
    )
    story = workload(400, recipients=2, duplicates=0.2, seed=14)
    projection = runner.start(runner.projection(settings))
    await asyncio.wait_for(projection.assigned.wait(), 60)

    during: list[int] = []

    async def pruning() -> PruneReport | None:
        await wait_for(lambda: projection.processed > 0, "the first receipts to be applied")
        conn = await connect_for_prune(database_url)
        try:
            during.append(projection.processed)
            return await prune(conn, policy(settings), batch_size=200)
        finally:
            during.append(projection.processed)
            await conn.close()

    async def feeding() -> None:
        for start in range(0, len(story.sent), 100):
            await feed(settings, settings.topics.delivery_receipts, story.sent[start : start + 100])

    report, _ = await asyncio.gather(pruning(), feeding())
    await runner.drain(projection, records=len(story.sent))

    assert report is not None and _rows(report) == {"status_events": 60000}
    started, ended = during
    assert ended > started, "the worker applied receipts while the prune ran"
    assert await projected(db) == oracle(story.distinct)
    assert await db.fetchval("SELECT count(*) FROM status_events") == len(story.distinct)


async def test_status_projection_prunes_periodically_and_exports_metrics(
    settings_factory, runner, db
) -> None:
    """With SMSRX_PRUNE_INTERVAL set, status-projection prunes by itself and exports what it did."""
    settings = settings_factory(prune_interval=0.5)
    before = sample("smsrx_prune_deleted_rows_total", table="receiver_dedup")
    now = datetime.now(UTC)
    for i in range(3):
        await _dedup(db, f"old-{i}", now - 8 * DAY)
    await _dedup(db, "young", now - DAY)

    runner.start(runner.projection(settings))
    await wait_for(
        lambda: _count(db, "receiver_dedup", 1), "the periodic prune to delete the old rows"
    )
    await wait_for(
        lambda: sample("smsrx_prune_deleted_rows_total", table="receiver_dedup") - before == 3,
        "the deleted rows to be counted",
    )
    age = sample("smsrx_table_oldest_row_age_seconds", table="receiver_dedup")
    assert DAY.total_seconds() <= age < DAY.total_seconds() + 60


async def _count(db, table: str, expected: int) -> bool:
    return bool(await db.fetchval(f"SELECT count(*) FROM {table}") == expected)


async def test_a_replay_after_a_prune_counts_nothing_twice(
    settings, runner, database_url, db
) -> None:
    """Pruned within SMSRX_RETAIN_PROCESSED, a replay of every topic into analytics changes no count."""
    story = workload(150, recipients=2, duplicates=0.2, seed=41)
    mos = [inbound(f"mo-{i}", "+33612345678", T0) for i in range(30)]
    topics = settings.topics
    await feed(settings, topics.delivery_receipts, story.sent)
    await feed(settings, topics.inbound, mos)
    analytics = runner.start(runner.analytics())
    await runner.drain(analytics, records=len(story.sent) + len(mos))
    await runner.stop(analytics)
    rollups = await _rollups(db)
    counted = await db.fetchval("SELECT count(*) FROM analytics_processed_events")
    assert counted == len(story.distinct) + len(mos)

    # The clock moved forward to just inside SMSRX_RETAIN_PROCESSED: every id is kept.
    now = datetime.now(UTC) + timedelta(seconds=settings.retain_processed) - timedelta(hours=1)
    report = await _prune(database_url, now)
    assert "analytics_processed_events" not in _rows(report)

    again = runner.start(runner.analytics(group_id=f"replay-{uuid.uuid4().hex[:8]}"))
    await runner.drain(again, records=len(story.sent) + len(mos))
    await runner.stop(again)
    assert await _rollups(db) == rollups
    assert await db.fetchval("SELECT count(*) FROM analytics_processed_events") == counted


async def _rollups(db) -> dict[str, list[tuple[object, ...]]]:
    return {
        table: [tuple(r) for r in await db.fetch(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4")]
        for table in ("analytics_receipts_minute", "analytics_inbound_minute")
    }


def test_retain_processed_shorter_than_the_topics_retention_is_refused() -> None:
    """SMSRX_RETAIN_PROCESSED (or _HISTORY) shorter than SMSRX_TOPIC_RETENTION is a ConfigError naming both."""
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"SMSRX_RETAIN_PROCESSED": "3d"})
    assert str(error.value) == (
        "SMSRX_RETAIN_PROCESSED=3d is shorter than SMSRX_TOPIC_RETENTION=7d: an event replayed "
        "from a topic would no longer be known as a duplicate; keep SMSRX_RETAIN_PROCESSED at "
        "least as long as SMSRX_TOPIC_RETENTION"
    )
    with pytest.raises(
        ConfigError, match="^SMSRX_RETAIN_HISTORY=20d is shorter than SMSRX_TOPIC_RETENTION=30d"
    ):
        Settings.from_env(
            {
                "SMSRX_TOPIC_RETENTION": "30d",
                "SMSRX_RETAIN_HISTORY": "20d",
                "SMSRX_RETAIN_PROCESSED": "30d",
            }
        )
    assert Settings.from_env({"SMSRX_RETAIN_PROCESSED": "7d"}).retain_processed == 7 * 86400.0
    done = subprocess.run(
        [sys.executable, "-m", "smsrx.cli", "db", "prune", "--dry-run"],
        env=process_env(RETAIN_PROCESSED="3d", DATABASE_URL="postgresql://nobody@127.0.0.1:1/x"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(
        "smsrx: configuration error: SMSRX_RETAIN_PROCESSED=3d is shorter"
    )
    assert "Traceback" not in done.stderr


async def test_db_prune_dry_run_prints_the_plan(database_url, db) -> None:
    """`smsrx db prune --dry-run` prints every table with what is due, changes nothing, no traceback."""
    await _dedup(db, "old", datetime.now(UTC) - 8 * DAY)
    env = process_env(DATABASE_URL=database_url)
    command = [sys.executable, "-m", "smsrx.cli", "db", "prune", "--dry-run"]
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["table", "rows", "kept", "oldest", "row"]
    assert lines[1].split()[:4] == ["receiver_dedup", "would", "delete", "1"]
    for rule in policy(DEFAULTS):
        assert any(line.startswith(rule.label + " ") for line in lines), rule.label
    assert "dry run, nothing changed: 1 rows would be deleted and 0 inbound texts erased" in lines
    assert await db.fetchval("SELECT count(*) FROM receiver_dedup") == 1

    done = await asyncio.to_thread(
        subprocess.run, [*command, "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    plan = json.loads(done.stdout)
    assert plan["dry_run"] is True and plan["deleted"] == 1
    assert plan["tables"][0]["table"] == "receiver_dedup"
    assert plan["tables"][0]["oldest_age_seconds"] >= 8 * 86400


def test_the_policy_counts_from_the_settings() -> None:
    """Each rule's keep comes from its setting; unfinished recipients and submissions add the horizon."""
    settings = DEFAULTS.with_(retain_history=100 * 86400.0, expiry_horizon=86400.0)
    keeps = {(rule.label, rule.column): rule.keep for rule in policy(settings)}
    assert keeps[("status_events", "recorded_at")] == 100 * DAY
    assert keeps[("recipient_status", "final_at")] == 100 * DAY
    assert keeps[("recipient_status", "coalesce(submitted_at, first_event_at)")] == 101 * DAY
    assert keeps[("submissions", "submitted_at")] == 101 * DAY
    assert keeps[("inbound_messages.text", "recorded_at")] == 30 * DAY
    assert {rule.setting for rule in policy(settings)} == {
        "SMSRX_RETAIN_DEDUP",
        "SMSRX_RETAIN_PROCESSED",
        "SMSRX_RETAIN_HISTORY",
        "SMSRX_RETAIN_INBOUND_TEXT",
        "SMSRX_RETAIN_ROLLUPS",
    }
