"""``smsrx status PROVIDER MESSAGE_ID``: a message's story, for a person or as JSON.

For each recipient: the current status, when it became final and how long it took,
then every receipt in the order it was applied, with what it did (set the status,
replaced it, or arrived late and stayed in the history only).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from consumers.projection import outranks
from smsrx import providers
from smsrx.clock import format_rfc3339
from smsrx.codec import JSON_OPTIONS
from smsrx.db import connect
from smsrx.settings import Settings
from smsrx.statuses import RANK, Status

__all__ = ["Entry", "MessageStory", "RecipientStory", "load_story", "render_text", "run_status"]


@dataclass(slots=True)
class Entry:
    """One receipt in a recipient's history, with its effect on the current status."""

    event_id: str
    status: str
    provider_status: str
    received_at: datetime
    synthetic: bool
    source: str
    """``push`` or ``poll``: how smsrx learnt it."""
    occurred_at: datetime | None
    """When the carrier says it happened, when it says."""
    effect: str
    """``set`` (first status), ``changed`` (replaced a lower one), ``same`` (same status,
    earlier receipt), ``repeat`` (same status again) or ``ignored`` (ranked below the
    status already reached: a late receipt, kept in the history only)."""
    previous: str | None
    """The current status before this receipt was applied."""


@dataclass(slots=True)
class RecipientStory:
    """One recipient: its current row and its history."""

    recipient: str
    status: str | None
    is_final: bool
    provider_status: str | None
    submitted_at: datetime | None
    first_event_at: datetime | None
    last_event_at: datetime | None
    final_at: datetime | None
    time_to_final: timedelta | None
    history: list[Entry] = field(default_factory=list)
    poll: dict[str, Any] | None = None
    """The poller's schedule for this recipient (next poll due, polls made, why it
    ended); None when it is not polled."""

    @property
    def current(self) -> Entry | None:
        """The receipt that set the current status."""
        best = None
        for entry in self.history:
            if entry.effect in ("set", "changed", "same"):
                best = entry
        return best


@dataclass(slots=True)
class MessageStory:
    """Everything smsrx knows about one message."""

    provider: str
    message_id: str
    submission: dict[str, Any] | None
    recipients: list[RecipientStory]
    inbound: dict[str, Any] | None

    @property
    def found(self) -> bool:
        """Whether anything at all is known about the message."""
        return bool(self.submission or self.recipients or self.inbound)


def _effects(rows: list[asyncpg.Record]) -> list[Entry]:
    """Replay a recipient's receipts in application order to say what each one did."""
    entries = []
    best: tuple[int, datetime, str] | None = None
    current: str | None = None
    for row in rows:
        rank = RANK[Status(row["status"])]
        me = (rank, row["received_at"], row["event_id"])
        previous = current
        if best is None:
            effect = "set"
        elif outranks(*me, *best):
            effect = "changed" if rank != best[0] else "same"
        else:
            effect = "ignored" if rank < best[0] else "repeat"
        if best is None or outranks(*me, *best):
            best, current = me, row["status"]
        entries.append(
            Entry(
                event_id=row["event_id"],
                status=row["status"],
                provider_status=row["provider_status"],
                received_at=row["received_at"],
                synthetic=row["synthetic"],
                source=row["source"],
                occurred_at=row["occurred_at"],
                effect=effect,
                previous=previous,
            )
        )
    return entries


