"""Set-based SQL of analytics: the dedup check and one upsert per rollup table.

Rows are sent sorted by primary key and the tables are written in a fixed order, so
two analytics workers adding to the same rows lock them in the same order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from consumers.rollups import Tally

__all__ = ["mark_processed", "write_tally"]

_MARK = """
INSERT INTO analytics_processed_events (event_id)
SELECT value::uuid FROM json_array_elements_text($1::json)
    ON CONFLICT (event_id) DO NOTHING
RETURNING event_id::text
"""

_RECEIPTS = """
INSERT INTO analytics_receipts_minute AS t (minute, provider, country, status, events)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bigint[])
    ON CONFLICT (minute, provider, country, status)
    DO UPDATE SET events = t.events + excluded.events
"""

_INBOUND = """
INSERT INTO analytics_inbound_minute AS t (minute, provider, country, messages)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[])
    ON CONFLICT (minute, provider, country)
    DO UPDATE SET messages = t.messages + excluded.messages
"""

_OUTCOMES = """
INSERT INTO analytics_outcomes_minute AS t (minute, provider, country, status, recipients)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bigint[])
    ON CONFLICT (minute, provider, country, status)
    DO UPDATE SET recipients = t.recipients + excluded.recipients
"""

_LATENCY = """
INSERT INTO analytics_latency_hour AS t (hour, provider, country, since, status, le, samples)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::float8[], $7::bigint[])
    ON CONFLICT (hour, provider, country, since, status, le)
    DO UPDATE SET samples = t.samples + excluded.samples
"""


async def mark_processed(conn: asyncpg.Connection, event_ids: Sequence[str]) -> set[str]:
    """Record event ids as counted; return those never counted before."""
    # One JSON document rather than a uuid[]: asyncpg type-checks every array element.
    rows = await conn.fetch(_MARK, orjson.dumps(list(event_ids)).decode())
    return {row["event_id"] for row in rows}


def _columns(counts: Counter[Any]) -> list[list[Any]]:
    keys = sorted(key for key, count in counts.items() if count)
    columns: list[list[Any]] = [list(column) for column in zip(*keys, strict=True)]
    columns.append([counts[key] for key in keys])
    return columns


async def write_tally(conn: asyncpg.Connection, tally: Tally) -> None:
    """Add a tally's increments to the rollup tables."""
    for sql, counts in (
        (_RECEIPTS, tally.receipts),
        (_INBOUND, tally.inbound),
        (_OUTCOMES, tally.outcomes),
        (_LATENCY, tally.latency),
    ):
        columns = _columns(counts)
        if columns[-1]:
            await conn.execute(sql, *columns)
