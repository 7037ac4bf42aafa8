"""``smsrx optouts ...``: read and change the suppression list (docs/inbound.md).

- ``check +E164``: may this number be messaged? Read from ``suppressions``;
- ``add`` and ``remove``: publish one manual opt-out or opt-in to ``sms.opt-outs.v1``;
- ``list`` and ``export``: the current state of the numbers, as text, JSON or CSV;
- ``import FILE``: publish a CSV file's rows as opt-out events, idempotently.

Changes are events, never writes: the inbound worker (``smsrx consumer inbound``)
applies them to the suppression list like a keyword's, latest ``occurred_at`` first, so a
change never races a person's own STOP or START. Reads go to PostgreSQL.

The parser is built at every ``smsrx`` start, so the client libraries are imported only
inside the tasks that use them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

from smsrx.clock import format_rfc3339, parse_rfc3339, utcnow
from smsrx.errors import EXIT_UNREACHABLE, EXIT_USAGE, SmsrxError
from smsrx.events import OptOut, OptOutAction
from smsrx.settings import ConfigError, Settings, parse_duration

if TYPE_CHECKING:
    import asyncpg
    from aiokafka import AIOKafkaProducer

__all__ = [
    "CSV_COLUMNS",
    "EPOCH",
    "OptOutsInputError",
    "ImportInterrupted",
    "Skipped",
    "add_command",
    "read_events",
]

EXIT_SUPPRESSED = 3
"""``smsrx optouts check``: the number is suppressed."""
CSV_COLUMNS = ("phone", "action", "occurred_at", "keyword", "source", "reason", "event_id")
"""The header of ``export``; ``import`` needs only ``phone`` and ignores unknown columns."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""``occurred_at`` of an imported row that gives none: older than any real change."""
CHUNK = 5000
"""Rows published at once by ``import``."""
PROGRESS_EVERY = 10_000
"""``import`` reports its progress on stderr every this many rows."""


class OptOutsInputError(SmsrxError):
    """A number, a file or an option given to ``smsrx optouts`` is unusable."""

    exit_code = EXIT_USAGE


class ImportInterrupted(SmsrxError):
    """The broker stopped answering part way through an import."""

    exit_code = EXIT_UNREACHABLE


@dataclass(frozen=True, slots=True)
class Skipped:
    """A row of an imported file that is not published."""

    line: int
    """Its line number in the file (the header is line 1)."""
    why: str


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
    check.set_defaults(handler=_run_check, one_shot=True)

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
        change.set_defaults(handler=_run_change, action=action, one_shot=True)

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
    listing.set_defaults(handler=_run_list, one_shot=True)

    export = task(
        "export",
        "the current state of every suppressed number, as CSV",
        "Write CSV to stdout: one row per suppressed number (with --all, per number ever "
        "seen), ordered by number, in the format 'smsrx optouts import' reads.",
        _EXPORT_EPILOG,
    )
    export.add_argument("--all", action="store_true", help="opted-in numbers too")
    export.set_defaults(handler=_run_export, one_shot=True)

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
    importing.set_defaults(handler=_run_import, one_shot=True)


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


def _e164(text: str) -> str:
    from smsrx.phones import InvalidPhoneNumber, to_e164

    try:
        return to_e164(text)
    except InvalidPhoneNumber as exc:
        raise OptOutsInputError(f"{text!r} is not a phone number: {exc}") from None


# --- check --------------------------------------------------------------------------

_STATE = """
SELECT phone, suppressed, occurred_at, keyword, source, reason FROM suppressions WHERE phone = $1
"""


def _run_check(settings: Settings, args: argparse.Namespace) -> int:
    phone = _e164(args.phone)
    row = asyncio.run(_fetch(settings, _STATE, phone))
    state = row[0] if row else None
    if args.json:
        import orjson

        from consumers.optouts_api import answer
        from consumers.optouts_sql import Suppression

        found = None
        if state is not None:
            found = Suppression(
                phone, state["suppressed"], state["occurred_at"], state["keyword"], state["source"]
            )
        sys.stdout.write(orjson.dumps(answer(phone, found)).decode() + "\n")
    else:
        sys.stdout.write(f"{phone}: {_state_text(state)}\n")
    return EXIT_SUPPRESSED if state is not None and state["suppressed"] else 0


def _state_text(state: Any) -> str:
    if state is None:
        return "may be messaged (never opted out)"
    since = format_rfc3339(state["occurred_at"])
    why = f"keyword {state['keyword']}" if state["keyword"] else f"{state['source']}"
    if state["reason"]:
        why += f": {state['reason']}"
    if state["suppressed"]:
        return f"suppressed since {since} ({why})"
    return f"may be messaged (opted back in {since}, {why})"


# --- add, remove --------------------------------------------------------------------


