"""What the retention tests share (tests/test_retention*.py): the default policy's
durations, one prune at a given time, and a dedup row to prune."""

from __future__ import annotations

from datetime import datetime, timedelta

from smsrx.prune import PruneReport, connect_for_prune, prune
from smsrx.retention import policy
from smsrx.settings import Settings

DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)
# The defaults: dedup 7d, processed 14d, history 90d, inbound text 30d, rollups 400d, and
# the expiry horizon 72h.
DEFAULTS = Settings()
HORIZON = timedelta(seconds=DEFAULTS.expiry_horizon)


async def prune_at(database_url: str, now: datetime, **settings: object) -> PruneReport:
    """One prune at ``now`` with the default policy, ``settings`` changed; its report."""
    conn = await connect_for_prune(database_url)
    try:
        report = await prune(conn, policy(DEFAULTS.with_(**settings)), now=now)
    finally:
        await conn.close()
    assert report is not None
    return report


def pruned_rows(report: PruneReport) -> dict[str, int]:
    """Rows deleted (or texts erased) by table, the tables with none left out."""
    return {t.name: t.rows for t in report.tables if t.rows}


async def insert_dedup(db, event_id: str, at: datetime) -> None:
    """A receiver_dedup row published at ``at``."""
    await db.execute(
        "INSERT INTO receiver_dedup (event_id, provider, message_id, published_at) "
        "VALUES ($1, 'orange', 'm', $2)",
        event_id,
        at,
    )