async def load_story(conn: asyncpg.Connection, provider: str, message_id: str) -> MessageStory:
    """Read a message's submission, recipients, history and inbound record."""
    sub = await conn.fetchrow(
        "SELECT event_id, recipients, submitted_at, tags::text AS tags FROM submissions "
        "WHERE provider = $1 AND message_id = $2",
        provider,
        message_id,
    )
    states = await conn.fetch(
        "SELECT * FROM recipient_status WHERE provider = $1 AND message_id = $2 ORDER BY recipient",
        provider,
        message_id,
    )
    events = await conn.fetch(
        "SELECT event_id::text, recipient, status, provider_status, received_at, synthetic, "
        "source, occurred_at "
        "FROM status_events WHERE provider = $1 AND message_id = $2 ORDER BY recipient, seq",
        provider,
        message_id,
    )
    polls = await conn.fetch(
        "SELECT recipient, due_at AS next_poll_at, polls, failures, last_polled_at, "
        "last_outcome, done_reason, done_at FROM poll_schedule "
        "WHERE provider = $1 AND message_id = $2",
        provider,
        message_id,
    )
    poll_of = {p["recipient"]: {k: v for k, v in p.items() if k != "recipient"} for p in polls}
    mo = await conn.fetchrow(
        "SELECT event_id, sender, content, sent_at, received_at FROM inbound_messages "
        "WHERE provider = $1 AND message_id = $2",
        provider,
        message_id,
    )
    by_recipient: dict[str, list[asyncpg.Record]] = {}
    for event in events:
        by_recipient.setdefault(event["recipient"], []).append(event)
    recipients = [
        RecipientStory(
            recipient=s["recipient"],
            status=s["status"],
            is_final=s["is_final"],
            provider_status=s["provider_status"],
            submitted_at=s["submitted_at"],
            first_event_at=s["first_event_at"],
            last_event_at=s["last_event_at"],
            final_at=s["final_at"],
            time_to_final=s["time_to_final"],
            history=_effects(by_recipient.get(s["recipient"], [])),
            poll=poll_of.get(s["recipient"]),
        )
        for s in states
    ]
    submission = None
    if sub is not None:
        submission = {
            "event_id": sub["event_id"],
            "recipients": list(sub["recipients"]),
            "submitted_at": sub["submitted_at"],
            "tags": orjson.loads(sub["tags"]),
        }
    return MessageStory(
        provider=provider,
        message_id=message_id,
        submission=submission,
        recipients=recipients,
        inbound=dict(mo) if mo is not None else None,
    )


# --- text ---------------------------------------------------------------------------


def _when(moment: datetime | None, *, zone: bool = True) -> str:
    if moment is None:
        return "-"
    return format_rfc3339(moment)[:-4].replace("T", " ") + (" UTC" if zone else "")


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def _effect_text(entry: Entry) -> str:
    final = " (final)" if Status(entry.status) in _FINAL else ""
    if entry.effect == "set":
        return f"status {entry.status}{final}"
    if entry.effect == "changed":
        return f"{entry.previous} -> {entry.status}{final}"
    if entry.effect == "same":
        return f"still {entry.status} (an earlier receipt of it)"
    if entry.effect == "repeat":
        return f"still {entry.status}"
    return f"late: below {entry.previous}, history only"


_FINAL = {Status.DELIVERED, Status.FAILED, Status.EXPIRED}


def _not_reported(provider: str) -> str:
    """Why a submitted recipient has no status yet, as far as the provider explains it."""
    known = providers.PROVIDERS.get(provider)
    if known is not None and not known.polls and "receipts" not in known.push:
        return (
            f"{known.title} reports no delivery status; the expiry sweep marks it "
            "expired once SMSRX_EXPIRY_HORIZON has passed since submission"
        )
    return "no receipt yet"


def _recipient_lines(provider: str, r: RecipientStory) -> list[str]:
    if r.status is None:
        lines = [f"{r.recipient}  SENT (not final): {_not_reported(provider)}"]
    else:
        state = "final" if r.is_final else "not final"
        lines = [f"{r.recipient}  {r.status.upper()} ({state}, carrier: {r.provider_status})"]
    current = r.current
    if current is not None:
        how = "by poll (status API)" if current.source == "poll" else "by push"
        if current.synthetic:
            how = "from smsrx itself"
        carrier_time = f"; carrier time {_when(current.occurred_at)}" if current.occurred_at else ""
        lines.append(f"  learnt {how}{carrier_time}")
    if r.final_at is not None and r.time_to_final is not None:
        since = "submission" if r.submitted_at is not None else "first receipt"
        lines.append(f"  final at {_when(r.final_at)}, {_duration(r.time_to_final)} after {since}")
    if r.poll is not None:
        lines.append(f"  {_poll_text(r.poll)}")
    if r.history:
        lines.append(
            f"  {len(r.history)} receipt(s), first {_when(r.first_event_at)}, "
            f"last {_when(r.last_event_at)}"
        )
        carriers = [e.provider_status + (" *" if e.synthetic else "") for e in r.history]
        width = max(24, *(len(c) + 2 for c in carriers))
        lines.append(
            f"    {'#':>3}  {'received (UTC)':<25}{'status':<11}{'carrier status':<{width}}"
            f"{'via':<6}effect"
        )
        for n, (e, carrier) in enumerate(zip(r.history, carriers, strict=True), 1):
            lines.append(
                f"    {n:>3}  {_when(e.received_at, zone=False):<25}{e.status:<11}"
                f"{carrier:<{width}}{e.source:<6}{_effect_text(e)}"
            )
    return lines


