"""``smsrx optouts ...``: read and change the suppression list (docs/inbound.md).

- ``check +E164``: may this number be messaged? Read from ``suppressions``;
- ``add`` and ``remove``: publish one manual opt-out or opt-in to ``sms.opt-outs.v1``;
- ``list`` and ``export``: the current state of the numbers, as text, JSON or CSV;
- ``import FILE``: publish a CSV file's rows as opt-out events, idempotently.

Changes are events, never writes: the inbound worker (``smsrx consumer inbound``)
applies them to the suppression list like a keyword's, latest ``occurred_at`` first, so a
change never races a person's own STOP or START. Reads go to PostgreSQL.

The parser is built at every ``smsrx`` start, so each handler imports
:mod:`consumers.optouts_commands` (and through it the client libraries) only when its
task runs, as ``smsrx subscriptions`` does.
"""

from __future__ import annotations

import argparse
import textwrap
from datetime import datetime, timedelta
from typing import Any

from consumers.optouts_csv import CHUNK, EPOCH, PROGRESS_EVERY
from smsrx.clock import parse_rfc3339, utcnow
from smsrx.events import OptOutAction
from smsrx.settings import ConfigError, Settings, parse_duration

__all__ = ["add_command"]


# --- help ---------------------------------------------------------------------------

_OPTOUTS_EPILOG = """\
Changes (add, remove, import) are published to sms.opt-outs.v1 and applied by the inbound
worker (smsrx consumer inbound), which also answers GET /v1/optouts/{e164}. Each number's
state is its latest event by occurred_at, whatever the order events arrive in.

exit status: 0 done (check: may be messaged); 1 import skipped rows; 2 bad arguments or
input; 3 check: suppressed; 4 broker or database unreachable; 5 the broker has no
idempotent producer while SMSRX_KAFKA_IDEMPOTENCE is on.
"""
_CHECK_EPILOG = """\
example:
  smsrx optouts check +2250700000001
  +2250700000001: suppressed since 2026-12-02T10:00:00.000000Z (keyword ARRET)
  smsrx optouts check +2250700000001 --json

Exit status: 0 may be messaged (never opted out, or opted back in), 3 suppressed,
2 not a phone number.
"""
_CHANGE_EPILOG = """\
example:
  smsrx optouts {name} +2250700000001 --reason "{example}"

The event's id comes from the number, the action, the moment and the reason, and it is
keyed by the number. The change takes effect once the inbound worker has applied it;
'smsrx optouts check' then shows it.
"""
_LIST_EPILOG = """\
example:
  smsrx optouts list --since 7d
  smsrx optouts list --all --since 2026-12-01T00:00:00Z --json | jq '.[].phone'
"""
_EXPORT_EPILOG = """\
example:
  smsrx optouts export > suppressed.csv
  smsrx optouts export --all | gzip > optouts-$(date +%F).csv.gz

Columns: phone,action,occurred_at,keyword,source,reason,event_id; action is the
number's current state (opt_out: suppressed). 'smsrx optouts import' reads it back
with the same event ids, so importing an export anywhere gives the same states.
"""
_IMPORT_EPILOG = """\
example:
  smsrx optouts import crm-stop-list.csv --reason "CRM list of 2026-12"
  printf 'phone,action\\n+2250700000001,opt_out\\n' | smsrx optouts import -

The file is CSV with a header line. Only 'phone' is required; other columns, and any
column not listed here, may be absent:
  phone        the number, international form (+225..., 225..., tel:+225...)
  action       opt_out (default) or opt_in
  occurred_at  RFC 3339: when the person asked; default --occurred-at
  reason       why; default --reason
  event_id     a UUID (an export's); default: derived from the row (below)

Importing the same file twice changes nothing and records no history twice: a row
without event_id gets the id of (phone, action, occurred_at, reason), so the same row
is the same event every time. That is why occurred_at cannot default to now: a row
without one is dated 1970-01-01T00:00:00Z, older than any real change, so an import
never overrides what a person later said by keyword (STOP, START) and only adds the
numbers not yet known. To make rows count as of a date, give occurred_at in the file
or --occurred-at (then a later keyword still wins).

Rows with an unusable phone, action, occurred_at or event_id are reported on stderr
with their line number and skipped. Exit status 0 when no row was skipped, 1 otherwise.
If the broker fails part way, run the same import again: it is idempotent.
"""


# --- the parser ---------------------------------------------------------------------


