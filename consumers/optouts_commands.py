"""The work behind each ``smsrx optouts`` task (imported only when one runs).

Each ``run_*`` is a handler of :mod:`smsrx.cli` (settings, parsed arguments -> exit
code); :mod:`consumers.optouts_cli` imports this module inside its handlers, so that
building the parser loads neither the database client nor the producer (the producer
and the phone number library are imported only by the tasks that use them). Changes are
published to ``sms.opt-outs.v1``; reads go to PostgreSQL through
:mod:`consumers.optouts_sql`; the files are :mod:`consumers.optouts_csv`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import asyncpg

from consumers import optouts_sql
from consumers.optouts_csv import (
    CHUNK,
    CSV_COLUMNS,
    PROGRESS_EVERY,
    OptOutsInputError,
    Skipped,
    export_row,
    read_events,
)
from smsrx.clock import format_rfc3339, utcnow
from smsrx.codec import encode
from smsrx.db import connect
from smsrx.errors import EXIT_UNREACHABLE, SmsrxError
from smsrx.events import OptOut
from smsrx.settings import Settings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

__all__ = [
    "EXIT_SUPPRESSED",
    "ImportInterrupted",
    "run_change",
    "run_check",
    "run_export",
    "run_import",
    "run_list",
]

EXIT_SUPPRESSED = 3
"""``smsrx optouts check``: the number is suppressed."""


class ImportInterrupted(SmsrxError):
    """The broker stopped answering part way through an import."""

    exit_code = EXIT_UNREACHABLE


def _e164(text: str) -> str:
    from smsrx.phones import InvalidPhoneNumber, to_e164

    try:
        return to_e164(text)
    except InvalidPhoneNumber as exc:
        raise OptOutsInputError(f"{text!r} is not a phone number: {exc}") from None


# --- check --------------------------------------------------------------------------


def run_check(settings: Settings, args: argparse.Namespace) -> int:
    """``check``: print a number's state; exit 3 when it is suppressed."""
    phone = _e164(args.phone)
    state = asyncio.run(_state(settings, phone))
    if args.json:
        import orjson

        from consumers.optouts_api import answer

        found = None
        if state is not None:
            found = optouts_sql.Suppression(
                phone, state["suppressed"], state["occurred_at"], state["keyword"], state["source"]
            )
        sys.stdout.write(orjson.dumps(answer(phone, found)).decode() + "\n")
    else:
        sys.stdout.write(f"{phone}: {_state_text(state)}\n")
    return EXIT_SUPPRESSED if state is not None and state["suppressed"] else 0


async def _state(settings: Settings, phone: str) -> Any:
    async with _database(settings) as conn:
        return await optouts_sql.state(conn, phone)


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


def run_change(settings: Settings, args: argparse.Namespace) -> int:
    """``add`` and ``remove``: publish one manual opt-out or opt-in, dated now."""
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


def run_list(settings: Settings, args: argparse.Namespace) -> int:
    """``list``: the numbers' states, newest change first, as a table or JSON."""
    rows = asyncio.run(_list(settings, args))
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


async def _list(settings: Settings, args: argparse.Namespace) -> list[Any]:
    async with _database(settings) as conn:
        return await optouts_sql.list_states(
            conn, since=args.since, all_numbers=args.all, limit=args.limit
        )


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


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """One connection; a database without the suppression tables says to migrate it."""
    conn = await connect(settings.database_url)
    try:
        yield conn
    except asyncpg.UndefinedTableError as exc:
        raise SmsrxError(f"{exc}: the database is not migrated; run 'smsrx db migrate'") from exc
    finally:
        await conn.close()


def run_export(settings: Settings, args: argparse.Namespace) -> int:
    """``export``: the numbers' states as CSV on stdout, ordered by number."""
    count = asyncio.run(_export(settings, args.all, sys.stdout))
    sys.stderr.write(f"{count:,} number(s) exported\n")
    return 0


async def _export(settings: Settings, all_numbers: bool, out: IO[str]) -> int:
    """Stream the states as CSV to ``out``; return how many."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    async with _database(settings) as conn, conn.transaction():
        async for r in optouts_sql.export_rows(conn, all_numbers=all_numbers):
            writer.writerow(export_row(r))
            count += 1
    return count


# --- import -------------------------------------------------------------------------


@dataclass(slots=True)
class _Progress:
    rows: int = 0
    published: int = 0
    skipped: int = 0

    def line(self) -> str:
        return f"{self.rows:,} rows read, {self.published:,} published, {self.skipped:,} skipped"


def run_import(settings: Settings, args: argparse.Namespace) -> int:
    """``import``: publish a CSV file's rows; exit 1 when a row was skipped."""
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
