"""The suppression list's statements: apply opt-out events, read the numbers' states.

The current state of a number is its latest event by ``(occurred_at, event_id)``, so
the order in which events arrive never matters: a replay, a duplicate or an old
import applied after a newer change leaves the state as it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from smsrx.codec import JSON_OPTIONS
from smsrx.events import OptOut

__all__ = [
    "Suppression",
    "apply_opt_outs",
    "count_suppressed",
    "export_rows",
    "list_states",
    "lookup",
    "mark_routed",
    "state",
]

# One statement: record the events not seen before, then move each number's current
# state to its latest event when that is newer than the state it has.
_APPLY = """
WITH incoming AS (
    SELECT * FROM json_to_recordset($1::json) AS e(
        event_id uuid, phone text, action text, keyword text, provider text,
        inbound_message_id text, occurred_at timestamptz, received_at timestamptz,
        source text, reason text)
), new AS (
    INSERT INTO optout_events (event_id, phone, action, keyword, provider,
                               inbound_message_id, occurred_at, received_at, source, reason)
    SELECT event_id, phone, action, keyword, provider, inbound_message_id, occurred_at,
           received_at, source, reason
      FROM incoming
    ON CONFLICT (event_id) DO NOTHING
    RETURNING *
), latest AS (
    SELECT DISTINCT ON (phone) * FROM new ORDER BY phone, occurred_at DESC, event_id DESC
), moved AS (
    INSERT INTO suppressions AS s (phone, suppressed, keyword, source, provider, reason,
                                   occurred_at, event_id)
    SELECT phone, action = 'opt_out', keyword, source, provider, reason, occurred_at, event_id
      FROM latest
    ON CONFLICT (phone) DO UPDATE
       SET suppressed = excluded.suppressed, keyword = excluded.keyword,
           source = excluded.source, provider = excluded.provider, reason = excluded.reason,
           occurred_at = excluded.occurred_at, event_id = excluded.event_id, updated_at = now()
     WHERE (excluded.occurred_at, excluded.event_id) > (s.occurred_at, s.event_id)
    RETURNING s.phone
)
SELECT n.event_id::text AS event_id, m.phone AS moved
  FROM new n LEFT JOIN moved m ON m.phone = n.phone
"""

_MARK_ROUTED = """
INSERT INTO inbound_routed (event_id, route)
SELECT * FROM unnest($1::uuid[], $2::text[])
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id::text
"""

_LOOKUP = """
SELECT phone, suppressed, keyword, source, occurred_at FROM suppressions
 WHERE phone = ANY($1::text[])
"""

_STATE = """
SELECT phone, suppressed, occurred_at, keyword, source, reason FROM suppressions WHERE phone = $1
"""

# A number's state as ``smsrx optouts list`` and ``export`` show it.
_ROWS = """
SELECT phone, suppressed, occurred_at, keyword, source, reason, event_id::text AS event_id
  FROM suppressions
"""


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying a batch of opt-out events did."""

    new: frozenset[str]
    """event_ids recorded for the first time."""
    moved: int
    """Numbers whose current state changed."""


@dataclass(frozen=True, slots=True)
class Suppression:
    """A number's current state."""

    phone: str
    suppressed: bool
    since: datetime | None
    """When the latest change happened (its ``occurred_at``)."""
    keyword: str | None
    source: str | None


def _doc(events: Sequence[OptOut]) -> str:
    rows = [
        {
            "event_id": e.event_id,
            "phone": e.phone,
            "action": e.action.value,
            "keyword": e.keyword,
            "provider": e.provider,
            "inbound_message_id": e.inbound_message_id,
            "occurred_at": e.occurred_at,
            "received_at": e.received_at,
            "source": e.source.value,
            "reason": e.reason,
        }
        for e in events
    ]
    return orjson.dumps(rows, option=JSON_OPTIONS).decode()


async def apply_opt_outs(conn: asyncpg.Connection, events: Sequence[OptOut]) -> Applied:
    """Record ``events`` (each once) and move the numbers they concern to their latest."""
    if not events:
        return Applied(frozenset(), 0)
    rows = await conn.fetch(_APPLY, _doc(events))
    moved = len({row["moved"] for row in rows if row["moved"] is not None})
    return Applied(frozenset(row["event_id"] for row in rows), moved)


async def mark_routed(conn: asyncpg.Connection, routes: Sequence[tuple[str, str]]) -> set[str]:
    """Record inbound messages as routed; return the event_ids not routed before."""
    if not routes:
        return set()
    ids = [event_id for event_id, _ in routes]
    rows = await conn.fetch(_MARK_ROUTED, ids, [route for _, route in routes])
    return {row["event_id"] for row in rows}


async def lookup(
    conn: asyncpg.Connection | asyncpg.Pool, phones: Sequence[str]
) -> dict[str, Suppression]:
    """The current state of each of ``phones`` that has one."""
    rows = await conn.fetch(_LOOKUP, list(phones))
    return {
        row["phone"]: Suppression(
            row["phone"], row["suppressed"], row["occurred_at"], row["keyword"], row["source"]
        )
        for row in rows
    }


async def count_suppressed(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """How many numbers are suppressed now."""
    return int(await conn.fetchval("SELECT count(*) FROM suppressions WHERE suppressed"))


async def state(conn: asyncpg.Connection, phone: str) -> asyncpg.Record | None:
    """``phone``'s current state with its reason, or None if it never had one."""
    rows = await conn.fetch(_STATE, phone)
    return rows[0] if rows else None


async def list_states(
    conn: asyncpg.Connection,
    *,
    since: datetime | None,
    all_numbers: bool,
    limit: int | None,
) -> list[asyncpg.Record]:
    """The suppressed numbers (``all_numbers``: every number) newest change first.

    ``since``: only the numbers whose latest change happened then or later; ``limit``:
    at most this many.
    """
    where = [] if all_numbers else ["suppressed"]
    params: list[object] = []
    if since is not None:
        params.append(since)
        where.append(f"occurred_at >= ${len(params)}")
    query = _ROWS + (f" WHERE {' AND '.join(where)}" if where else "")
    query += " ORDER BY occurred_at DESC, phone"
    if limit is not None:
        params.append(limit)
        query += f" LIMIT ${len(params)}"
    rows: list[asyncpg.Record] = await conn.fetch(query, *params)
    return rows


async def export_rows(
    conn: asyncpg.Connection, *, all_numbers: bool
) -> AsyncIterator[asyncpg.Record]:
    """The suppressed numbers (``all_numbers``: every number) ordered by number, streamed.

    A server-side cursor: iterate it inside a transaction of ``conn``.
    """
    query = _ROWS + ("" if all_numbers else " WHERE suppressed") + " ORDER BY phone"
    async for row in conn.cursor(query, prefetch=10_000):
        yield row
