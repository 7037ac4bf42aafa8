"""The retention policy: which rows of which table go, counted from which column, after how
long. Pure data and arithmetic, no I/O: :mod:`smsrx.prune` runs it.

Every rule counts from a time PostgreSQL wrote itself (``recorded_at``, ``updated_at``,
``processed_at``...) wherever a table has one, never from a time carried by an event
alone: a receipt replayed from a spool, or a fixture dated months ago, must not look old.
The rollups have no such column; their ``minute`` or ``hour`` is what they are about.

What a worker still needs is never due:

- the receiver's dedup rows, for ``SMSRX_RETAIN_DEDUP``, longer than carriers retry;
- the ids of events counted or routed (``analytics_processed_events``, ``inbound_routed``),
  and the receipt history (``status_events``, status-projection's own dedup), at least as
  long as a topic keeps its records (``SMSRX_TOPIC_RETENTION``; the settings refuse less),
  so that a replay is still recognised;
- a recipient's current status, while its message is within the expiry horizon and for
  ``SMSRX_RETAIN_HISTORY`` after it finished (or would have expired) and last changed;
- a submission, while any of its recipients' rows is kept.

The suppression list (``suppressions``, ``optout_events``) is never pruned:
:data:`NEVER_PRUNED` says why, table by table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from smsrx.settings import DECLARED, Settings

__all__ = ["NEVER_PRUNED", "Action", "Rule", "policy"]


class Action(StrEnum):
    """What happens to a row past its retention."""

    DELETE = "delete"
    ERASE = "erase"
    """Its content is blanked (:attr:`Rule.erase`); the row and its metadata stay."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One retention rule: the rows of ``table`` in ``scope`` whose ``column`` is older
    than ``keep``, and that pass ``guard``, are due.

    ``scope``, ``guard`` and ``erase`` are SQL on ``table``, in which ``$1`` is the cutoff
    and ``$3`` the time of the pass. :mod:`smsrx.prune` finds the due rows, and the oldest
    row left, through an index on ``column`` (partial on ``scope``, where there is one).
    """

    table: str
    column: str
    """The time the retention counts from: an indexed column or expression."""
    keep: timedelta
    setting: str
    """The variable that sets ``keep``."""
    action: Action = Action.DELETE
    scope: str = "true"
    """The rows the rule is about."""
    guard: str = "true"
    """What must also hold for a due row to go, checked row by row."""
    erase: str = ""
    """For :attr:`Action.ERASE`: the assignments that blank a row."""
    name: str = ""
    """What reports and the ``table`` metric label call it (the table, unless set)."""

    @property
    def label(self) -> str:
        """The name of the rule in reports and metrics."""
        return self.name or self.table

    def cutoff(self, now: datetime) -> datetime:
        """Rows whose ``column`` is before this are due, at ``now``."""
        return now - self.keep


NEVER_PRUNED: Mapping[str, str] = {
    "suppressions": "the suppression list: a number that opted out is kept, so that it is "
    "never messaged again",
    "optout_events": "every opt-out and opt-in, the record of what each person asked and when",
    "orange_subscriptions": "a few rows: the history of Orange callback registrations",
    "status_outbox": "emptied by status-projection itself once the broker has the changes",
    "schema_migrations": "the migrations applied",
}
"""Tables the prune never touches, each with the reason."""


def policy(settings: Settings) -> tuple[Rule, ...]:
    """Every retention rule, in the order a prune applies them: recipients before their
    submissions, inbound rows deleted before the texts left are erased."""

    def keep(field: str) -> tuple[timedelta, str]:
        return timedelta(seconds=float(getattr(settings, field))), DECLARED[field].env

    horizon = timedelta(seconds=settings.expiry_horizon)
    history, history_env = keep("retain_history")
    processed = keep("retain_processed")
    rollups = keep("retain_rollups")
    return (
        Rule("receiver_dedup", "published_at", *keep("retain_dedup")),
        Rule("analytics_processed_events", "processed_at", *processed),
        Rule("inbound_routed", "routed_at", *processed),
        Rule("status_events", "recorded_at", history, history_env),
        # A recipient that finished, or never did (its message past the expiry horizon),
        # and that nothing changed since.
        Rule(
            "recipient_status",
            "final_at",
            history,
            history_env,
            scope="is_final",
            guard="updated_at < $1",
        ),
        Rule(
            "recipient_status",
            "coalesce(submitted_at, first_event_at)",
            history + horizon,
            history_env,
            scope="NOT is_final",
            guard="updated_at < $1",
        ),
        Rule(
            "submissions",
            "submitted_at",
            history + horizon,
            history_env,
            # OFFSET 0 keeps this a probe of recipient_status's primary key per due row:
            # as an anti-join, PostgreSQL may read the whole table for every batch.
            guard="recorded_at < $1 AND NOT EXISTS (SELECT FROM recipient_status r "
            "WHERE r.provider = submissions.provider AND r.message_id = submissions.message_id "
            "OFFSET 0)",
        ),
        Rule("inbound_messages", "recorded_at", history, history_env),
        # The poller's finished schedules; pending ones end at the horizon, then age out.
        Rule("poll_schedule", "done_at", history, history_env, scope="done_at IS NOT NULL"),
        Rule(
            "inbound_messages",
            "recorded_at",
            *keep("retain_inbound_text"),
            action=Action.ERASE,
            scope="text_erased_at IS NULL",
            erase="content = '', raw = '{}'::json, text_erased_at = $3",
            name="inbound_messages.text",
        ),
        Rule("analytics_receipts_minute", "minute", *rollups),
        Rule("analytics_inbound_minute", "minute", *rollups),
        Rule("analytics_outcomes_minute", "minute", *rollups),
        Rule("analytics_latency_hour", "hour", *rollups),
    )
