"""The periodic prune: ``smsrx db prune --every DURATION``, a process of its own that
applies the retention policy at start and then every DURATION until SIGTERM, as the
``smsrx_prune`` role and no other (docs/operations.md, "Least privilege").

Each pass is :func:`smsrx.prune.prune` on a connection of its own; its advisory lock
lets one prune (another replica, or ``smsrx db prune`` by hand) run at a time. After a
pass: the metrics below, served on ``SMSRX_PRUNE_METRICS_PORT``, and one log line.

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
from prometheus_client import Counter, Gauge

from smsrx.db import is_transient_db_error
from smsrx.prune import PruneReport, connect_for_prune, prune
from smsrx.retention import policy
from smsrx.settings import Settings

__all__ = ["PRUNE_DELETED", "TABLE_OLDEST_AGE", "PruneJob"]

logger = logging.getLogger(__name__)

PRUNE_DELETED = Counter(
    "smsrx_prune_deleted_rows_total",
    "Rows deleted past their retention, by table (inbound_messages.text: texts erased)",
    ["table"],
)
TABLE_OLDEST_AGE = Gauge(
    "smsrx_table_oldest_row_age_seconds",
    "Age of a table's oldest row, by the time its retention counts from, as the last prune "
    "pass left it (it keeps ageing until the next pass)",
    ["table"],
)


class PruneJob:
    """Prunes what is past its retention: once, or every so often until stopped."""

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

    async def run_every(self, every: float, stop: asyncio.Event) -> None:
        """A pass now, then one every ``every`` seconds (start to start), until ``stop`` is
        set. A pass still running then gets ``shutdown_timeout`` to finish and is then
        cancelled (what its batches deleted stays deleted). A pass that fails for a reason
        that may pass (the database down, a table locked by a migration) is logged and
        tried again at the next one; any other error ends the loop."""
        while not stop.is_set():
            started = time.monotonic()
            current = asyncio.create_task(self._pass(every), name="prune-pass")
            stopping = asyncio.create_task(stop.wait(), name="prune-stop")
            await asyncio.wait({current, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not current.done():
                try:
                    await asyncio.wait_for(current, self.settings.shutdown_timeout)
                except TimeoutError:
                    logger.warning("prune: pass cancelled on stop, the next one resumes it")
                return
            current.result()
            left = every - (time.monotonic() - started)
            if left > 0:
                try:
                    await asyncio.wait_for(stop.wait(), left)
                except TimeoutError:
                    pass

    async def _pass(self, every: float) -> None:
        try:
            await self.run_once()
        except asyncpg.LockNotAvailableError as exc:
            logger.warning("prune: a table is locked, retrying in %.0fs: %s", every, exc)
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise
            logger.warning("prune failed, retrying in %.0fs: %r", every, exc)


def _observe(report: PruneReport) -> None:
    passed = time.monotonic()
    for table in report.tables:
        PRUNE_DELETED.labels(table.name).inc(table.rows)
        TABLE_OLDEST_AGE.labels(table.name).set_function(
            partial(_age, table.age(report.now) if table.oldest else None, passed)
        )


def _age(at_pass: float | None, passed: float) -> float:
    return 0.0 if at_pass is None else at_pass + time.monotonic() - passed
