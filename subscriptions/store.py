"""The subscriptions we made, in PostgreSQL (table ``orange_subscriptions``, migration 0004).

Orange returns an id per subscribe and never lists them, so this table is the only
place they are remembered. A row's ``state`` is what we last learnt about it:

- ``active``: registered with this row's URL, at the last subscribe or check;
- ``drifted``: Orange posts receipts for this id to another URL (``observed_notify_url``);
- ``unknown``: Orange answered 404 for this id;
- ``removed``: we unsubscribed it, or a newer subscription replaced it (``detail`` says which).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

from smsrx.db import create_pool

__all__ = ["State", "StoredSubscription", "SubscriptionStore", "open_store"]


class State(StrEnum):
    """What we last learnt about a subscription id."""

    ACTIVE = "active"
    DRIFTED = "drifted"
    UNKNOWN = "unknown"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    """One row of ``orange_subscriptions``."""

    id: str
    """Orange's subscription id."""
    sender: str
    """The sender number it was made with, without '+'."""
    notify_url: str
    """The callback URL we registered."""
    state: State
    """See the module docstring."""
    detail: str | None
    """Why the row is in its state, for people."""
    observed_notify_url: str | None
    """The URL Orange reported at the last check, when it differed."""
    created_at: datetime
    """When we subscribed."""
    last_checked_at: datetime | None
    """When Orange last told us about this id."""
    removed_at: datetime | None
    """When the row became ``removed``."""

    @classmethod
    def from_row(cls, row: Any) -> StoredSubscription:
        """Build from an asyncpg record."""
        return cls(**{**dict(row), "state": State(row["state"])})


_COLUMNS = (
    "id, sender, notify_url, state, detail, observed_notify_url, "
    "created_at, last_checked_at, removed_at"
)


class SubscriptionStore:
    """Reads and writes ``orange_subscriptions`` through a connection pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def add(self, subscription_id: str, sender: str, notify_url: str) -> StoredSubscription:
        """Record a subscription Orange has just created (again, if it reused the id)."""
        row = await self.pool.fetchrow(
            f"""INSERT INTO orange_subscriptions (id, sender, notify_url, last_checked_at)
                VALUES ($1, $2, $3, now())
                ON CONFLICT (id) DO UPDATE SET
                    sender = EXCLUDED.sender, notify_url = EXCLUDED.notify_url,
                    state = 'active', detail = NULL, observed_notify_url = NULL,
                    created_at = now(), last_checked_at = now(), removed_at = NULL
                RETURNING {_COLUMNS}""",
            subscription_id,
            sender,
            notify_url,
        )
        return StoredSubscription.from_row(row)

    async def get(self, subscription_id: str) -> StoredSubscription | None:
        """The row of ``subscription_id``, if we have one."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM orange_subscriptions WHERE id = $1", subscription_id
        )
        return StoredSubscription.from_row(row) if row else None

    async def live(self, sender: str) -> list[StoredSubscription]:
        """Rows of ``sender`` not yet removed, newest first: the first is the current one."""
        rows = await self.pool.fetch(
            f"""SELECT {_COLUMNS} FROM orange_subscriptions
                WHERE sender = $1 AND state <> 'removed'
                ORDER BY created_at DESC, id""",
            sender,
        )
        return [StoredSubscription.from_row(row) for row in rows]

    async def all(self) -> list[StoredSubscription]:
        """Every row, newest first."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM orange_subscriptions ORDER BY created_at DESC, id"
        )
        return [StoredSubscription.from_row(row) for row in rows]

    async def checked(
        self, subscription_id: str, state: State, *, observed: str | None, detail: str | None
    ) -> None:
        """Record what a check of ``subscription_id`` found."""
        await self.pool.execute(
            """UPDATE orange_subscriptions
               SET state = $2, observed_notify_url = $3, detail = $4, last_checked_at = now()
               WHERE id = $1 AND state <> 'removed'""",
            subscription_id,
            state.value,
            observed,
            detail,
        )

    async def removed(self, subscription_id: str, detail: str) -> None:
        """Mark ``subscription_id`` as removed, saying why."""
        await self.pool.execute(
            """UPDATE orange_subscriptions
               SET state = 'removed', detail = $2, removed_at = now()
               WHERE id = $1 AND state <> 'removed'""",
            subscription_id,
            detail,
        )


@asynccontextmanager
async def open_store(database_url: str) -> AsyncIterator[SubscriptionStore]:
    """A store on a small pool of its own, closed on exit."""
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        yield SubscriptionStore(pool)
    finally:
        await pool.close()
