"""The poller's schedule in PostgreSQL (table ``poll_schedule``, migration 0008).

- :func:`schedule_submissions` adds a row per recipient of a new submission (a replayed
  submission changes nothing) and :func:`end_final` ends the rows of recipients whose
  status became final, pushed or polled. Both run in the consumer's batch transaction,
  so the schedule moves with the offsets it depends on.
- :func:`claim` takes the rows that are due, oldest messages first, and pushes their ``due_at``
  one lease ahead in the same statement: another poller skips them, and a poller killed
  before :func:`record` polls them once more after the lease, never losing one.
- :func:`record` writes what each poll decided (the next due time, or why it ended),
  after the receipts it produced were acknowledged by the broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

__all__ = [
    "Claimed",
    "Decision",
    "ScheduleStats",
    "claim",
    "end_final",
    "next_poll",
    "record",
    "schedule_submissions",
    "stats",
]

_INSERT = """
INSERT INTO poll_schedule (provider, message_id, recipient, submitted_at, due_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
    ON CONFLICT (provider, message_id, recipient) DO UPDATE
   SET submitted_at = coalesce(poll_schedule.submitted_at, excluded.submitted_at)
 WHERE poll_schedule.submitted_at IS NULL
"""

# A final status that arrives before its submission leaves a finished row, so that the
# submission read later schedules nothing for that recipient.
_END_FINAL = """
INSERT INTO poll_schedule AS p (provider, message_id, recipient, done_reason, done_at)
SELECT provider, message_id, recipient, 'final', $4
  FROM unnest($1::text[], $2::text[], $3::text[]) AS f(provider, message_id, recipient)
 ORDER BY 1, 2, 3
    ON CONFLICT (provider, message_id, recipient) DO UPDATE
   SET due_at = NULL, done_reason = 'final', done_at = excluded.done_at
 WHERE p.done_reason IS NULL
"""

# Whole messages: the due rows of the oldest due messages, so that a carrier answering
# for every recipient of a message in one request (Gateway SMS) is asked once for them.
_CLAIM = """
WITH messages AS (
    SELECT DISTINCT message_id
      FROM (SELECT message_id FROM poll_schedule
             WHERE provider = $1 AND due_at <= $2
             ORDER BY due_at LIMIT $4) AS oldest
), due AS (
    SELECT provider, message_id, recipient FROM poll_schedule
     WHERE provider = $1 AND due_at <= $2 AND message_id IN (SELECT message_id FROM messages)
     ORDER BY message_id, recipient FOR UPDATE SKIP LOCKED
)
UPDATE poll_schedule p SET due_at = $3
  FROM due
 WHERE (p.provider, p.message_id, p.recipient) = (due.provider, due.message_id, due.recipient)
RETURNING p.provider, p.message_id, p.recipient, p.submitted_at, p.polls, p.failures,
          p.last_provider_status
"""

_RECORD = """
UPDATE poll_schedule p
   SET due_at = d.due_at, polls = d.polls, failures = d.failures, last_polled_at = $9::timestamptz,
       last_outcome = d.outcome, last_provider_status = d.provider_status,
       done_reason = d.done_reason, done_at = CASE WHEN d.done_reason IS NULL THEN NULL
                                                   ELSE $9::timestamptz END
  FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int[], $6::int[],
              $7::text[], $8::text[], $10::text[])
       AS d(provider, message_id, recipient, due_at, polls, failures, outcome,
            provider_status, done_reason)
 WHERE (p.provider, p.message_id, p.recipient) = (d.provider, d.message_id, d.recipient)
   AND p.done_reason IS NULL
