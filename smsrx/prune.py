"""Pruning: the rows :mod:`smsrx.retention` says are due, deleted (or their text erased)
in small batches that never hold a lock for long.

- Each batch is one statement on at most ``batch_size`` rows (5,000), committed on its
  own: its row locks last milliseconds. Rows a worker has locked right now are skipped
  (``SKIP LOCKED``); a later pass takes them. The rows are found through an index on the
  rule's column (``smsrx/migrations/0006_retention.sql``), never by scanning the table.
- A session advisory lock lets one prune run at a time, whoever starts it (``smsrx db
  prune`` by hand, or ``smsrx db prune --every``); the other gets ``None`` at once.
- The connection (:func:`connect_for_prune`) waits at most 5 s for a table lock (a
  migration, say) and then fails, rather than queue the workers behind it.

:func:`prune` returns what it did as data (:class:`PruneReport`); the command line turns
it into text, :mod:`smsrx.prune_job` into metrics and a log line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from smsrx.clock import format_rfc3339, utcnow
from smsrx.db import connect, is_transient_db_error
from smsrx.retention import Action, Rule

__all__ = ["BATCH_SIZE", "PRUNE_LOCK", "PruneReport", "TableReport", "connect_for_prune", "prune"]

logger = logging.getLogger(__name__)

BATCH_SIZE = 5000
"""Rows per statement: a few milliseconds of row locks (docs/operations.md)."""

PRUNE_LOCK = 0x736D7270  # "smrp"
"""The advisory lock a prune holds, the same for every deployment."""

# Oldest first, through the index on the column: a sequential scan would read the rows
# the batches before deleted again, every batch, until VACUUM.
_DUE = (
    "SELECT ctid FROM {table} WHERE {column} < $1 AND ({scope}) AND ({guard}) "
    "ORDER BY {column} LIMIT $2 FOR UPDATE SKIP LOCKED"
)
# A TID scan of the rows just locked: the statement never reads the table otherwise.
_DELETE = "DELETE FROM {table} WHERE ctid = ANY (ARRAY(" + _DUE + "))"
_ERASE = "UPDATE {table} SET {erase} WHERE ctid = ANY (ARRAY(" + _DUE + "))"
_COUNT = "SELECT count(*) FROM {table} WHERE {column} < $1 AND ({scope}) AND ({guard})"
_OLDEST = "SELECT min({column}) FROM {table} WHERE {scope}"


@dataclass(frozen=True, slots=True)
class TableReport:
    """What a prune did to one table (or to the texts of ``inbound_messages``)."""

    name: str
    """The rule's label: the table, or ``inbound_messages.text``."""
    action: Action
    rows: int
    """Rows deleted, or texts erased; in a dry run, those due now."""
    keep: timedelta
    """How long its rows are kept (the longest, for a table with several rules)."""
    setting: str
    """The variable that sets ``keep``."""
    oldest: datetime | None
    """The oldest row left, by the column its retention counts from; None: no row."""

    def age(self, now: datetime) -> float:
        """Seconds between the oldest row left and ``now`` (0 without a row)."""
        return 0.0 if self.oldest is None else max(0.0, (now - self.oldest).total_seconds())


@dataclass(frozen=True, slots=True)
class PruneReport:
    """One prune pass, table by table, in the order they were pruned."""

    now: datetime
    """The time the retention was counted back from."""
    dry_run: bool
    tables: tuple[TableReport, ...]
    seconds: float
    """How long the pass took."""

    @property
    def deleted(self) -> int:
        """Rows deleted (due, in a dry run)."""
        return sum(t.rows for t in self.tables if t.action is Action.DELETE)

    @property
    def erased(self) -> int:
        """Texts erased (due, in a dry run)."""
        return sum(t.rows for t in self.tables if t.action is Action.ERASE)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``smsrx db prune --json``)."""
        return {
            "now": format_rfc3339(self.now),
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
            "deleted": self.deleted,
            "erased": self.erased,
            "tables": [
                {
                    "table": t.name,
                    "action": t.action.value,
                    "rows": t.rows,
                    "keep_seconds": t.keep.total_seconds(),
                    "setting": t.setting,
                    "oldest": None if t.oldest is None else format_rfc3339(t.oldest),
                    "oldest_age_seconds": None if t.oldest is None else t.age(self.now),
                }
                for t in self.tables
            ],
        }


async def connect_for_prune(url: str) -> asyncpg.Connection:
    """A connection of its own for one prune, never one of a worker's pool."""
    return await connect(
        url,
        server_settings={
            "application_name": "smsrx prune",
            "lock_timeout": "5s",
            # Plan every batch with its cutoff: a generic plan of "column < $1" may pick
            # a sequential scan, and the last batch of each rule would read the table.
            "plan_cache_mode": "force_custom_plan",
        },
    )


def _sql(template: str, rule: Rule) -> str:
    return template.format(
        table=rule.table,
        column=rule.column,
        scope=rule.scope,
        guard=rule.guard,
        erase=rule.erase,
    )


async def _apply(
    conn: asyncpg.Connection, rule: Rule, now: datetime, batch_size: int, dry_run: bool
) -> int:
    cutoff = rule.cutoff(now)
    if dry_run:
        count: int = await conn.fetchval(_sql(_COUNT, rule), cutoff)
        return count
    args: tuple[Any, ...] = (cutoff, batch_size)
    if rule.action is Action.ERASE:
        sql, args = _sql(_ERASE, rule), (*args, now)
    else:
        sql = _sql(_DELETE, rule)
    total = 0
    while True:
        status = await conn.execute(sql, *args)  # autocommit: one transaction per batch
        done = int(status.rsplit(" ", 1)[-1])
        total += done
        if done < batch_size:
            return total


async def prune(
    conn: asyncpg.Connection,
    rules: tuple[Rule, ...],
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
) -> PruneReport | None:
    """Apply ``rules`` at ``now`` (default: the current time), in order; return what was
    done, or None if another prune holds the lock. ``dry_run`` counts what is due and
    changes nothing (each rule counted before the others run, so a submission whose
    recipients are due is not counted yet). ``conn`` must not be in a transaction."""
    now = now or utcnow()
    started = time.perf_counter()
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK):
        return None
    # A table's rules are reported together: as its first, with the longest keep.
    first: dict[str, Rule] = {}
    keep: dict[str, timedelta] = {}
    rows: dict[str, int] = {}
    left: dict[str, list[datetime]] = {}
    try:
        for rule in rules:
            name = rule.label
            first.setdefault(name, rule)
            keep[name] = max(keep.get(name, rule.keep), rule.keep)
            done = await _apply(conn, rule, now, batch_size, dry_run)
            rows[name] = rows.get(name, 0) + done
            oldest = await conn.fetchval(_sql(_OLDEST, rule))
            left.setdefault(name, []).extend([oldest] if oldest is not None else [])
            logger.debug("prune %s: %s %d before %s", name, rule.action, done, rule.cutoff(now))
    finally:
        await _unlock(conn)
    tables = tuple(
        TableReport(
            name, rule.action, rows[name], keep[name], rule.setting, min(left[name], default=None)
        )
        for name, rule in first.items()
    )
    return PruneReport(now, dry_run, tables, time.perf_counter() - started)


async def _unlock(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK)
    except Exception as exc:
        if not is_transient_db_error(exc):
            raise
        # A broken connection: the lock went with its session.
        logger.debug("prune: unlock failed: %r", exc)
