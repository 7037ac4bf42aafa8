"""Gateway SMS (messaggisms): a status API per message and recipient, no push.

Its recipient object carries Infobip's status model: ``report.status.groupName`` (the
group, which decides the canonical status) and ``report.status.name`` (kept verbatim as
``provider_status``), plus ``report.error.permanent``. The top-level ``state`` repeats
the group.
"""

from __future__ import annotations

from smsrx.providers.base import Provider, StatusMapping
from smsrx.statuses import Status

__all__ = ["GROUPS", "PROVIDER"]

GROUPS = {
    "PENDING": Status.SENT,
    "UNDELIVERABLE": Status.FAILED,
    "DELIVERED": Status.DELIVERED,
    "EXPIRED": Status.EXPIRED,
    "REJECTED": Status.FAILED,
}
"""``report.status.groupName`` to canonical status."""

PROVIDER = Provider(
    name="gatewaysms",
    title="Gateway SMS (messaggisms)",
    statuses=StatusMapping(GROUPS, documented=frozenset({"DELIVERED"})),
    polls=True,
    polls_per_message=True,
    status_key="report.status.groupName",
    credential_envs=("SMSRX_GATEWAYSMS_TOKEN",),
    poll_rate_env="SMSRX_GATEWAYSMS_POLL_RATE",
    knows="No push; smsrx polls GET /messages/{id}/recipients/ for each message until "
    "every recipient is final, with the carrier's delivery time (timestamp_delivery).",
)
