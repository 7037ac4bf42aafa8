"""Least privilege in PostgreSQL (smsrx/migrations/0007_roles.sql), against the real test
database: the group roles themselves, and the compose login script.

The test database's own user is a superuser, so every check connects as a login made
here: ``test_<service>`` IN ROLE ``smsrx_<service>``, and ``grafana_reader`` made by
ops/postgres/initdb/grafana-reader.psql exactly as docker-compose makes it (the
``logins`` and ``connect`` fixtures of tests/conftest.py). Each service running its own
code as its role is in tests/test_roles_services.py, Grafana's reader in
tests/test_roles_grafana.py.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.roles_harness import (
    EXPECTED,
    GROUPS,
    OPS_POSTGRES,
    denied,
    run_psql,
    scram_matches,
)

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


# --- the compose login scripts ------------------------------------------------------------


async def test_logins_script_makes_one_member_login_per_service(migrated: str) -> None:
    """ops/postgres/logins.psql creates each login in its group only, and sets the passwords again on every run."""
    passwords = {
        "PG_RECEIVER_PASSWORD": "r",
        "PG_STATUS_PROJECTION_PASSWORD": "s",
        "PG_ANALYTICS_PASSWORD": "a",
        "PG_INBOUND_PASSWORD": "i",
        "PG_POLLER_PASSWORD": "o",
        "PG_RECONCILER_PASSWORD": "c",
        "PG_PRUNE_PASSWORD": "p",
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
        "smsrx_poller_login": ["smsrx_poller"],
        "smsrx_reconciler_login": ["smsrx_reconciler"],
        "smsrx_prune_login": ["smsrx_prune"],
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
        "smsrx_poller_login": "o",
        "smsrx_reconciler_login": "c",
        "smsrx_prune_login": "p",
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
