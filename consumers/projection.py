"""Precedence, without I/O: fold a batch of new receipts into per-recipient updates.

The current status of a recipient is the receipt that *outranks* every other one:
the highest :data:`~smsrx.statuses.RANK`, then the earliest ``received_at`` of that
rank, then the smallest ``event_id``. That is a total order on receipts, so the
result never depends on arrival order, duplication or batching. The SQL upsert in
:mod:`consumers.projection_sql` applies the same order with the same tie-breaks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from smsrx.events import DeliveryReceipt, StatusChange
from smsrx.statuses import FINAL_STATUSES, RANK, Status

__all__ = ["Key", "Plan", "RecipientUpdate", "Stored", "outranks", "plan_receipts"]

Key = tuple[str, str, str]
"""(provider, message_id, recipient)."""


def outranks(
    rank: int, at: datetime, event_id: str, other_rank: int, other_at: datetime, other_id: str
) -> bool:
    """Whether the first receipt should be current rather than the second."""
    if rank != other_rank:
        return rank > other_rank
    return (at, event_id) < (other_at, other_id)


@dataclass(frozen=True, slots=True)
class Stored:
    """A recipient's state in the database when a batch starts (all None if no row yet)."""

    status: Status | None = None
    """The current status; None for a recipient known only from its submission."""
    status_at: datetime | None = None
    """When the receipt that set the current status was received."""
    status_event_id: str | None = None
    """The receipt that set the current status."""
    submitted_at: datetime | None = None
    """When the message was submitted, if its submission is known."""
    first_event_at: datetime | None = None
    """When the first receipt for the recipient was received."""

    def outranked_by(self, receipt: DeliveryReceipt) -> bool:
        """Whether ``receipt`` replaces the stored status."""
        if self.status is None or self.status_at is None or self.status_event_id is None:
            return True
        return outranks(
            RANK[receipt.status],
            receipt.received_at,
            receipt.event_id,
            RANK[self.status],
            self.status_at,
            self.status_event_id,
        )


@dataclass(slots=True)
class RecipientUpdate:
    """The new receipts of one recipient in one batch, folded together."""

    best: DeliveryReceipt
    """The receipt that outranks the others of the batch."""
    first_at: datetime
    """Earliest ``received_at`` among them."""
    last_at: datetime
    """Latest ``received_at`` among them."""
    count: int = 1
    """How many distinct new receipts."""

    @property
    def key(self) -> Key:
        """(provider, message_id, recipient)."""
        best = self.best
        return (best.provider, best.message_id, best.recipient)

    def add(self, receipt: DeliveryReceipt) -> None:
        """Fold one more receipt in."""
        best = self.best
        if outranks(
            RANK[receipt.status],
            receipt.received_at,
            receipt.event_id,
            RANK[best.status],
            best.received_at,
            best.event_id,
        ):
            self.best = receipt
        self.first_at = min(self.first_at, receipt.received_at)
        self.last_at = max(self.last_at, receipt.received_at)
        self.count += 1


@dataclass(slots=True)
class Plan:
    """What one batch of new receipts does to the current state."""

    updates: list[RecipientUpdate] = field(default_factory=list)
    """One per recipient, sorted by key so concurrent transactions lock rows in one order."""
    changes: list[StatusChange] = field(default_factory=list)
    """Changes of current status, to publish after commit."""
    regressions: Counter[str] = field(default_factory=Counter)
    """Per provider: receipts ranked below the status already reached when they arrived."""


def plan_receipts(new: Sequence[DeliveryReceipt], stored: Mapping[Key, Stored]) -> Plan:
    """Fold ``new`` receipts (distinct, never applied before, in arrival order).

    ``stored`` holds the state of each recipient the receipts name, when it exists.
    Intermediate statuses within one batch collapse: a recipient that goes
    ``sent`` then ``delivered`` in one batch yields a single change to ``delivered``.
    """
    plan = Plan()
    folds: dict[Key, RecipientUpdate] = {}
    reached: dict[Key, int] = {}
    for receipt in new:
        key = (receipt.provider, receipt.message_id, receipt.recipient)
        rank = RANK[receipt.status]
        if key not in reached:
            current = stored.get(key)
            reached[key] = -1 if current is None or current.status is None else RANK[current.status]
        if rank < reached[key]:
            plan.regressions[receipt.provider] += 1
        else:
            reached[key] = rank
        fold = folds.get(key)
        if fold is None:
            folds[key] = RecipientUpdate(receipt, receipt.received_at, receipt.received_at)
        else:
            fold.add(receipt)

    for key in sorted(folds):
        fold = folds[key]
        plan.updates.append(fold)
        current = stored.get(key, _NOTHING)
        if not current.outranked_by(fold.best) or current.status == fold.best.status:
            continue
        first = fold.first_at
        if current.first_event_at is not None:
            first = min(first, current.first_event_at)
        best = fold.best
        plan.changes.append(
            StatusChange(
                event_id=StatusChange.id_for(*key, best.status),
                provider=best.provider,
                message_id=best.message_id,
                recipient=best.recipient,
                status=best.status,
                previous_status=current.status,
                is_final=best.status in FINAL_STATUSES,
                submitted_at=current.submitted_at,
                first_event_at=first,
                changed_at=best.received_at,
                cause_event_id=best.event_id,
                occurred_at=best.occurred_at,
            )
        )
    return plan


_NOTHING = Stored()
