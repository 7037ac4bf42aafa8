"""What the least-privilege tests share (tests/test_roles*.py): the group roles, what each
may read and write, and helpers to log in as them, run the compose psql scripts and expect
a refusal.

The ``logins`` and ``connect`` fixtures built on these are in tests/conftest.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import warnings
from pathlib import Path

import asyncpg
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from smsrx.cli.dev.postgres import Postgres

ROOT = Path(__file__).resolve().parents[1]
OPS_POSTGRES = ROOT / "ops" / "postgres"

SERVICES = (
    "receiver",
    "status_projection",
    "analytics",
    "inbound",
    "reconciler",
    "prune",
    "poller",
)
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
    "poll_schedule",
    *ROLLUPS,
}
PROJECTION = {"submissions", "recipient_status", "status_events", "inbound_messages"}
GRAFANA_READS = {*ROLLUPS, *ANALYTICS_VIEWS, "recipients_pending", "optout_activity"}

# What each group may read and write (INSERT, DELETE, TRUNCATE or UPDATE of any column),
# group memberships included: only smsrx_prune may delete what retention prunes.
EXPECTED = {
    "smsrx_receiver": ({"receiver_dedup", "schema_migrations"}, {"receiver_dedup"}),
    "smsrx_status_projection": (
        {*PROJECTION, "status_outbox", "recipients_pending", "poll_schedule", "schema_migrations"},
        {*PROJECTION, "status_outbox"},
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
    "smsrx_poller": ({"poll_schedule", "schema_migrations"}, {"poll_schedule"}),
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
