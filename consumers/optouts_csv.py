"""The CSV files of ``smsrx optouts export`` and ``import``: rows to events and back, pure.

:func:`read_events` turns the lines of an imported file into opt-out events (or the
reason a row is skipped); :func:`export_row` turns a number's current state into the
row ``export`` writes under :data:`CSV_COLUMNS`. Neither opens a file, a connection or
a producer: they work on the iterables and rows they are given.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from smsrx.clock import format_rfc3339, parse_rfc3339
from smsrx.errors import EXIT_USAGE, SmsrxError
from smsrx.events import OptOut, OptOutAction

__all__ = [
    "CHUNK",
    "CSV_COLUMNS",
    "EPOCH",
    "PROGRESS_EVERY",
    "OptOutsInputError",
    "Skipped",
    "export_row",
    "read_events",
]

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


@dataclass(frozen=True, slots=True)
class Skipped:
    """A row of an imported file that is not published."""

    line: int
    """Its line number in the file (the header is line 1)."""
    why: str


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


def export_row(state: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``export`` row (under :data:`CSV_COLUMNS`) of a number's current state.

    ``state`` has the columns of :func:`consumers.optouts_sql.export_rows`; the action
    is the state (``opt_out``: suppressed), so :func:`read_events` reads it back as the
    same event.
    """
    action = OptOutAction.OPT_OUT if state["suppressed"] else OptOutAction.OPT_IN
    return (
        state["phone"],
        action.value,
        format_rfc3339(state["occurred_at"]),
        state["keyword"] or "",
        state["source"],
        state["reason"] or "",
        state["event_id"],
    )
