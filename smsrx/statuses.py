"""Canonical delivery statuses and the precedence that orders them.

Carriers report statuses late, twice and out of order, so the current status of a
recipient is decided by rank, never by arrival order::

    queued < sent < unknown < expired < failed < delivered

``expired`` is never sent by a carrier: smsrx emits it when a recipient has had no
final status within the expiry horizon. A real final status that arrives later
still replaces it.
"""

from __future__ import annotations

import enum

__all__ = ["FINAL_STATUSES", "RANK", "Status", "supersedes"]


class Status(enum.StrEnum):
    """A canonical status, shared by every carrier adapter and consumer."""

    QUEUED = "queued"
    SENT = "sent"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    FAILED = "failed"
    DELIVERED = "delivered"


RANK: dict[Status, int] = {status: rank for rank, status in enumerate(Status)}
"""Precedence of each status: a higher rank replaces a lower one, never the reverse."""

FINAL_STATUSES = frozenset({Status.DELIVERED, Status.FAILED, Status.EXPIRED})
"""Statuses after which a carrier sends nothing more (``delivered`` may still replace
``failed``: Orange says a DeliveryImpossible message may have been delivered)."""


def supersedes(new: Status, current: Status | None) -> bool:
    """Whether ``new`` replaces ``current`` as a recipient's status."""
    return current is None or RANK[new] > RANK[current]
