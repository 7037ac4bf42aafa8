"""Status-projection's history write: today's JSON statement against binary COPY.

Issue #11 asks whether writing the history by COPY would lower PostgreSQL's cost per
receipt. Both variants do exactly what the projection needs of the statement: insert
every distinct receipt into ``status_events`` (``ON CONFLICT (event_id) DO NOTHING`` is
the exactly-once check), say which were already there, and read the stored state of
each recipient with new receipts. They differ only in how the rows reach PostgreSQL:

- ``json``: today's :func:`consumers.projection_sql.insert_receipts`, one
  ``json_to_recordset`` document per batch;
- ``copy``: asyncpg's binary ``copy_records_to_table`` into a temporary table, then the
  same statement reading from it.

Each repetition runs both, interleaved (json, copy, copy, json, ...), on the same
campaign of receipts in batches of 5,000, each in its own transaction, on emptied
tables; a fifth of the receipts are sent twice, in a later batch, as redeliveries
are. It prints wall time and PostgreSQL CPU (``/proc``) per receipt, and checks that
both variants stored the same number of rows.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench``, ``smsrx`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import orjson

from bench import pg_ab
from bench.stack import BenchStack
from consumers import projection_sql
from smsrx.events import DeliveryReceipt

VARIANTS = ("json", "copy")

_COLUMNS = (
    "event_id uuid, provider text, message_id text, recipient text, status text, "
    "provider_status text, synthetic boolean, received_at timestamptz, raw json, "
    "source text, occurred_at timestamptz"
)
_STAGING = f"CREATE TEMP TABLE IF NOT EXISTS history_in ({_COLUMNS}) ON COMMIT DELETE ROWS"


def _copy_statement() -> str:
    """Today's statement, reading its input from the staging table."""
    statement = projection_sql._INSERT_RECEIPTS
    start = statement.index("SELECT *")
    end = statement.index("), inserted AS")
    return statement[:start] + "SELECT * FROM history_in\n" + statement[end:]


_INSERT_FROM_STAGING = _copy_statement()


def _record(r: DeliveryReceipt) -> tuple[object, ...]:
    return (
        uuid.UUID(r.event_id),
        r.provider,
        r.message_id,
        r.recipient,
        r.status.value,
        r.provider_status,
        r.synthetic,
        r.received_at,
        orjson.dumps(r.raw).decode(),
        r.source,
        r.occurred_at,
    )


async def _json(conn: asyncpg.Connection, batch: Sequence[DeliveryReceipt]) -> None:
    await projection_sql.insert_receipts(conn, batch)


async def _copy(conn: asyncpg.Connection, batch: Sequence[DeliveryReceipt]) -> None:
    await conn.execute(_STAGING)
    await conn.copy_records_to_table("history_in", records=[_record(r) for r in batch])
    await conn.fetch(_INSERT_FROM_STAGING)


async def _run(
    stack: BenchStack, variant: str, batches: list[list[DeliveryReceipt]]
) -> tuple[float, float, int]:
    """Write every batch; return (µs of wall time, µs of PostgreSQL CPU) per receipt, and
    the rows stored."""
    await stack.truncate()
    write = _json if variant == "json" else _copy
    conn = await asyncpg.connect(stack.database_url)
    try:
        cpu0 = pg_ab.postgres_cpu(stack)
        started = time.perf_counter()
        for batch in batches:
            async with conn.transaction():
                await write(conn, batch)
        wall = time.perf_counter() - started
        cpu = pg_ab.postgres_cpu(stack) - cpu0
        stored = await conn.fetchval("SELECT count(*) FROM status_events")
    finally:
        await conn.close()
    total = sum(len(b) for b in batches)
    return wall / total * 1e6, cpu / total * 1e6, stored


async def _compare(stack: BenchStack, workload: pg_ab.Workload, runs: int) -> int:
    figures: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    stored: set[int] = set()
    for repetition in range(runs):
        for variant in pg_ab.interleaved(VARIANTS, repetition):
            wall, cpu, rows = await _run(stack, variant, workload.batches)
            figures[variant].append((wall, cpu))
            stored.add(rows)
            print(
                f"repetition {repetition + 1}, {variant}: {wall:.1f} µs wall, "
                f"{cpu:.1f} µs PostgreSQL CPU per receipt ({rows:,} rows stored)",
                flush=True,
            )
    if len(stored) != 1:
        raise RuntimeError(f"the variants stored different counts: {sorted(stored)}")
    print(f"\n{workload.describe(runs)}; medians (min–max)\n")
    print("| variant | wall µs per receipt | PostgreSQL CPU µs per receipt |\n|---|---|---|")
    for variant, values in figures.items():
        walls = [w for w, _ in values]
        cpus = [c for _, c in values]
        print(f"| {variant} | {pg_ab.cell(walls)} | {pg_ab.cell(cpus)} |")
    return 0


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print its table."""
    pg_ab.main("bench/history_ab.py", __doc__ or "", _compare, argv)


if __name__ == "__main__":
    main()