def _run_change(settings: Settings, args: argparse.Namespace) -> int:
    phone = _e164(args.phone)
    now = utcnow()
    event = OptOut.manual(
        phone=phone, action=args.action, occurred_at=now, received_at=now, reason=args.reason
    )
    topic, partition, offset = asyncio.run(_publish_one(settings, event))
    sys.stdout.write(
        f"published {event.action.value} {event.event_id} for {phone} -> "
        f"{topic}[{partition}]@{offset}\n"
        "the inbound worker (smsrx consumer inbound) applies it to the suppression list\n"
    )
    return 0


async def _publish_one(settings: Settings, event: OptOut) -> tuple[str, int, int]:
    from smsrx.codec import encode

    topic = settings.topics.opt_outs
    async with _producer(settings) as producer:
        meta = await producer.send_and_wait(topic, encode(event), key=event.key)
    return topic, int(meta.partition), int(meta.offset)


@contextlib.asynccontextmanager
async def _producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer (``acks=all``), stopped on the way out."""
    from smsrx.kafka import make_producer, start_producer, stop_bounded

    producer = make_producer(settings)
    await start_producer(producer, settings)
    try:
        yield producer
    finally:
        await stop_bounded(producer, settings.kafka_send_timeout)


# --- list, export -------------------------------------------------------------------

_ROWS = """
SELECT phone, suppressed, occurred_at, keyword, source, reason, event_id::text AS event_id
  FROM suppressions
"""


def _run_list(settings: Settings, args: argparse.Namespace) -> int:
    where = [] if args.all else ["suppressed"]
    params: list[Any] = []
    if args.since is not None:
        params.append(args.since)
        where.append(f"occurred_at >= ${len(params)}")
    query = _ROWS + (f" WHERE {' AND '.join(where)}" if where else "")
    query += " ORDER BY occurred_at DESC, phone"
    if args.limit is not None:
        params.append(args.limit)
        query += f" LIMIT ${len(params)}"
    rows = asyncio.run(_fetch(settings, query, *params))
    if args.json:
        import orjson

        docs = [
            {
                "phone": r["phone"],
                "suppressed": r["suppressed"],
                "since": format_rfc3339(r["occurred_at"]),
                "keyword": r["keyword"],
                "source": r["source"],
                "reason": r["reason"],
                "event_id": r["event_id"],
            }
            for r in rows
        ]
        sys.stdout.write(orjson.dumps(docs, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    sys.stdout.write("".join(line + "\n" for line in _table(rows)))
    what = "number(s)" if args.all else "suppressed number(s)"
    since = f" changed since {format_rfc3339(args.since)}" if args.since else ""
    sys.stderr.write(f"{len(rows):,} {what}{since}\n")
    return 0


def _table(rows: list[Any]) -> Iterator[str]:
    if not rows:
        return
    yield f"{'phone':<17}{'state':<12}{'since (UTC)':<25}{'keyword':<12}{'source':<9}reason"
    for r in rows:
        state = "suppressed" if r["suppressed"] else "opted in"
        since = format_rfc3339(r["occurred_at"])[:-4].replace("T", " ")
        yield (
            f"{r['phone']:<17}{state:<12}{since:<25}{r['keyword'] or '-':<12}"
            f"{r['source']:<9}{r['reason'] or '-'}"
        )


async def _fetch(settings: Settings, query: str, *params: Any) -> list[Any]:
    async with _database(settings) as conn:
        rows: list[Any] = await conn.fetch(query, *params)
        return rows


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """One connection; a database without the suppression tables says to migrate it."""
    import asyncpg

    from smsrx.db import connect

    conn = await connect(settings.database_url)
    try:
        yield conn
    except asyncpg.UndefinedTableError as exc:
        raise SmsrxError(f"{exc}: the database is not migrated; run 'smsrx db migrate'") from exc
    finally:
        await conn.close()


def _run_export(settings: Settings, args: argparse.Namespace) -> int:
    query = _ROWS + ("" if args.all else " WHERE suppressed") + " ORDER BY phone"
    count = asyncio.run(_export(settings, query, sys.stdout))
    sys.stderr.write(f"{count:,} number(s) exported\n")
    return 0


async def _export(settings: Settings, query: str, out: IO[str]) -> int:
    """Stream the rows of ``query`` as CSV to ``out``; return how many."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    async with _database(settings) as conn, conn.transaction():
        async for r in conn.cursor(query, prefetch=10_000):
            action = OptOutAction.OPT_OUT if r["suppressed"] else OptOutAction.OPT_IN
            writer.writerow(
                (
                    r["phone"],
                    action.value,
                    format_rfc3339(r["occurred_at"]),
                    r["keyword"] or "",
                    r["source"],
                    r["reason"] or "",
                    r["event_id"],
                )
            )
            count += 1
    return count


# --- import -------------------------------------------------------------------------