_ENDED = {
    "final": "a final status was reached",
    "horizon": "the expiry horizon passed",
    "not_found": "the carrier did not know the message",
    "erased": "the number was erased",
}


def _poll_text(poll: dict[str, Any]) -> str:
    done = poll["done_reason"]
    made = f"{poll['polls']} poll(s) answered"
    if poll.get("failures"):
        made += f", the last {poll['failures']} request(s) failed"
    if done is not None:
        return f"polling ended {_when(poll['done_at'])}: {_ENDED.get(done, done)} ({made})"
    last = f", last {poll['last_outcome']}" if poll["last_outcome"] else ""
    return f"next poll due {_when(poll['next_poll_at'])} ({made}{last})"


def render_text(story: MessageStory) -> str:
    """The story as lines a person can follow."""
    lines = [f"{story.provider} message {story.message_id}"]
    sub = story.submission
    if sub is not None:
        tags = ", ".join(f"{k}={v}" for k, v in sorted(sub["tags"].items()))
        lines.append(
            f"submitted {_when(sub['submitted_at'])} to {len(sub['recipients'])} recipient(s)"
            + (f"  [{tags}]" if tags else "")
        )
    elif story.recipients:
        lines.append("no submission recorded (receipts arrived without one)")
    for r in story.recipients:
        lines.append("")
        lines.extend(_recipient_lines(story.provider, r))
    if story.inbound is not None:
        mo = story.inbound
        lines.append("")
        lines.append(f"inbound SMS from {mo['sender']} received {_when(mo['received_at'])}:")
        lines.append(f"  {mo['content']!r}")
    if any(e.synthetic for r in story.recipients for e in r.history):
        lines.append("")
        lines.append("* synthetic: written by smsrx (expiry sweep), not by the carrier")
    return "\n".join(lines)


# --- JSON ---------------------------------------------------------------------------


def to_json(story: MessageStory) -> dict[str, Any]:
    """The story as JSON-ready data (timestamps RFC 3339 UTC, durations in seconds)."""

    def recipient(r: RecipientStory) -> dict[str, Any]:
        return {
            "recipient": r.recipient,
            "status": r.status,
            "is_final": r.is_final,
            "provider_status": r.provider_status,
            "submitted_at": r.submitted_at,
            "first_event_at": r.first_event_at,
            "last_event_at": r.last_event_at,
            "final_at": r.final_at,
            "time_to_final_seconds": (
                r.time_to_final.total_seconds() if r.time_to_final is not None else None
            ),
            "source": r.current.source if r.current is not None else None,
            "carrier_time": r.current.occurred_at if r.current is not None else None,
            "poll": r.poll,
            "history": [
                {
                    "event_id": e.event_id,
                    "status": e.status,
                    "provider_status": e.provider_status,
                    "received_at": e.received_at,
                    "synthetic": e.synthetic,
                    "source": e.source,
                    "occurred_at": e.occurred_at,
                    "effect": e.effect,
                    "previous_status": e.previous,
                }
                for e in r.history
            ],
        }

    return {
        "provider": story.provider,
        "message_id": story.message_id,
        "submission": story.submission,
        "recipients": [recipient(r) for r in story.recipients],
        "inbound": story.inbound,
    }


async def _load(settings: Settings, provider: str, message_id: str) -> MessageStory:
    conn = await connect(settings.database_url)
    try:
        return await load_story(conn, provider, message_id)
    finally:
        await conn.close()


def run_status(settings: Settings, args: argparse.Namespace) -> int:
    """Handler of ``smsrx status``."""
    story = asyncio.run(_load(settings, args.provider, args.message_id))
    if args.json:
        option = orjson.OPT_INDENT_2 | JSON_OPTIONS
        print(orjson.dumps(to_json(story), option=option).decode())
    else:
        print(render_text(story))
    if not story.found:
        print(
            f"smsrx: nothing known about {args.provider} message {args.message_id}", file=sys.stderr
        )
        return 1
    return 0
