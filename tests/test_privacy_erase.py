"""Personal data: `smsrx privacy erase` erases a number from every table but the
suppression list, asks first, and leaves everybody else's data as it was."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime

import asyncpg
import orjson

from smsrx.settings import Settings
from tests.helpers import settings_env
from tests.privacy_harness import orange_receipt, tables_holding

# -- smsrx privacy erase -------------------------------------------------------------------

PERSON = "+2250700000001"
OTHER = "+2250700000002"
TEXT = "Mon code est 4821, rappelez-moi"
_AT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


async def _fill(db: asyncpg.Connection) -> None:
    """A row in every table, the person's beside another's (one callback names them both)."""
    p, o, digits = PERSON, OTHER, PERSON[1:]
    both = orange_receipt("m-1", p, o).decode()
    only_other = orange_receipt("m-2", o).decode()
    await db.execute(
        "INSERT INTO submissions (provider, message_id, event_id, recipients, submitted_at) VALUES"
        " ('orange', 'm-1', 's-1', $1, $3), ('orange', 'm-2', 's-2', $2, $3)",
        [p, o],
        [o],
        _AT,
    )
    await db.execute(
        "INSERT INTO recipient_status (provider, message_id, recipient, status, status_rank,"
        " is_final, status_at) VALUES ('orange', 'm-1', $1, 'delivered', 5, true, $3),"
        " ('orange', 'm-1', $2, 'sent', 1, false, $3), ('orange', 'm-2', $2, 'sent', 1, false, $3)",
        p,
        o,
        _AT,
    )
    await db.execute(
        "INSERT INTO status_events (event_id, provider, message_id, recipient, status,"
        " provider_status, synthetic, received_at, raw) VALUES"
        " (gen_random_uuid(), 'orange', 'm-1', $1, 'sent', 'DeliveredToNetwork', false, $5, $3::json),"
        " (gen_random_uuid(), 'orange', 'm-1', $1, 'delivered', 'DeliveredToTerminal', false, $5, $3::json),"
        " (gen_random_uuid(), 'orange', 'm-1', $2, 'sent', 'DeliveredToNetwork', false, $5, $3::json),"
        " (gen_random_uuid(), 'orange', 'm-2', $2, 'sent', 'DeliveredToNetwork', false, $5, $4::json)",
        p,
        o,
        both,
        only_other,
        _AT,
    )
    raw = orjson.dumps({"message_id": "mo-1", "form": digits, "content": TEXT}).decode()
    await db.execute(
        "INSERT INTO inbound_messages (provider, message_id, event_id, sender, content, sent_at,"
        " sent_at_text, received_at, raw) VALUES"
        " ('vavasms', 'mo-1', 'e-1', $1, $3, $5, '2026-12-02 10:00', $5, $4::json),"
        " ('vavasms', 'mo-2', 'e-2', $2, 'Bonjour', $5, '2026-12-02 10:00', $5, '{\"form\": \"x\"}')",
        p,
        o,
        TEXT,
        raw,
        _AT,
    )
    change = {"message_id": "m-1", "recipient": p, "status": "delivered"}
    await db.execute(
        "INSERT INTO status_outbox (key, value) VALUES ($1, $2::json), ($3, $4::json)",
        f"m-1/{p}",
        orjson.dumps(change).decode(),
        f"m-2/{o}",
        orjson.dumps({**change, "recipient": o}).decode(),
    )
    await db.execute(
        "INSERT INTO poll_schedule (provider, message_id, recipient, submitted_at, due_at)"
        " VALUES ('gatewaysms', 'm-3', $1, $2, $2)",
        p,
        _AT,
    )
    await db.execute(
        "INSERT INTO optout_events (event_id, phone, action, keyword, provider, inbound_message_id,"
        " occurred_at, received_at, source) VALUES"
        " ('00000000-0000-4000-8000-000000000001', $1, 'opt_out', 'STOP', 'vavasms', 'mo-1', $2, $2, 'keyword')",
        p,
        _AT,
    )
    await db.execute(
        "INSERT INTO suppressions (phone, suppressed, keyword, source, provider, occurred_at, event_id)"
        " VALUES ($1, true, 'STOP', 'keyword', 'vavasms', $2, '00000000-0000-4000-8000-000000000001')",
        p,
        _AT,
    )
    for sql in (
        "INSERT INTO analytics_receipts_minute VALUES ($1, 'orange', 'CIV', 'delivered', 2)",
        "INSERT INTO analytics_inbound_minute VALUES ($1, 'vavasms', 'CIV', 2)",
        "INSERT INTO analytics_outcomes_minute VALUES ($1, 'orange', 'CIV', 'delivered', 1)",
        "INSERT INTO analytics_latency_hour VALUES ($1, 'orange', 'CIV', 'submission', 'delivered', 10, 1)",
        "INSERT INTO analytics_processed_events VALUES (gen_random_uuid(), $1)",
        "INSERT INTO receiver_dedup VALUES ('e-1', 'vavasms', 'mo-1', $1)",
        "INSERT INTO inbound_routed VALUES (gen_random_uuid(), 'opt-out', $1)",
        "INSERT INTO orange_subscriptions (id, sender, notify_url, created_at) VALUES ('s', '2250000', 'https://x/dr', $1)",
    ):
        await db.execute(sql, _AT)


async def _snapshot(db: asyncpg.Connection) -> dict[str, list[str]]:
    """Every row of every table, as text, sorted."""
    names = await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {
        row["tablename"]: sorted(
            r["t"] for r in await db.fetch(f'SELECT t::text AS t FROM "{row["tablename"]}" t')
        )
        for row in names
    }


def _erase(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``smsrx privacy erase ARGS`` with stdin that is not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "smsrx.cli", "privacy", "erase", *args],
        env=settings_env(settings),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_erase_changes_every_table_but_the_suppression_list(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """After an erasure the number is only in the suppression list; nobody else's data changes."""
    await _fill(db)
    before = await _snapshot(db)
    empty = sorted(
        table for table, rows in before.items() if not rows and table != "schema_migrations"
    )
    assert not empty, (
        f"new tables {empty}: give them a row in _fill, and decide what erase does to them"
    )
    assert set(await tables_holding(db, PERSON[1:])) >= {
        "inbound_messages", "status_events", "recipient_status", "submissions", "status_outbox",
        "suppressions", "optout_events",
    }  # fmt: skip

    done = _erase(settings, PERSON, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rows"] == {
        "inbound_messages": 1,
        "status_events": 3,  # the person's two receipts, and the other's, whose callback named them
        "recipient_status": 1,
        "submissions": 1,
        "status_outbox": 1,
        "poll_schedule": 1,
    }
    assert report["kept"] == {"suppressions": 1, "optout_events": 1}
    assert report["phone"] == "+2250700****01" and report["erased"] is True
    token = report["token"]
    assert re.fullmatch(r"erased:CIV:[0-9a-f]{16}", token)
    assert PERSON[1:] not in done.stdout + done.stderr

    assert await tables_holding(db, PERSON[1:]) == {"suppressions": 1, "optout_events": 1}
    assert await tables_holding(db, TEXT[:12]) == {}
    inbound = await db.fetchrow(
        "SELECT sender, content, raw::text AS raw FROM inbound_messages WHERE message_id = 'mo-1'"
    )
    assert tuple(inbound) == (token, "", "{}")
    assert await db.fetchval(
        "SELECT text_erased_at IS NOT NULL FROM inbound_messages WHERE message_id = 'mo-1'"
    )
    assert await db.fetchval("SELECT count(*) FROM status_events WHERE recipient = $1", token) == 2
    assert await db.fetchval("SELECT recipients FROM submissions WHERE message_id = 'm-1'") == [
        token,
        OTHER,
    ]
    assert (
        await db.fetchval("SELECT key FROM status_outbox WHERE value->>'recipient' = $1", token)
        == f"m-1/{token}"
    )
    assert (
        await db.fetchrow(
            "SELECT status, is_final FROM recipient_status WHERE recipient = $1", token
        )
    )["status"] == "delivered"
    polled = await db.fetchrow(
        "SELECT due_at, done_reason FROM poll_schedule WHERE recipient = $1", token
    )
    assert tuple(polled) == (None, "erased")  # the poller never asks about the token

    after = await _snapshot(db)
    for table in ("suppressions", "optout_events", "analytics_receipts_minute", "analytics_inbound_minute",
                  "analytics_outcomes_minute", "analytics_latency_hour", "analytics_processed_events",
                  "receiver_dedup", "inbound_routed", "orange_subscriptions"):  # fmt: skip
        assert after[table] == before[table], table
    other = await db.fetch(
        "SELECT raw::text AS raw FROM status_events WHERE recipient = $1 ORDER BY message_id", OTHER
    )
    assert [r["raw"] for r in other] == ["{}", orange_receipt("m-2", OTHER).decode()]

    again = _erase(settings, PERSON, "--yes", "--json")
    repeat = json.loads(again.stdout)
    assert again.returncode == 0 and sum(repeat["rows"].values()) == 0 and repeat["token"] is None
    assert await _snapshot(db) == after


