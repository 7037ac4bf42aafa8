"""Orange SMS API: delivery receipts pushed to the registered callback URL.

Orange documents no status query; smsrx keeps the DR subscription reconciled
(``subscriptions/``) and lets the expiry sweep end a recipient it never hears of.
"""

from __future__ import annotations

from smsrx.providers.base import Provider, StatusMapping
from smsrx.statuses import Status

__all__ = ["PROVIDER"]

_ROWS = {
    "MessageWaiting": Status.QUEUED,
    "DeliveredToNetwork": Status.SENT,
    "DeliveryUncertain": Status.UNKNOWN,
    "DeliveredToTerminal": Status.DELIVERED,
    "DeliveryImpossible": Status.FAILED,
}

PROVIDER = Provider(
    name="orange",
    title="Orange SMS API",
    statuses=StatusMapping(_ROWS, documented=frozenset(_ROWS)),
    push=("receipts",),
    status_key="deliveryInfo.deliveryStatus",
    allowlist_env="SMSRX_ALLOW_ORANGE",
    knows="Pushes a receipt per recipient (deliveryStatus) to the subscribed callback URL; "
    "no status API, so a receipt that never comes ends as expired after the horizon.",
)
