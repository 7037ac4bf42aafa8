"""The periodic prune: status-projection applies the retention policy every
``SMSRX_PRUNE_INTERVAL`` (0: never), in the background, like its expiry sweep.

Each pass is :func:`smsrx.prune.prune` on a connection of its own, never one of the
worker's pool, so the batches never wait for it; its advisory lock lets one replica (or
``smsrx db prune``) prune at a time. After a pass: the metrics
``smsrx_prune_deleted_rows_total{table}`` and ``smsrx_table_oldest_row_age_seconds{table}``
and one log line with the totals.

The age gauge is computed at each scrape from the oldest row the last pass left, so it
keeps growing between passes: a prune that stopped working shows as an age past the
table's retention, not as a frozen value.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from functools import partial

import asyncpg

from consumers import metrics
from consumers.errors import is_transient
from smsrx.prune import PruneReport, connect_for_prune, prune
from smsrx.retention import policy
from smsrx.settings import Settings

__all__ = ["PruneJob"]

logger = logging.getLogger(__name__)

_FIRST_PASS = 60.0
"""Seconds from start to the first pass (or the interval, if shorter): a worker that
restarts more often than the interval still prunes, once it has caught up a little."""


class PruneJob:
    """Prunes what is past its retention, every ``prune_interval`` seconds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules = policy(settings)

    async def run_once(self, now: datetime | None = None) -> PruneReport | None:
        """One pass; None if another prune was running (this pass is skipped)."""
        conn = await connect_for_prune(self.settings.database_url)
        try:
            report = await prune(conn, self.rules, now=now)
        finally:
            await conn.close(timeout=5)
        if report is None:
            logger.info("prune skipped: another prune is running")
            return None
        _observe(report)
        done = ", ".join(f"{t.name} {t.rows}" for t in report.tables if t.rows)
        logger.info(
            "prune: %d rows deleted, %d texts erased in %.1fs%s",
            report.deleted,
            report.erased,
            report.seconds,
            f" ({done})" if done else "",
        )
        return report

    async def run_forever(self) -> None:
        """Prune every ``prune_interval`` seconds until cancelled; a pass that fails for a
        reason that may pass (the database down, a table lock held by a migration) is
        logged and tried again at the next interval."""
        interval = self.settings.prune_interval
        delay = min(interval, _FIRST_PASS)
        while True:
            await asyncio.sleep(delay)
            delay = interval
            try:
                await self.run_once()
            except asyncpg.LockNotAvailableError as exc:
                logger.warning("prune: a table is locked, retrying in %.0fs: %s", interval, exc)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                logger.warning("prune failed, retrying in %.0fs: %r", interval, exc)


def _observe(report: PruneReport) -> None:
    passed = time.monotonic()
    for table in report.tables:
        metrics.PRUNE_DELETED.labels(table.name).inc(table.rows)
        metrics.TABLE_OLDEST_AGE.labels(table.name).set_function(
            partial(_age, table.age(report.now) if table.oldest else None, passed)
        )


def _age(at_pass: float | None, passed: float) -> float:
    return 0.0 if at_pass is None else at_pass + time.monotonic() - passed