def add_command(sub: Any) -> None:
    """Register ``optouts`` and its tasks on the ``smsrx`` parser."""
    parser = sub.add_parser(
        "optouts",
        help="the suppression list: check, add, remove, list, export, import",
        description=textwrap.fill(
            "Check and change who must not be messaged (opt-outs). Checks read the suppression "
            "list in PostgreSQL; changes are events on sms.opt-outs.v1. See docs/inbound.md.",
            88,
        ),
        epilog=_OPTOUTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = parser.add_subparsers(dest="optouts", metavar="TASK", required=True)

    def task(name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = tasks.add_parser(
            name,
            help=help,
            description=textwrap.fill(description, 88),
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return made

    check = task(
        "check",
        "may this number be messaged?",
        "Print a number's state in the suppression list: suppressed since when and by what, "
        "or that it may be messaged. --json prints what GET /v1/optouts/{e164} answers.",
        _CHECK_EPILOG,
    )
    check.add_argument("phone", metavar="+E164", help="the number, international form")
    check.add_argument("--json", action="store_true", help="print the read API's JSON body")
    check.set_defaults(handler=_check, one_shot=True)

    changes = (
        ("add", OptOutAction.OPT_OUT, "suppress a number (a manual opt-out)", "asked by phone"),
        ("remove", OptOutAction.OPT_IN, "lift a suppression (a manual opt-in)", "asked by email"),
    )
    for name, action, help, example in changes:
        change = task(
            name,
            help,
            f"Publish one {action.value} event (source api) for the number to sms.opt-outs.v1, "
            "dated now.",
            _CHANGE_EPILOG.format(name=name, example=example),
        )
        change.add_argument("phone", metavar="+E164", help="the number, international form")
        change.add_argument(
            "--reason",
            required=True,
            type=_text,
            metavar="TEXT",
            help="why; kept with the event (required)",
        )
        change.set_defaults(handler=_change, action=action, one_shot=True)

    listing = task(
        "list",
        "the suppressed numbers, newest change first",
        "List the suppressed numbers (with --all, every number ever seen) with when their "
        "latest change happened, its keyword, source and reason, newest first.",
        _LIST_EPILOG,
    )
    listing.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only changes since an RFC 3339 time, or a duration ago (7d, 12h, 30m)",
    )
    listing.add_argument("--all", action="store_true", help="opted-in numbers too")
    listing.add_argument("--limit", type=_positive, metavar="N", help="at most N numbers")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(handler=_list, one_shot=True)

    export = task(
        "export",
        "the current state of every suppressed number, as CSV",
        "Write CSV to stdout: one row per suppressed number (with --all, per number ever "
        "seen), ordered by number, in the format 'smsrx optouts import' reads.",
        _EXPORT_EPILOG,
    )
    export.add_argument("--all", action="store_true", help="opted-in numbers too")
    export.set_defaults(handler=_export, one_shot=True)

    importing = task(
        "import",
        "publish a CSV file of opt-outs and opt-ins (idempotent)",
        "Publish one api event per row of a CSV file (or stdin: -) to sms.opt-outs.v1, "
        f"{CHUNK:,} at a time, with progress on stderr every {PROGRESS_EVERY:,} rows.",
        _IMPORT_EPILOG,
    )
    importing.add_argument("file", metavar="FILE", help="the CSV file, or - for stdin")
    importing.add_argument(
        "--reason",
        type=_text,
        metavar="TEXT",
        help="reason of the rows that give none (part of their event id)",
    )
    importing.add_argument(
        "--occurred-at",
        type=_moment,
        default=EPOCH,
        metavar="RFC3339",
        help="occurred_at of the rows that give none (default 1970-01-01T00:00:00Z: never "
        "overrides a later change)",
    )
    importing.set_defaults(handler=_import, one_shot=True)


def _text(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value.strip()


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number >= 1")
    return int(value)


def _moment(value: str) -> datetime:
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected RFC 3339, e.g. 2026-03-02T09:00:00Z"
        ) from None


def _since(value: str) -> datetime:
    """An RFC 3339 time, or a duration (``7d``) before now."""
    try:
        return parse_rfc3339(value)
    except ValueError:
        pass
    try:
        return utcnow() - timedelta(seconds=parse_duration("--since", value))
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected RFC 3339 (2026-12-01T00:00:00Z) or a duration (7d, 12h, 30m)"
        ) from None


# --- the handlers, imported when their task runs ------------------------------------


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.optouts_commands import run_check

    return run_check(settings, args)


def _change(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.optouts_commands import run_change

    return run_change(settings, args)


def _list(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.optouts_commands import run_list

    return run_list(settings, args)


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.optouts_commands import run_export

    return run_export(settings, args)


def _import(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.optouts_commands import run_import

    return run_import(settings, args)
