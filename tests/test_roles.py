"""Least privilege in PostgreSQL (smsrx/migrations/0007_roles.sql), against the real test
database: each service's role can do its job, by running that service's own code
connected as a LOGIN user in the role, and nothing else.

The test database's own user is a superuser, so every check connects as a login made
here: ``test_<service>`` IN ROLE ``smsrx_<service>``, and ``grafana_reader`` made by
ops/postgres/initdb/grafana-reader.psql exactly as docker-compose makes it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import subprocess
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from consumers.pruning import PruneJob
from receiver.dedup import Dedup
from smsrx.clock import utcnow
from smsrx.db import create_pool
from smsrx.events import InboundMessage
from smsrx.prune import connect_for_prune, prune
from smsrx.retention import policy
from smsrx.settings import Settings
from smsrx.statuses import Status
from subscriptions.store import State, SubscriptionStore
from tests.consumers.conftest import (
    Runner,
    api,
    feed,
    read_api,
    receipt,
    submission,
    wait_for,
)
from tests.consumers.conftest import inbound as inbound_sms
from tests.ops import grafana

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from smsrx.cli.dev.postgres import Postgres

ROOT = Path(__file__).resolve().parents[1]
OPS_POSTGRES = ROOT / "ops" / "postgres"

SERVICES = ("receiver", "status_projection", "analytics", "inbound", "reconciler", "prune")
GROUPS = (*(f"smsrx_{s}" for s in SERVICES), "smsrx_grafana", "smsrx_watchdog")

ROLLUPS = {
    "analytics_receipts_minute",
    "analytics_inbound_minute",
    "analytics_outcomes_minute",
    "analytics_latency_hour",
}
ANALYTICS_VIEWS = {
    "delivery_rate_daily",
    "delivery_rate_provider_daily",
    "receipts_daily",
    "time_to_final_daily",
}
PRUNED = {
    "receiver_dedup",
    "analytics_processed_events",
    "inbound_routed",
    "status_events",
    "recipient_status",
    "submissions",
    "inbound_messages",
    *ROLLUPS,
}
PROJECTION = {"submissions", "recipient_status", "status_events", "inbound_messages"}
GRAFANA_READS = {*ROLLUPS, *ANALYTICS_VIEWS, "recipients_pending", "optout_activity"}

# What each group may read and write (INSERT, DELETE, TRUNCATE or UPDATE of any column),
# group memberships included: status-projection runs the prune, so it holds smsrx_prune.
EXPECTED = {
    "smsrx_receiver": ({"receiver_dedup", "schema_migrations"}, {"receiver_dedup"}),
    "smsrx_status_projection": (
        {*PROJECTION, "status_outbox", "recipients_pending", "schema_migrations", *PRUNED},
        {*PROJECTION, "status_outbox", *PRUNED},
    ),
    "smsrx_analytics": (
        {*ROLLUPS, *ANALYTICS_VIEWS, "analytics_processed_events", "schema_migrations"},
        {*ROLLUPS, "analytics_processed_events"},
    ),
    "smsrx_inbound": (
        {"optout_events", "suppressions", "inbound_routed", "optout_activity", "schema_migrations"},
        {"optout_events", "suppressions", "inbound_routed"},
    ),
    "smsrx_reconciler": (
        {"orange_subscriptions", "schema_migrations"},
        {"orange_subscriptions"},
    ),
    "smsrx_prune": ({*PRUNED, "schema_migrations"}, PRUNED),
    "smsrx_grafana": (GRAFANA_READS, set()),
    "smsrx_watchdog": (set(), set()),
}

# Column names that hold, or may hold, something about a person.
PERSONAL = {
    "recipient",
    "recipients",
    "sender",
    "phone",
    "content",
    "raw",
    "message_id",
    "inbound_message_id",
    "reason",
    "tags",
    "key",
    "value",
    "status_event_id",
    "event_id",
}


def scram_matches(stored: str, password: str) -> bool:
    """Whether a pg_authid SCRAM-SHA-256 verifier was made from ``password`` (RFC 5802)."""
    method, _, rest = stored.partition("$")
    iterations, _, rest = rest.partition(":")
    salt, _, keys = rest.partition("$")
    server_key = keys.split(":")[1]
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    computed = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return method == "SCRAM-SHA-256" and base64.b64encode(computed).decode() == server_key


def login_url(url: str, login: str) -> str:
    """``url`` with its user replaced by ``login`` (trust authentication: no password)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{login}@{rest.split('@', 1)[1]}"


