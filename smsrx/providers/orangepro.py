"""Orange Messaging Pro (Cameroon): sending only; no status API and no callback."""

from __future__ import annotations

from smsrx.providers.base import Provider, StatusMapping

__all__ = ["PROVIDER"]

PROVIDER = Provider(
    name="orangepro",
    title="Orange Messaging Pro (Cameroon)",
    statuses=StatusMapping({}),
    knows="Sending only: smsrx records the send from sms.submissions.v1 as sent, and the "
    "expiry sweep ends it as expired; delivery cannot be known.",
)
