"""``smsrx db prune [--dry-run] [--json]``: apply the retention policy once, by hand;
``smsrx db prune --every DURATION``: the periodic prune, a process of its own.

The policy is :mod:`smsrx.retention`; the batches and the lock are :mod:`smsrx.prune`;
the loop and its metrics are :mod:`smsrx.prune_job`. This module turns one report into
a table or JSON. Exit 0 when the pass ran (or, with --every, on SIGTERM), 1 when another
prune holds the lock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from smsrx.errors import EXIT_FAILED, EXIT_USAGE, SmsrxError
from smsrx.settings import ConfigError, Settings, parse_duration

if TYPE_CHECKING:
    from smsrx.prune import PruneReport

__all__ = ["add_command"]

logger = logging.getLogger(__name__)

_EPILOG = """\
examples:
  smsrx db prune --dry-run        what is past its retention now, table by table
  smsrx db prune                  delete it (5,000 rows per statement, each committed)
  smsrx db prune --json | jq '.tables[] | select(.rows > 0)'
  smsrx db prune --every 1h       a pass now, then every hour, until SIGTERM

Each retention is a setting ('smsrx --help' lists the defaults): SMSRX_RETAIN_DEDUP
(receiver dedup rows), SMSRX_RETAIN_PROCESSED (ids of events counted or routed),
SMSRX_RETAIN_HISTORY (receipt history, finished recipients' status, submissions, inbound
SMS metadata), SMSRX_RETAIN_INBOUND_TEXT (then an inbound SMS's text is erased, its row
kept), SMSRX_RETAIN_ROLLUPS (analytics rollups). The suppression list (suppressions,
optout_events) is never pruned.

With --every the command keeps running: one log line per pass, and the metrics
smsrx_prune_deleted_rows_total{table} and smsrx_table_oldest_row_age_seconds{table} on
SMSRX_PRUNE_METRICS_PORT. Run it as the smsrx_prune role, which no other service holds.
One prune runs at a time: a pass that finds another running is skipped.

A dry run counts each table as it is now: it leaves out the submissions whose recipients
are due (they go once those are gone), and counts as erasures the texts of inbound SMS
due for deletion.
Exit status: 0 done (with --every: stopped by SIGTERM), 1 another prune is running (or
a table stayed locked 5 s, by a migration say), 4 the database cannot be reached.
"""


def add_command(db: Any) -> None:
    """Register ``prune`` on the ``smsrx db`` parser."""
    prune = db.add_parser(
        "prune",
        help="delete what is past its retention (safe beside running workers)",
        description="Delete the rows of SMSRX_DATABASE_URL past their retention, and erase the "
        "text of inbound SMS past SMSRX_RETAIN_INBOUND_TEXT, in small batches that never hold "
        "a lock for long; then print, per table, the rows deleted and the age of the oldest "
        "row left.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prune.add_argument("--dry-run", action="store_true", help="count what is due; change nothing")
    prune.add_argument("--json", action="store_true", help="print JSON instead of a table")
    prune.add_argument(
        "--every",
        type=_interval,
        metavar="DURATION",
        help="keep running: a pass now, then one every DURATION (30m, 1h), until SIGTERM "
        "(default: one pass, then exit)",
    )
    prune.set_defaults(handler=_run, one_shot=True)


def _interval(text: str) -> float:
    try:
        seconds = parse_duration("--every", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the interval must be more than zero")
    return seconds


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if args.every is not None:
        if args.dry_run or args.json:
            print("smsrx db prune: --every runs passes, not --dry-run or --json", file=sys.stderr)
            return EXIT_USAGE
        asyncio.run(_prune_every(settings, args.every))
        return 0
    report = asyncio.run(_prune(settings, dry_run=args.dry_run))
    if report is None:
        print(
            "smsrx db prune: another prune is running ('smsrx db prune', by hand or --every); "
            "try again later",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        print()
    else:
        _print(report)
    return 0


async def _prune(settings: Settings, *, dry_run: bool) -> PruneReport | None:
    import asyncpg

    from smsrx.prune import connect_for_prune, prune
    from smsrx.retention import policy

    conn = await connect_for_prune(settings.database_url)
    try:
        return await prune(conn, policy(settings), dry_run=dry_run)
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as exc:
        raise SmsrxError(f"{exc}: the database is not migrated; run 'smsrx db migrate'") from exc
    except asyncpg.LockNotAvailableError as exc:
        raise SmsrxError(
            f"{exc} (a migration?); what was pruned so far stays pruned: try again"
        ) from exc
    finally:
        await conn.close()


async def _prune_every(settings: Settings, every: float) -> None:
    """Serve the metrics, prune every ``every`` seconds; return on SIGTERM or SIGINT."""
    import asyncpg

    from smsrx.metrics import start_metrics_server
    from smsrx.prune_job import PruneJob

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = await start_metrics_server("prune", settings.metrics_host, settings.prune_metrics_port)
    logger.info("prune every %gs until SIGTERM", every)
    try:
        await PruneJob(settings).run_every(every, stop)
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as exc:
        raise SmsrxError(f"{exc}: the database is not migrated; run 'smsrx db migrate'") from exc
    finally:
        await runner.cleanup()
    logger.info("prune stopped")


def _span(seconds: float) -> str:
    """``90d``, ``3d 4h``, ``5h 12m``, ``42s``: the two largest units."""
    left = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])


def _print(report: PruneReport) -> None:
    from smsrx.retention import Action

    verbs = {Action.DELETE: "deleted", Action.ERASE: "erased"}
    if report.dry_run:
        verbs = {Action.DELETE: "would delete", Action.ERASE: "would erase"}
    rows = [
        (
            t.name,
            f"{verbs[t.action]} {t.rows}",
            f"{_span(t.keep.total_seconds())} ({t.setting})",
            "-" if t.oldest is None else _span(t.age(report.now)),
        )
        for t in report.tables
    ]
    header = ("table", "rows", "kept", "oldest row" if report.dry_run else "oldest left")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    if report.dry_run:
        print(
            f"\ndry run, nothing changed: {report.deleted} rows would be deleted and "
            f"{report.erased} inbound texts erased"
        )
    else:
        print(
            f"\n{report.deleted} rows deleted, {report.erased} inbound texts erased "
            f"in {report.seconds:.1f}s"
        )
    print("never pruned: suppressions, optout_events (the suppression list keeps every number)")
