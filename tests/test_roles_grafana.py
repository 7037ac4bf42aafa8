"""Least privilege in PostgreSQL for Grafana: grafana_reader (made by
ops/postgres/initdb/grafana-reader.psql, as docker-compose makes it) runs every SQL panel,
reads aggregates only, writes nothing, and the watchdog ends what it holds too long.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from smsrx.clock import utcnow
from tests.consumers.conftest import wait_for
from tests.ops import grafana
from tests.roles_harness import GRAFANA_READS, GROUPS, PERSONAL, denied

# --- Grafana -----------------------------------------------------------------------------


async def test_every_grafana_sql_panel_runs_as_the_reader(connect) -> None:
    """Each PostgreSQL panel's query, as Grafana sends it, runs as grafana_reader."""
    conn = await connect("smsrx_grafana")
    end = utcnow()
    ran = 0
    for panel in grafana.panels():
        if panel.datasource_type != grafana.POSTGRES:
            continue
        for target in panel.targets:
            await conn.fetch(grafana.sql(target["rawSql"], end - timedelta(hours=24), end))
            ran += 1
    assert ran >= 10


async def test_grafana_reads_aggregates_only(connect, db: asyncpg.Connection) -> None:
    """grafana_reader is a member of smsrx_grafana only; what it can read holds no number, text or payload."""
    memberships = await db.fetch(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = 'grafana_reader'"
    )
    assert [r["rolname"] for r in memberships] == ["smsrx_grafana"]
    for relation in GRAFANA_READS:
        columns = {
            r["attname"]
            for r in await db.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass "
                "AND attnum > 0 AND NOT attisdropped "
                "AND atttypid NOT IN ('bigint'::regtype, 'integer'::regtype, 'numeric'::regtype)",
                relation,
            )
        }
        assert not columns & PERSONAL, relation  # a count of recipients is no recipient
    conn = await connect("smsrx_grafana")
    await denied(conn, "SELECT content FROM inbound_messages")
    await denied(conn, "SELECT raw FROM status_events")
    await denied(conn, "SELECT recipient FROM recipient_status")
    await denied(conn, "SELECT phone FROM optout_events")
    await denied(conn, "SELECT phone FROM suppressions")
    await denied(conn, "SELECT recipients FROM submissions")


async def test_grafana_cannot_write_even_after_turning_read_only_off(connect) -> None:
    """SET default_transaction_read_only = off gives grafana_reader nothing to write to."""
    conn = await connect("smsrx_grafana")
    assert await conn.fetchval("SHOW default_transaction_read_only") == "on"
    await conn.execute("SET default_transaction_read_only = off")
    await conn.execute("SET transaction_read_only = off")
    await denied(conn, "INSERT INTO analytics_receipts_minute VALUES (now(), 'p', 'c', 's', 1)")
    await denied(conn, "UPDATE analytics_receipts_minute SET events = 0")
    await denied(conn, "DELETE FROM analytics_receipts_minute")
    await denied(conn, "CREATE TEMPORARY TABLE t (i int)")
    await denied(conn, "SELECT lo_from_bytea(0, '\\x00'::bytea)")


async def test_grafana_cannot_escape_its_time_limit(connect) -> None:
    """With its statement_timeout SET to 0, a long Grafana query is still cancelled by the watchdog; other roles' queries are not."""
    reader = await connect("smsrx_grafana")
    assert await reader.fetchval("SHOW statement_timeout") == "30s"
    await reader.execute("SET statement_timeout = 0")
    await reader.execute("SET default_transaction_read_only = off")
    analytics = await connect("smsrx_analytics")
    watchdog = await connect("smsrx_watchdog")
    long_read = asyncio.create_task(reader.fetchval("SELECT pg_sleep(60)"))
    other = asyncio.create_task(analytics.fetchval("SELECT pg_sleep(2.5)"))
    await asyncio.sleep(1.5)
    assert await watchdog.fetchval("SELECT smsrx_grafana_watchdog('1 second')") == 1
    with pytest.raises(asyncpg.QueryCanceledError):
        await asyncio.wait_for(long_read, 10)
    await asyncio.wait_for(other, 10)  # not Grafana's: left alone
    assert await reader.fetchval("SELECT 1") == 1  # a cancel, not the end of the session


async def test_watchdog_ends_grafana_sessions_that_hold_locks(connect, db) -> None:
    """A Grafana session idle in a transaction, or holding an advisory lock (the expiry sweep's), is ended."""
    in_transaction = await connect("smsrx_grafana")
    await in_transaction.execute("BEGIN; SELECT 1")
    locker = await connect("smsrx_grafana")
    assert await locker.fetchval("SELECT pg_try_advisory_lock($1)", 0x736D7278)
    watchdog = await connect("smsrx_watchdog")
    await asyncio.sleep(1.2)
    assert await watchdog.fetchval("SELECT smsrx_grafana_watchdog('1 second')") == 2

    async def ended() -> bool:
        return not await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'grafana_reader'"
        )

    await wait_for(ended, "the two sessions ended", timeout=10)
    assert await db.fetchval("SELECT pg_try_advisory_lock($1)", 0x736D7278)
    await db.execute("SELECT pg_advisory_unlock($1)", 0x736D7278)


@pytest.mark.parametrize("group", [g for g in GROUPS if g != "smsrx_watchdog"])
async def test_only_the_watchdog_may_call_it(connect, group: str) -> None:
    """No other role, Grafana's included, may run the watchdog."""
    conn = await connect(group)
    await denied(conn, "SELECT smsrx_grafana_watchdog('1 second')")