"""

_STATS = """
SELECT provider, count(*) AS pending,
       count(*) FILTER (WHERE due_at <= $1) AS due,
       coalesce(extract(epoch FROM $1 - min(due_at) FILTER (WHERE due_at <= $1)), 0)
           AS overdue
  FROM poll_schedule WHERE due_at IS NOT NULL GROUP BY provider
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A row taken for polling."""

    provider: str
    message_id: str
    recipient: str
    submitted_at: datetime | None
    polls: int
    """Polls answered so far (the step of the schedule)."""
    failures: int
    """Failed polls in a row (retry, not found)."""
    last_provider_status: str | None
    """The carrier's value at the previous poll: a receipt is published only on a change."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What one poll decided for one row."""

    row: Claimed
    outcome: str
    polls: int
    failures: int
    provider_status: str | None
    due_at: datetime | None
    """The next poll; None once polling ended."""
    done_reason: str | None = None
    """``final``, ``horizon`` or ``not_found`` once polling ended."""


@dataclass(frozen=True, slots=True)
class ScheduleStats:
    """One provider's schedule, for the gauges."""

    pending: int
    due: int
    overdue: float


def next_poll(
    schedule: Sequence[float], polls: int, now: datetime, horizon_end: datetime | None
) -> datetime | None:
    """When to poll next after ``polls`` answered polls: the schedule's delay at that step
    (its last repeating), never past the horizon; None when the horizon has passed."""
    delay = schedule[min(polls, len(schedule) - 1)]
    due = now + timedelta(seconds=delay)
    if horizon_end is not None:
        if now >= horizon_end:
            return None
        due = min(due, horizon_end)
    return due


async def schedule_submissions(
    conn: asyncpg.Connection,
    rows: Iterable[tuple[str, str, str, datetime]],
    first_delay: float,
) -> int:
    """Schedule (provider, message_id, recipient, submitted_at) rows; return how many are
    new. The first poll is due ``first_delay`` after the submission."""
    rows = sorted(set(rows))
    if not rows:
        return 0
    providers, messages, recipients, submitted = (list(c) for c in zip(*rows, strict=True))
    due = [t + timedelta(seconds=first_delay) for t in submitted]
    status = await conn.execute(_INSERT, providers, messages, recipients, submitted, due)
    return int(status.rsplit(" ", 1)[-1])


async def end_final(
    conn: asyncpg.Connection, keys: Iterable[tuple[str, str, str]], now: datetime
) -> int:
    """End polling of (provider, message_id, recipient) keys whose status is final."""
    keys = sorted(set(keys))
    if not keys:
        return 0
    providers, messages, recipients = (list(c) for c in zip(*keys, strict=True))
    status = await conn.execute(_END_FINAL, providers, messages, recipients, now)
    return int(status.rsplit(" ", 1)[-1])


async def claim(
    pool: asyncpg.Pool, provider: str, now: datetime, lease: float, limit: int
) -> list[Claimed]:
    """Take the due rows of ``provider``'s oldest due messages (``limit`` rows' worth,
    every due recipient of each) for ``lease`` seconds."""
    until = now + timedelta(seconds=lease)
    rows = await pool.fetch(_CLAIM, provider, now, until, limit)
    return [Claimed(*row) for row in rows]


async def record(pool: asyncpg.Pool, decisions: Sequence[Decision], now: datetime) -> None:
    """Write each poll's decision; rows ended meanwhile (a pushed final) stay ended."""
    if not decisions:
        return
    ordered = sorted(decisions, key=lambda d: (d.row.provider, d.row.message_id, d.row.recipient))
    await pool.execute(
        _RECORD,
        [d.row.provider for d in ordered],
        [d.row.message_id for d in ordered],
        [d.row.recipient for d in ordered],
        [d.due_at for d in ordered],
        [d.polls for d in ordered],
        [d.failures for d in ordered],
        [d.outcome for d in ordered],
        [d.provider_status for d in ordered],
        now,
        [d.done_reason for d in ordered],
    )


async def stats(pool: asyncpg.Pool, now: datetime) -> dict[str, ScheduleStats]:
    """Pending and due rows, and the most overdue, by provider."""
    rows = await pool.fetch(_STATS, now)
    return {r["provider"]: ScheduleStats(r["pending"], r["due"], float(r["overdue"])) for r in rows}