def read_events(
    lines: Iterable[str],
    *,
    received_at: datetime,
    occurred_at: datetime = EPOCH,
    reason: str | None = None,
) -> Iterator[OptOut | Skipped]:
    """The api events of a CSV file's rows, or why a row is skipped; pure.

    ``occurred_at`` and ``reason`` are the defaults of rows without them. The same row
    always gives the same ``event_id``: its own, else that of (phone, action, occurred_at,
    reason), as :meth:`OptOut.manual` derives it.
    """
    reader = csv.reader(lines)
    header = next(reader, None)
    # A byte order mark survives on stdin (files are opened as utf-8-sig).
    columns = {name.strip().lstrip("\ufeff").lower(): i for i, name in enumerate(header or ())}
    if "phone" not in columns:
        raise OptOutsInputError(
            "the first line must be a CSV header naming at least the 'phone' column"
        )

    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        cells = {name: row[i].strip() for name, i in columns.items() if i < len(row)}
        try:
            yield _event(cells, received_at, occurred_at, reason)
        except ValueError as exc:
            yield Skipped(reader.line_num, str(exc))


def _event(
    cells: dict[str, str], received_at: datetime, occurred_at: datetime, reason: str | None
) -> OptOut:
    """The event of one row (``cells`` by column name); ValueError says what is wrong."""
    from smsrx.phones import InvalidPhoneNumber, to_e164

    def cell(name: str) -> str:
        return cells.get(name, "")

    text = cell("phone")
    try:
        phone = to_e164(text)
    except InvalidPhoneNumber as exc:
        raise ValueError(f"phone {text!r}: {exc}") from None
    text = cell("action")
    try:
        action = OptOutAction(text.lower() or OptOutAction.OPT_OUT)
    except ValueError:
        raise ValueError(f"action {text!r}: expected opt_out or opt_in") from None
    text = cell("occurred_at")
    try:
        moment = parse_rfc3339(text) if text else occurred_at
    except ValueError:
        raise ValueError(
            f"occurred_at {text!r}: expected RFC 3339, e.g. 2026-03-02T09:00:00Z"
        ) from None
    event = OptOut.manual(
        phone=phone,
        action=action,
        occurred_at=moment,
        received_at=received_at,
        reason=cell("reason") or reason,
    )
    text = cell("event_id")
    if text:
        try:
            event = replace(event, event_id=str(uuid.UUID(text)))
        except ValueError:
            raise ValueError(f"event_id {text!r}: expected a UUID") from None
    return event


@dataclass(slots=True)
class _Progress:
    rows: int = 0
    published: int = 0
    skipped: int = 0

    def line(self) -> str:
        return f"{self.rows:,} rows read, {self.published:,} published, {self.skipped:,} skipped"


def _run_import(settings: Settings, args: argparse.Namespace) -> int:
    if args.file == "-":
        progress = asyncio.run(_import(settings, sys.stdin, args))
    else:
        try:
            source = open(args.file, newline="", encoding="utf-8-sig")
        except OSError as exc:
            raise OptOutsInputError(f"cannot read {args.file!r}: {exc.strerror or exc}") from None
        with source:
            progress = asyncio.run(_import(settings, source, args))
    sys.stdout.write(
        f"published {progress.published:,}, skipped {progress.skipped:,} "
        f"({progress.rows:,} rows) to {settings.topics.opt_outs}; "
        "the inbound worker (smsrx consumer inbound) applies them\n"
    )
    return 0 if progress.skipped == 0 else 1


async def _import(settings: Settings, lines: Iterable[str], args: argparse.Namespace) -> _Progress:
    from smsrx.codec import encode

    progress = _Progress()
    topic = settings.topics.opt_outs
    name = "stdin" if args.file == "-" else args.file
    events = read_events(
        lines, received_at=utcnow(), occurred_at=args.occurred_at, reason=args.reason
    )
    async with _producer(settings) as producer:
        chunk: list[tuple[str, bytes, bytes]] = []
        for item in events:
            progress.rows += 1
            if isinstance(item, Skipped):
                progress.skipped += 1
                sys.stderr.write(f"{name}, line {item.line}: {item.why} (skipped)\n")
            else:
                chunk.append((topic, item.key, encode(item)))
            if len(chunk) >= CHUNK:
                await _publish_chunk(settings, producer, chunk, progress)
                chunk = []
            if progress.rows % PROGRESS_EVERY == 0:
                sys.stderr.write(f"smsrx optouts import: {progress.line()}\n")
        await _publish_chunk(settings, producer, chunk, progress)
    return progress


async def _publish_chunk(
    settings: Settings,
    producer: AIOKafkaProducer,
    chunk: list[tuple[str, bytes, bytes]],
    progress: _Progress,
) -> None:
    from aiokafka.errors import KafkaError

    from smsrx.produce import produce_all

    if not chunk:
        return
    try:
        async with asyncio.timeout(max(10.0, settings.kafka_send_timeout * 2)):
            await produce_all(producer, chunk)
    except (KafkaError, TimeoutError) as exc:
        raise ImportInterrupted(
            f"the broker at {settings.kafka_bootstrap} failed after {progress.published:,} "
            f"events were published ({type(exc).__name__}: {exc}); the import is idempotent: "
            "run it again"
        ) from exc
    progress.published += len(chunk)
