"""MboaSMS: sending only. Its documentation has no status API and no callback."""

from __future__ import annotations

from smsrx.providers.base import Provider, StatusMapping

__all__ = ["PROVIDER"]

PROVIDER = Provider(
    name="mboasms",
    title="MboaSMS",
    statuses=StatusMapping({}),
    knows="Sending only: smsrx records the send from sms.submissions.v1 as sent, and the "
    "expiry sweep ends it as expired; delivery cannot be known.",
)
