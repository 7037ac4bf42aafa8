"""PostgreSQL: connection pools and versioned SQL migrations.

Migrations are the files ``smsrx/migrations/NNNN_name.sql``, applied in order, each in
its own transaction, under an advisory lock so that concurrent ``smsrx db migrate``
runs (one per container, say) never race. Applying them twice is harmless.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

__all__ = ["Migration", "connect", "create_pool", "migrate", "migrations"]

logger = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x736D7372  # "smsr": one advisory lock id for every smsrx deployment
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned SQL file."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with smsrx, in version order."""
    found = []
    for entry in resources.files("smsrx.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


async def connect(url: str, **kwargs: Any) -> asyncpg.Connection:
    """One connection, for commands that do a single thing."""
    return await asyncpg.connect(url, **kwargs)


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A connection pool with short statement timeouts for the hot paths."""
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, command_timeout=30, timeout=10
    )
    assert pool is not None
    return pool


async def migrate(url: str) -> list[Migration]:
    """Apply the migrations not yet applied; return those it applied."""
    conn = await connect(url)
    applied: list[Migration] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            logger.info("migration applied version=%04d name=%s", migration.version, migration.name)
            applied.append(migration)
    finally:
        await conn.close()
    return applied
