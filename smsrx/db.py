"""PostgreSQL: connection pools, versioned SQL migrations, and what a failure means.

Migrations are the files ``smsrx/migrations/NNNN_name.sql``, applied in order, each in
its own transaction, under an advisory lock so that concurrent ``smsrx db migrate``
runs (one per container, say) never race. Applying them twice is harmless.

Two questions about a database failure, answered here once for every service:

- is it a database failure at all? :data:`DB_ERRORS`, for code that carries on without
  the database (receiver-side dedup) or reports the failure and goes on (a reconcile
  pass);
- may the same work succeed later? :func:`is_transient_db_error`, for code that retries
  (the workers); anything else is the data itself or a bug, and retrying cannot help.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

__all__ = [
    "DB_ERRORS",
    "Migration",
    "connect",
    "create_pool",
    "is_transient_db_error",
    "migrate",
    "migrations",
]

logger = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x736D7372  # "smsr": one advisory lock id for every smsrx deployment
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

DB_ERRORS = (
    asyncpg.PostgresError,  # every SQLSTATE the server answers with
    asyncpg.InterfaceError,  # asyncpg refused: connection closed, pool closing
    asyncpg.InternalClientError,  # the protocol's state, a statement cache gone stale
    OSError,  # the socket: refused, reset, no route; TimeoutError (command_timeout)
)
"""Everything PostgreSQL, asyncpg or the way to the server raises."""

_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError (refused, reset), TimeoutError, socket.gaierror
    asyncpg.PostgresConnectionError,  # class 08: the connection failed or was lost
    asyncpg.InterfaceError,  # the connection closed under us, the pool is closing
    # asyncpg's protocol state after the server ended the session mid-operation (seen as
    # "cannot switch to state 11" on a terminated backend): a new connection works.
    asyncpg.InternalClientError,
    asyncpg.exceptions.TransactionRollbackError,  # class 40: serialization failure, deadlock
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, starting up, cancelled
)

_NEVER_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.ClientConfigurationError,  # a bad URL or option: the same every time
    asyncpg.UnsupportedClientFeatureError,
    asyncpg.UnsupportedServerFeatureError,
)


def is_transient_db_error(exc: BaseException) -> bool:
    """Whether the same database work may succeed if tried again later.

    True for a server that is down, restarting, out of connections or resources, for a
    lost connection, and for a transaction PostgreSQL rolled back to resolve a conflict
    (40001 serialization failure, 40P01 deadlock). False for what retrying cannot
    change: the data (class 22, such as 22P05 untranslatable character; class 23), the
    schema or the query (a missing table, a syntax error), and our own configuration.
    """
    return isinstance(exc, _TRANSIENT) and not isinstance(exc, _NEVER_TRANSIENT)


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
