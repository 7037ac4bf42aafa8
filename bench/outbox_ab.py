"""Status-projection's status changes: the outbox against publishing before the commit.

Issue #11 (item 8) asks what the outbox costs PostgreSQL, against publishing each
status change to ``sms.message-status.v1`` before the database commit with its
deterministic ``event_id`` and writing no outbox row. Both variants run the
projection's own statements on the same batches, each batch in its own transaction:

- ``outbox`` (today): :func:`consumers.projection_sql.insert_receipts`,
  :func:`consumers.projection.plan_receipts`, then
  :func:`consumers.projection_sql.apply_plan`, which upserts the recipients, inserts
  the batch's changes into ``status_outbox`` and deletes the rows of the batch before
  (as if the broker had acknowledged them, as it does between two batches);
- ``direct``: the same, but the upsert alone, with no outbox insert or delete. The
  changes are encoded all the same (they would be produced before the commit); the
  produce itself costs the same in both variants and is left out.

Repetitions are interleaved (outbox, direct, direct, outbox, ...) on emptied tables; a
fifth of the receipts are sent again in a later batch, as redeliveries are. It prints
wall time, PostgreSQL CPU (``/proc``) and this process's CPU per receipt, and checks
that both variants leave the same ``recipient_status`` (a digest of every row's status
columns) and that the outbox variant left only the last batch's changes behind.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench``, ``smsrx`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from bench import pg_ab
from bench.stack import BenchStack
from consumers import projection_sql
from consumers.projection import plan_receipts
from smsrx.codec import encode
from smsrx.events import DeliveryReceipt

VARIANTS = ("outbox", "direct")


def _direct_statement() -> str:
    """The recipients' upsert of today's statement, without its outbox insert and delete."""
    statement = projection_sql._UPSERT_RECIPIENTS
    start = statement.index("INSERT INTO recipient_status")
    end = statement.index("\n), outbox AS (")
    return statement[start:end]


_DIRECT = _direct_statement()

_DIGEST = """
SELECT md5(string_agg(concat_ws('|', provider, message_id, recipient, status, provider_status,
                                status_event_id, status_at, first_event_at, last_event_at,
                                event_count), ',' ORDER BY provider, message_id, recipient))
  FROM recipient_status
"""


async def _batch(
    conn: asyncpg.Connection, variant: str, batch: list[DeliveryReceipt], published: list[int]
) -> tuple[list[int], int]:
    """Apply one batch as the projection does; return the outbox ids it wrote and its
    number of status changes."""
    distinct = list({r.event_id: r for r in reversed(batch)}.values())
    distinct.reverse()
    new, stored = await projection_sql.insert_receipts(conn, distinct)
    plan = plan_receipts(new, stored)
    if not plan.updates:
        return published, 0
    if variant == "outbox":
        rows = await projection_sql.apply_plan(conn, plan, stored, published)
        return [row[0] for row in rows], len(plan.changes)
    values = [encode(c) for c in plan.changes]  # what would be produced before the commit
    await conn.execute(_DIRECT, projection_sql._doc(projection_sql.recipient_rows(plan, stored)))
    return [], len(values)


async def _run(
    stack: BenchStack, variant: str, batches: list[list[DeliveryReceipt]]
) -> tuple[dict[str, float], str, int, int]:
    """Apply every batch; return µs per receipt (wall, PostgreSQL CPU, own CPU), the
    digest of ``recipient_status``, the changes planned and the outbox rows left."""
    await stack.truncate()
    conn = await asyncpg.connect(stack.database_url)
    changes = 0
    try:
        published: list[int] = []
        pg0 = pg_ab.postgres_cpu(stack)
        own0 = time.process_time()
        started = time.perf_counter()
        for batch in batches:
            async with conn.transaction():
                published, planned = await _batch(conn, variant, batch, published)
            changes += planned
        wall = time.perf_counter() - started
        own = time.process_time() - own0
        pg = pg_ab.postgres_cpu(stack) - pg0
        digest = await conn.fetchval(_DIGEST)
        left = await conn.fetchval("SELECT count(*) FROM status_outbox")
    finally:
        await conn.close()
    total = sum(len(b) for b in batches) / 1e6
    figures = {"wall": wall / total, "pg": pg / total, "own": own / total}
    return figures, digest, changes, left


async def _compare(stack: BenchStack, workload: pg_ab.Workload, runs: int) -> int:
    figures: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    digests: set[str] = set()
    planned: set[int] = set()
    for repetition in range(runs):
        for variant in pg_ab.interleaved(VARIANTS, repetition):
            values, digest, changes, left = await _run(stack, variant, workload.batches)
            figures[variant].append(values)
            digests.add(digest)
            planned.add(changes)
            print(
                f"repetition {repetition + 1}, {variant}: {values['wall']:.1f} µs wall, "
                f"{values['pg']:.1f} µs PostgreSQL CPU, {values['own']:.1f} µs own CPU per "
                f"receipt; {changes:,} status changes, {left:,} outbox rows left",
                flush=True,
            )
    if len(digests) != 1 or len(planned) != 1:
        raise RuntimeError(f"the variants disagree: digests {digests}, changes {planned}")
    print(
        f"\n{workload.describe(runs)}, {planned.pop():,} status changes; "
        "µs per receipt, medians (min–max)\n"
    )
    print("| variant | wall | PostgreSQL CPU | worker CPU (this process) |\n|---|---|---|---|")
    for variant, runs_of in figures.items():
        cells = [pg_ab.cell([run[name] for run in runs_of]) for name in ("wall", "pg", "own")]
        print(f"| {variant} | " + " | ".join(cells) + " |")
    return 0


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print its table."""
    pg_ab.main("bench/outbox_ab.py", __doc__ or "", _compare, argv)


if __name__ == "__main__":
    main()
