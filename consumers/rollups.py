"""What analytics counts, without I/O: a batch of new events folded into increments.

- each delivery receipt: +1 in its (minute received, provider, country, status);
- each inbound SMS: +1 in its (minute received, provider, sender country);
- each status change into a final status, from ``sms.message-status.v1``:

  - +1 outcome in the recipient's cohort minute (submission, else first receipt), and
    -1 for the final status it replaces (``failed`` then ``delivered``), so a cohort
    counts each recipient once, under its current final status;
  - for the *first* final status only (the previous one was not final): a latency
    sample since submission (when known) and one since the first receipt, up to the
    carrier's time of the status when it gives one (``occurred_at``), else its receipt.

Countries are ISO 3166 alpha-3 from the number, ``ZZZ`` when it has none.
"""

from __future__ import annotations

import bisect
import functools
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from consumers.metrics import LATENCY_BUCKETS
from smsrx.events import DeliveryReceipt, InboundMessage, StatusChange
from smsrx.phones import country_alpha3
from smsrx.statuses import FINAL_STATUSES

__all__ = ["Tally", "bucket_for", "country_of"]

ReceiptKey = tuple[datetime, str, str, str]
"""(minute, provider, country, status)."""
InboundKey = tuple[datetime, str, str]
"""(minute, provider, country)."""
LatencyKey = tuple[datetime, str, str, str, str, float]
"""(hour, provider, country, since, status, bucket upper bound)."""


@functools.lru_cache(maxsize=1 << 17)
def country_of(number: str) -> str:
    """ISO 3166 alpha-3 country of an E.164 number (cached: parsing is the costly part)."""
    return country_alpha3(number)


def bucket_for(seconds: float) -> float:
    """The upper bound of the latency bucket holding ``seconds`` (negative counts as 0)."""
    return LATENCY_BUCKETS[bisect.bisect_left(LATENCY_BUCKETS, max(0.0, seconds))]


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass(slots=True)
class Tally:
    """Increments for the rollup tables, and samples for the Prometheus metrics."""

    receipts: Counter[ReceiptKey] = field(default_factory=Counter)
    inbound: Counter[InboundKey] = field(default_factory=Counter)
    outcomes: Counter[ReceiptKey] = field(default_factory=Counter)
    latency: Counter[LatencyKey] = field(default_factory=Counter)
    samples: list[tuple[str, str, float]] = field(default_factory=list)
    """(provider, since, seconds) of each latency sample."""

    def add_receipt(self, receipt: DeliveryReceipt) -> None:
        """Count one distinct delivery receipt."""
        key = (
            _minute(receipt.received_at),
            receipt.provider,
            country_of(receipt.recipient),
            receipt.status.value,
        )
        self.receipts[key] += 1

    def add_inbound(self, message: InboundMessage) -> None:
        """Count one distinct inbound SMS."""
        self.inbound[
            (_minute(message.received_at), message.provider, country_of(message.sender))
        ] += 1

    def add_change(self, change: StatusChange) -> None:
        """Count one distinct status change (only changes to a final status count)."""
        if not change.is_final:
            return
        country = country_of(change.recipient)
        cohort = _minute(change.submitted_at or change.first_event_at or change.changed_at)
        self.outcomes[(cohort, change.provider, country, change.status.value)] += 1
        previous = change.previous_status
        if previous is not None and previous in FINAL_STATUSES:
            self.outcomes[(cohort, change.provider, country, previous.value)] -= 1
            return
        # The carrier's own time of the status, when it gives one (a polled status is
        # learnt minutes after it happened); else when smsrx received it.
        reached = change.occurred_at or change.changed_at
        hour = _hour(reached)
        for since, start in (
            ("submission", change.submitted_at),
            ("first_receipt", change.first_event_at),
        ):
            if start is None:
                continue
            seconds = max(0.0, (reached - start).total_seconds())
            key = (hour, change.provider, country, since, change.status.value, bucket_for(seconds))
            self.latency[key] += 1
            self.samples.append((change.provider, since, seconds))