@pytest.fixture(scope="module")
async def logins(migrated: str) -> dict[str, str]:
    """A login per group role (``test_<service>``) and grafana_reader: their URLs, by group."""
    conn = await asyncpg.connect(migrated)
    try:
        for group in GROUPS:
            if group == "smsrx_grafana":
                continue
            login = group.replace("smsrx_", "test_")
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", login):
                await conn.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE "{group}"')
    finally:
        await conn.close()
    run_psql(migrated, OPS_POSTGRES / "initdb" / "grafana-reader.psql", reader_password="x")
    urls = {g: login_url(migrated, g.replace("smsrx_", "test_")) for g in GROUPS}
    urls["smsrx_grafana"] = login_url(migrated, "grafana_reader")
    return urls


def run_psql(url: str, script: Path, env: dict[str, str] | None = None, **variables: str) -> None:
    """Run an ops/postgres script with psql, as compose does."""
    argv = [Postgres.psql_path(), url, "-q", "-v", "ON_ERROR_STOP=1"]
    for name, value in variables.items():
        argv += ["-v", f"{name}={value}"]
    result = subprocess.run(
        [*argv, "-f", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr


async def denied(conn: asyncpg.Connection, sql: str, *args: object) -> None:
    """``sql`` is refused for want of a privilege."""
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute(sql, *args)


@pytest.fixture
async def connect(
    logins: dict[str, str], database_url: str
) -> AsyncIterator[Callable[[str], Awaitable[asyncpg.Connection]]]:
    """Connect as a group's login to the emptied test database; closed at teardown."""
    opened: list[asyncpg.Connection] = []

    async def open_as(group: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(logins[group])
        opened.append(conn)
        return conn

    yield open_as
    for conn in opened:
        if not conn.is_closed():
            conn.terminate()


@pytest.fixture
async def runner(settings: Settings) -> AsyncIterator[Runner]:
    """In-process workers, stopped at teardown."""
    run = Runner(settings)
    yield run
    await run.close()


# --- the roles themselves ----------------------------------------------------------------


async def test_group_roles_are_unprivileged(db: asyncpg.Connection) -> None:
    """No group role is a superuser, logs in, creates, owns anything, or may run programs or touch server files."""
    for group in GROUPS:
        role = await db.fetchrow("SELECT * FROM pg_roles WHERE rolname = $1", group)
        assert role is not None, group
        for attribute in (
            "rolsuper",
            "rolcanlogin",
            "rolcreatedb",
            "rolcreaterole",
            "rolreplication",
            "rolbypassrls",
        ):
            assert role[attribute] is False, (group, attribute)
        for dangerous in (
            "pg_execute_server_program",
            "pg_read_server_files",
            "pg_write_server_files",
            "pg_read_all_data",
            "pg_write_all_data",
            "pg_signal_backend",
        ):
            assert not await db.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", group, dangerous)
        assert not await db.fetchval("SELECT has_schema_privilege($1, 'public', 'CREATE')", group)
        assert not await db.fetchval(
            "SELECT has_database_privilege($1, current_database(), 'CREATE, TEMPORARY')", group
        )
        assert await db.fetchval(
            "SELECT has_database_privilege($1, current_database(), 'CONNECT')", group
        )
        owned = await db.fetchval(
            "SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid)"
            " + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)"
            " + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)"
            " FROM pg_roles r WHERE r.rolname = $1",
            group,
        )
        assert owned == 0, group
    assert not await db.fetchval(
        "SELECT has_database_privilege('public', current_database(), 'CONNECT, TEMPORARY')"
    )


async def test_each_role_reads_and_writes_exactly_its_tables(db: asyncpg.Connection) -> None:
    """The tables and views each role may read, and those it may change, are the ones its service uses."""
    relations = [
        r["relname"]
        for r in await db.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind IN ('r', 'v', 'p', 'm')"
        )
    ]
    for group, (reads, writes) in EXPECTED.items():
        readable, writable = set(), set()
        for name in relations:
            if await db.fetchval(
                "SELECT has_any_column_privilege($1, $2::regclass, 'SELECT')", group, name
            ):
                readable.add(name)
            if await db.fetchval(
                "SELECT has_table_privilege($1, $2::regclass, 'INSERT, DELETE, TRUNCATE') "
                "OR has_any_column_privilege($1, $2::regclass, 'UPDATE')",
                group,
                name,
            ):
                writable.add(name)
        assert readable == reads, group
        assert writable == writes, group


async def test_every_table_belongs_to_a_service(db: asyncpg.Connection) -> None:
    """Each table is granted to some service role: a migration that adds one says who uses it."""
    tables = [
        r["relname"]
        for r in await db.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind IN ('r', 'p')"
        )
    ]
    for table in tables:
        users = [
            group
            for group in GROUPS
            if await db.fetchval(
                "SELECT has_any_column_privilege($1, $2::regclass, 'SELECT, INSERT, UPDATE')",
                group,
                table,
            )
        ]
        assert users, f"{table}: no service role may use it; grant it in its migration"


@pytest.mark.parametrize("group", GROUPS)
async def test_no_role_creates_writes_elsewhere_or_runs_programs(connect, group: str) -> None:
    """COPY ... TO PROGRAM, server files, CREATE TABLE, temporary tables and large objects are refused to every role."""
    conn = await connect(group)
    await conn.execute("SET default_transaction_read_only = off")  # privileges, not defaults
    assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    await denied(conn, "COPY (SELECT 1) TO PROGRAM 'true'")
    await denied(conn, "COPY (SELECT 1) TO '/tmp/smsrx-roles-test'")
    await denied(conn, "SELECT pg_read_file('PG_VERSION')")
    await denied(conn, "CREATE TABLE smsrx_roles_test (i int)")
    await denied(conn, "CREATE TEMPORARY TABLE smsrx_roles_test (i int)")
    await denied(conn, "SELECT lo_from_bytea(0, '\\x00'::bytea)")
    await denied(conn, "SELECT lo_creat(-1)")
    await denied(conn, "CREATE SCHEMA smsrx_roles_test")


# --- each service, running its own code as its role -------------------------------------


async def test_receiver_dedups_as_its_role_and_reads_no_sms(
    connect, logins, db: asyncpg.Connection
) -> None:
    """The receiver's dedup writes and finds event ids as smsrx_receiver, which cannot read inbound SMS or anything else."""
    pool = await create_pool(logins["smsrx_receiver"], max_size=2)
    try:
        first = Dedup(pool, cache_size=10)
        first.published("ev-1", "orange", "m-1")
        first.published("ev-1", "orange", "m-1")  # ON CONFLICT DO NOTHING
        await first.close()
        second = Dedup(pool, cache_size=10)
        try:
            assert await second.seen("ev-1") is True
            assert await second.seen("ev-2") is False
        finally:
            await second.close()
    finally:
        await pool.close()
    assert await db.fetchval("SELECT count(*) FROM receiver_dedup") == 1
    conn = await connect("smsrx_receiver")
    await denied(conn, "SELECT content FROM inbound_messages")
    await denied(conn, "SELECT raw FROM status_events")
    await denied(conn, "SELECT phone FROM suppressions")
    await denied(conn, "DELETE FROM receiver_dedup")
    await denied(conn, "UPDATE receiver_dedup SET provider = 'x'")
    await denied(conn, "INSERT INTO status_events (event_id) VALUES (gen_random_uuid())")


async def test_status_projection_runs_as_its_role(
    settings_factory, runner: Runner, logins, connect, db: asyncpg.Connection
) -> None:
    """status-projection, connected as smsrx_status_projection, applies submissions, receipts and inbound SMS, publishes its outbox, expires and prunes."""
    settings = settings_factory(expiry_horizon=1.0, expiry_sweep_interval=0.3).with_(
        database_url=logins["smsrx_status_projection"]
    )
    topics = settings.topics
    now = utcnow()
    done, silent = "+2250700000001", "+2250700000002"
    await feed(settings, topics.submissions, [submission("role-1", [done, silent], now)])
    await feed(settings, topics.delivery_receipts, [receipt("role-1", done, Status.DELIVERED, now)])
    await feed(settings, topics.inbound, [inbound_sms("mo-1", done, now)])
    runner.start(runner.projection(settings))

    async def projected() -> bool:
        states = await db.fetch("SELECT recipient, status FROM recipient_status")
        return {r["recipient"]: r["status"] for r in states} == {
            done: "delivered",
            silent: "expired",  # the sweep claimed it and published a synthetic receipt
        } and bool(await db.fetchval("SELECT count(*) FROM inbound_messages"))

    await wait_for(projected, "the projection and the expiry sweep, as their role", timeout=30)
    await wait_for(
        lambda: _outbox_empty(db), "the outbox published and emptied, as its role", timeout=30
    )

    # The prune it runs every SMSRX_PRUNE_INTERVAL: everything is young, nothing goes.
    report = await PruneJob(settings).run_once()
    assert report is not None and report.deleted == 0

    conn = await connect("smsrx_status_projection")
    assert await conn.fetchval("SELECT sum(pending) FROM recipients_pending") is None
    await denied(conn, "SELECT phone FROM suppressions")
    await denied(conn, "SELECT phone FROM optout_events")
    await denied(conn, "SELECT id FROM orange_subscriptions")
    await denied(conn, "INSERT INTO receiver_dedup VALUES ('e', 'p', 'm')")
    await denied(conn, "UPDATE status_events SET raw = '{}'::json")


async def _outbox_empty(db: asyncpg.Connection) -> bool:
    return bool(await db.fetchval("SELECT count(*) = 0 FROM status_outbox"))


async def test_analytics_runs_as_its_role(
    settings_factory, runner: Runner, logins, connect, db: asyncpg.Connection
) -> None:
    """analytics, connected as smsrx_analytics, counts receipts and inbound SMS once; it cannot read a status, a number or a text."""
    settings = settings_factory().with_(database_url=logins["smsrx_analytics"])
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    receipts = [receipt(f"a-{i}", "+2250700000001", Status.SENT, now) for i in range(5)]
    await feed(settings, settings.topics.delivery_receipts, receipts + receipts[:2])
    await feed(settings, settings.topics.inbound, [inbound_sms("mo-a", "+2250700000009", now)])
    worker = runner.start(runner.analytics(settings))
    await runner.drain(worker, records=8)
    assert await db.fetchval("SELECT sum(events) FROM analytics_receipts_minute") == 5
    assert await db.fetchval("SELECT sum(messages) FROM analytics_inbound_minute") == 1
    conn = await connect("smsrx_analytics")
    assert await conn.fetchval("SELECT sum(events) FROM receipts_daily") == 5
    await denied(conn, "SELECT recipient FROM recipient_status")
    await denied(conn, "SELECT content FROM inbound_messages")
    await denied(conn, "DELETE FROM analytics_processed_events")


async def test_inbound_worker_runs_as_its_role(
    settings_factory, runner: Runner, logins, connect, db: asyncpg.Connection
) -> None:
    """The inbound worker, connected as smsrx_inbound, routes a STOP, suppresses the number and answers the read API; it never reads stored SMS."""
    settings = settings_factory().with_(database_url=logins["smsrx_inbound"])
    phone = "+2250700000042"
    now = utcnow()
    stop = InboundMessage.create(
        provider="vavasms",
        message_id="mo-stop",
        sender=phone,
        content="STOP",
        sent_at=now,
        sent_at_text=now.isoformat(),
        received_at=now,
        raw={"content": "STOP"},
    )
    worker = runner.inbound(settings)
    await feed(settings, settings.topics.inbound, [stop, stop])

    async def suppressed() -> bool:
        return bool(
            await db.fetchval("SELECT suppressed FROM suppressions WHERE phone = $1", phone)
        )

    await wait_for(suppressed, "the opt-out applied as smsrx_inbound", timeout=30)
    assert await db.fetchval("SELECT count(*) FROM inbound_routed") == 1
    async with read_api(worker) as http:
        assert (await api(http, phone))["suppressed"] is True
    conn = await connect("smsrx_inbound")
    assert await conn.fetchval("SELECT count(*) FROM optout_activity") == 1
    await denied(conn, "SELECT content FROM inbound_messages")
    await denied(conn, "SELECT recipient FROM recipient_status")
    await denied(conn, "DELETE FROM suppressions")


async def test_reconciler_store_runs_as_its_role(logins, connect, db: asyncpg.Connection) -> None:
    """Every statement of the subscriptions store works as smsrx_reconciler, which reads nothing else."""
    pool = await create_pool(logins["smsrx_reconciler"], max_size=2)
    try:
        store = SubscriptionStore(pool)
        await store.add("sub-1", "2250000", "https://example.com/dr")
        await store.add("sub-1", "2250000", "https://example.com/dr")
        await store.checked("sub-1", State.DRIFTED, observed="https://x.example", detail="drift")
        assert [s.id for s in await store.live("2250000")] == ["sub-1"]
        await store.removed("sub-1", "test")
        assert (await store.get("sub-1")).state is State.REMOVED  # type: ignore[union-attr]
        assert len(await store.all()) == 1
    finally:
        await pool.close()
    conn = await connect("smsrx_reconciler")
    await denied(conn, "SELECT phone FROM suppressions")
    await denied(conn, "DELETE FROM orange_subscriptions")


@pytest.mark.parametrize("group", ["smsrx_prune", "smsrx_status_projection"])
async def test_prune_deletes_and_erases_as_its_role(
    settings: Settings, logins, db: asyncpg.Connection, group: str
) -> None:
    """`smsrx db prune` as smsrx_prune, and status-projection (a member), delete and erase what is past retention."""
    old = utcnow() - timedelta(days=800)
    await db.execute(
        "INSERT INTO receiver_dedup (event_id, provider, message_id, published_at) "
        "VALUES ('old', 'orange', 'm', $1), ('new', 'orange', 'm', now())",
        old,
    )
    await db.execute(
        "INSERT INTO analytics_receipts_minute VALUES ($1, 'orange', 'CIV', 'sent', 3)",
        old.replace(second=0, microsecond=0),
    )
    await db.execute(
        "INSERT INTO inbound_messages (provider, message_id, event_id, sender, content, "
        "sent_at_text, received_at, raw, recorded_at) VALUES ('vavasms', 'mo-old', $1, "
        "'+2250700000001', 'secret text', '', $2, '{\"t\": 1}', $3)",
        str(uuid.uuid4()),
        old,
        utcnow() - timedelta(days=40),
    )
    conn = await connect_for_prune(logins[group])
    try:
        report = await prune(conn, policy(settings))
    finally:
        await conn.close()
    assert report is not None
    assert [r["event_id"] for r in await db.fetch("SELECT event_id FROM receiver_dedup")] == ["new"]
    assert await db.fetchval("SELECT count(*) FROM analytics_receipts_minute") == 0
    assert await db.fetchval("SELECT content FROM inbound_messages") == ""
    assert report.erased == 1


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


# --- the compose login scripts ------------------------------------------------------------


async def test_logins_script_makes_one_member_login_per_service(migrated: str) -> None:
    """ops/postgres/logins.psql creates each login in its group only, and sets the passwords again on every run."""
    passwords = {
        "PG_RECEIVER_PASSWORD": "r",
        "PG_STATUS_PROJECTION_PASSWORD": "s",
        "PG_ANALYTICS_PASSWORD": "a",
        "PG_INBOUND_PASSWORD": "i",
        "PG_RECONCILER_PASSWORD": "c",
        "PG_WATCHDOG_PASSWORD": "w",
        "GRAFANA_PG_PASSWORD": "g",
    }
    script = OPS_POSTGRES / "logins.psql"
    await asyncio.to_thread(run_psql, migrated, script, passwords)

    async def state() -> dict[str, tuple[list[str], str]]:
        conn = await asyncpg.connect(migrated)
        try:
            rows = await conn.fetch(
                "SELECT u.rolname, array_agg(g.rolname ORDER BY g.rolname) AS groups, "
                "a.rolpassword FROM pg_roles u JOIN pg_authid a ON a.oid = u.oid "
                "JOIN pg_auth_members m ON m.member = u.oid JOIN pg_roles g ON g.oid = m.roleid "
                "WHERE u.rolname LIKE '%\\_login' OR u.rolname = 'grafana_reader' "
                "GROUP BY u.rolname, a.rolpassword"
            )
        finally:
            await conn.close()
        return {r["rolname"]: (list(r["groups"]), r["rolpassword"]) for r in rows}

    before = await state()
    assert {login: groups for login, (groups, _) in before.items()} == {
        "smsrx_receiver_login": ["smsrx_receiver"],
        "smsrx_status_projection_login": ["smsrx_status_projection"],
        "smsrx_analytics_login": ["smsrx_analytics"],
        "smsrx_inbound_login": ["smsrx_inbound"],
        "smsrx_reconciler_login": ["smsrx_reconciler"],
        "smsrx_watchdog_login": ["smsrx_watchdog"],
        "grafana_reader": ["smsrx_grafana"],
    }
    await asyncio.to_thread(run_psql, migrated, script, {**passwords, "PG_INBOUND_PASSWORD": "new"})
    after = await state()
    expected = {
        "smsrx_receiver_login": "r",
        "smsrx_status_projection_login": "s",
        "smsrx_analytics_login": "a",
        "smsrx_inbound_login": "new",
        "smsrx_reconciler_login": "c",
        "smsrx_watchdog_login": "w",
        "grafana_reader": "g",
    }
    for login, password in expected.items():
        assert scram_matches(after[login][1], password), login
    assert not scram_matches(after["smsrx_inbound_login"][1], "i")
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    missing = {k: v for k, v in passwords.items() if k != "PG_WATCHDOG_PASSWORD"}
    with pytest.raises(AssertionError, match="syntax error"):
        await asyncio.to_thread(run_psql, migrated, script, missing)