async def test_erase_asks_before_it_changes_anything(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Without --yes: exit 1 untouched when stdin is no terminal or the answer is not yes."""
    await _fill(db)
    before = await _snapshot(db)

    piped = _erase(settings, PERSON)
    assert piped.returncode == 1
    assert "would erase the data of +2250700****01" in piped.stdout
    assert "suppressions" in piped.stdout and "never messaged again" in piped.stdout
    assert "--yes" in piped.stderr
    assert await _snapshot(db) == before

    for answer, code in (("no\n", 1), ("yes\n", 0)):
        controller, terminal = os.openpty()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "smsrx.cli", "privacy", "erase", PERSON],
                env=settings_env(settings),
                stdin=terminal,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            os.write(controller, answer.encode())
            out, err = await asyncio.to_thread(proc.communicate, timeout=60)
        finally:
            os.close(controller)
            os.close(terminal)
        assert proc.returncode == code, err
        assert "type 'yes'" in err
        if code:
            assert "nothing erased" in err
            assert await _snapshot(db) == before
        else:
            assert out.startswith("erased the data of +2250700****01 (now erased:CIV:")
    assert await tables_holding(db, PERSON[1:]) == {"suppressions": 1, "optout_events": 1}


async def test_erase_by_a_role_that_may_not_write_changes_nothing(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """A database role that may only read gets one line naming what to do, exit 1, no change."""
    await _fill(db)
    before = await _snapshot(db)
    role = "smsrx_test_reader"
    await db.execute(f"DROP ROLE IF EXISTS {role}")
    await db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        database = await db.fetchval("SELECT current_database()")
        await db.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
        await db.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await db.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        reader_url = re.sub(r"//[^@/]*@", f"//{role}@", settings.database_url)
        done = _erase(settings.with_(database_url=reader_url), PERSON, "--yes")
    finally:
        await db.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        await db.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
        await db.execute(f'REVOKE ALL ON DATABASE "{database}" FROM {role}')
        await db.execute(f"DROP ROLE {role}")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("smsrx privacy erase: nothing erased: permission denied")
    assert "database owner's SMSRX_DATABASE_URL" in done.stderr and "Traceback" not in done.stderr
    assert await _snapshot(db) == before


def test_erase_refuses_what_is_not_a_number() -> None:
    """A malformed number exits 2 with one line, before reaching the database."""
    done = _erase(Settings(database_url="postgresql://nobody@127.0.0.1:1/none"), "12ab", "--yes")
    assert done.returncode == 2
    assert done.stderr.startswith("smsrx privacy erase: not a phone number in international form")


async def test_an_erased_pending_recipient_is_never_expired(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """The expiry sweep never claims an erased recipient: it would publish the token."""
    from consumers.expiry import _CLAIM

    await db.execute(
        "INSERT INTO recipient_status (provider, message_id, recipient, status, is_final,"
        " provider_status, status_event_id, first_event_at, last_event_at, event_count)"
        " VALUES ('orange', 'm-9', $1, 'sent', false, 'DeliveredToNetwork', 'e-9', $2, $2, 1)",
        PERSON,
        _AT,
    )
    done = _erase(settings, PERSON, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    far = _AT.replace(year=_AT.year + 10)
    claimed = await db.fetch(_CLAIM, far, far, far, 100)
    assert [r["recipient"] for r in claimed] == []
