"""Synthetic receipt traffic after a bulk campaign, for the worker benchmarks.

Messages go to one to three recipients. Each recipient gets the receipts Orange
sends for one of a few typical outcomes (network then handset; network then
failure; queued first; uncertain; failed at once), spread over the following
seconds, some of them out of order, and about 5 % are sent twice (a carrier
retrying). Records are built with the receiver's own adapter and codec, so they
are byte for byte what the receiver would publish for those callbacks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from receiver.adapters import orange
from smsrx.clock import utcnow
from smsrx.codec import encode
from smsrx.events import DeliveryReceipt

__all__ = ["Campaign", "campaign", "orange_body"]

_FLOWS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (62, ("DeliveredToNetwork", "DeliveredToTerminal")),
    (10, ("DeliveredToTerminal",)),
    (10, ("DeliveredToNetwork", "DeliveryImpossible")),
    (8, ("MessageWaiting", "DeliveredToNetwork", "DeliveredToTerminal")),
    (5, ("DeliveredToNetwork", "DeliveryUncertain")),
    (5, ("DeliveryImpossible",)),
)
_COUNTRIES: tuple[tuple[int, str, int], ...] = (
    (55, "+22507{:08d}", 10**8),  # Côte d'Ivoire
    (20, "+22177{:07d}", 10**7),  # Senegal
    (15, "+2376{:08d}", 10**8),  # Cameroon
    (10, "+2237{:07d}", 10**7),  # Mali
)


def orange_body(message_id: str, address: str, status: str) -> bytes:
    """An Orange deliveryInfoNotification, as Orange posts it."""
    return orjson.dumps(
        {
            "deliveryInfoNotification": {
                "callbackData": message_id,
                "deliveryInfo": {"address": address, "deliveryStatus": status},
            }
        }
    )


def _weighted(rng: random.Random, choices: tuple[tuple[int, ...], ...]) -> int:
    roll = rng.randrange(sum(c[0] for c in choices))
    for index, choice in enumerate(choices):
        if roll < choice[0]:
            return index
        roll -= choice[0]
    return 0


@dataclass
class Campaign:
    """Receipts in arrival order, with their encoded records."""

    receipts: list[DeliveryReceipt]
    records: list[tuple[bytes, bytes]]
    duplicates: int
    messages: int
    recipients: int


def campaign(count: int, *, seed: int = 7, span: timedelta = timedelta(minutes=10)) -> Campaign:
    """About ``count`` receipts (duplicates included), received over ``span`` up to now."""
    rng = random.Random(seed)
    start = utcnow() - span
    timeline: list[tuple[float, str, str, str]] = []
    messages = recipients = 0
    while len(timeline) < count / 1.05:
        messages += 1
        message_id = (
            f"{rng.getrandbits(32):08x}-{messages:04x}-4b1c-9e2d-{rng.getrandbits(48):012x}"
        )
        sent = rng.random() * span.total_seconds() * 0.9
        for _ in range(rng.choice((1, 1, 1, 1, 1, 1, 1, 2, 2, 3))):
            recipients += 1
            _, pattern, span_digits = _COUNTRIES[_weighted(rng, _COUNTRIES)]
            address = "tel:" + pattern.format(rng.randrange(span_digits))
            flow = _FLOWS[_weighted(rng, _FLOWS)][1]
            at = sent
            steps = []
            for status in flow:
                at += rng.uniform(0.5, 20.0)
                steps.append([at, message_id, address, status])
            if len(steps) > 1 and rng.random() < 0.05:  # the later receipt arrives first
                steps[0][0], steps[-1][0] = steps[-1][0], steps[0][0]
            timeline += [(s[0], s[1], s[2], s[3]) for s in steps]
    duplicates = 0
    for _ in range(count - len(timeline)):  # carriers retrying: the same receipt again, later
        at, message_id, address, status = timeline[rng.randrange(len(timeline))]
        timeline.append((at + rng.uniform(1.0, 60.0), message_id, address, status))
        duplicates += 1
    timeline.sort()
    receipts = []
    records = []
    limit = span.total_seconds()
    for index, (at, message_id, address, status) in enumerate(timeline):
        received_at = start + timedelta(seconds=min(at, limit))
        receipt = _receipt(message_id, address, status, received_at)
        if index < 200:  # the shortcut must build exactly what the receiver's adapter builds
            (parsed,) = orange.parse(
                "application/json", orange_body(message_id, address, status), received_at
            )
            assert parsed == receipt, (parsed, receipt)
        receipts.append(receipt)
        records.append((receipt.key, encode(receipt)))
    return Campaign(receipts, records, duplicates, messages, recipients)


def _receipt(message_id: str, address: str, status: str, received_at: datetime) -> DeliveryReceipt:
    # What orange.parse returns, without parsing JSON and phone numbers 500,000 times: the
    # generated numbers are already E.164 behind their "tel:" (checked above).
    return DeliveryReceipt.create(
        provider=orange.PROVIDER,
        message_id=message_id,
        recipient=address[4:],
        status=orange.STATUSES.map(status).status,
        provider_status=status,
        received_at=received_at,
        raw={
            "deliveryInfoNotification": {
                "callbackData": message_id,
                "deliveryInfo": {"address": address, "deliveryStatus": status},
            }
        },
    )
