"""What one poll answer means for one scheduled recipient: pure, no I/O.

- A status: a receipt when the carrier's value changed since the previous poll (the
  same value polled again is the same event, so nothing is published twice); polling
  ends at the first final status, or once the expiry horizon has passed.
- Not found (the carrier does not know the id): a few more tries, then a receipt
  ``unknown`` with the reason, and polling ends.
- Retry (5xx, timeout, 429): the same step again after a growing backoff, or the
  carrier's ``Retry-After``.
- Credentials refused: the row waits for the provider's pause; its step is kept.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta

from consumers.polling.client import Outcome, PolledStatus
from consumers.polling.schedule import Claimed, Decision, next_poll
from smsrx.events import DeliveryReceipt
from smsrx.statuses import Status

__all__ = [
    "AUTH_PAUSE",
    "NOT_FOUND_PROVIDER_STATUS",
    "NOT_FOUND_TRIES",
    "RETRY_FIRST",
    "decide",
    "retry_delay",
]

NOT_FOUND_TRIES = 3
"""Answers 'no such message' in a row before the recipient is given up as ``unknown``."""
NOT_FOUND_PROVIDER_STATUS = "smsrx:not-found"
"""The ``provider_status`` of the ``unknown`` receipt for a message the carrier never knew."""
AUTH_PAUSE = 900.0
"""Seconds a provider that refused the credentials is left alone before one more try."""
RETRY_FIRST = 15.0
"""Seconds before the first retry of a failed poll; it doubles with each failure."""
_RETRY_MAX = 900.0


def retry_delay(
    failures: int, retry_after: float | None = None, first: float = RETRY_FIRST
) -> float:
    """Seconds before trying again after ``failures`` failures in a row: ``first`` (15 s)
    doubling up to 15 min, with ±10 % jitter so that many rows do not come back at once;
    at least what the carrier asked for."""
    delay = min(_RETRY_MAX, first * 2 ** max(0, failures - 1))
    delay *= random.uniform(0.9, 1.1)
    return float(max(delay, retry_after or 0.0))


def decide(
    row: Claimed,
    outcome: Outcome,
    polled: PolledStatus | None,
    *,
    now: datetime,
    schedule: Sequence[float],
    horizon: float,
    reason: str = "",
    retry_after: float | None = None,
    retry_first: float = RETRY_FIRST,
    auth_pause: float = AUTH_PAUSE,
) -> tuple[Decision, DeliveryReceipt | None]:
    """The row's next state, and the receipt to publish, if any."""
    horizon_end = (
        None if row.submitted_at is None else row.submitted_at + timedelta(seconds=horizon)
    )
    if outcome is Outcome.OK and polled is None:
        outcome, reason = Outcome.NOT_FOUND, "the carrier's answer does not list this recipient"
    if outcome is Outcome.OK:
        assert polled is not None
        receipt = None
        if polled.provider_status != row.last_provider_status:
            receipt = DeliveryReceipt.create(
                provider=row.provider,
                message_id=row.message_id,
                recipient=row.recipient,
                status=polled.mapped.status,
                provider_status=polled.provider_status,
                received_at=now,
                raw=polled.raw,
                source="poll",
                occurred_at=polled.occurred_at,
            )
        polls = row.polls + 1
        following = None if polled.mapped.is_final else next_poll(schedule, polls, now, horizon_end)
        done = "final" if polled.mapped.is_final else ("horizon" if following is None else None)
        return (
            Decision(row, outcome.value, polls, 0, polled.provider_status, following, done),
            receipt,
        )
    failures = row.failures + 1
    if outcome is Outcome.NOT_FOUND and failures >= NOT_FOUND_TRIES:
        receipt = DeliveryReceipt.create(
            provider=row.provider,
            message_id=row.message_id,
            recipient=row.recipient,
            status=Status.UNKNOWN,
            provider_status=NOT_FOUND_PROVIDER_STATUS,
            received_at=now,
            raw={"reason": reason or "the carrier knows no such message", "polls": failures},
            synthetic=True,
            source="poll",
        )
        decision = Decision(
            row, outcome.value, row.polls, failures, NOT_FOUND_PROVIDER_STATUS, None, "not_found"
        )
        return decision, receipt
    if outcome is Outcome.AUTH_FAILED:
        failures, wait = row.failures, auth_pause
    else:
        wait = retry_delay(failures, retry_after, retry_first)
    due: datetime | None = now + timedelta(seconds=wait)
    if horizon_end is not None and due is not None:
        due = None if now >= horizon_end else min(due, horizon_end)
    decision = Decision(
        row,
        outcome.value,
        row.polls,
        failures,
        row.last_provider_status,
        due,
        "horizon" if due is None else None,
    )
    return decision, None
