"""VavaSMS: inbound SMS pushed to the notification URL, and a status check to poll.

The status check answers ``data[]`` items with ``status`` and a French ``description``.
Its documentation shows one value, ``sent`` ("Envoyé"); the other rows are the values
such APIs use, mapped ahead (English and French) and extendable with
``SMSRX_VAVASMS_STATUS_MAP``. Each recipient of a send has its own ``message_id``.
"""

from __future__ import annotations

from smsrx.providers.base import Provider, StatusMapping
from smsrx.statuses import Status

__all__ = ["PROVIDER"]

_ROWS = {
    "sent": Status.SENT,
    "Envoyé": Status.SENT,
    "pending": Status.QUEUED,
    "en attente": Status.QUEUED,
    "delivered": Status.DELIVERED,
    "livré": Status.DELIVERED,
    "failed": Status.FAILED,
    "échec": Status.FAILED,
    "rejected": Status.FAILED,
    "rejeté": Status.FAILED,
    "expired": Status.EXPIRED,
    "expiré": Status.EXPIRED,
}

PROVIDER = Provider(
    name="vavasms",
    title="VavaSMS",
    statuses=StatusMapping(_ROWS, documented=frozenset({"sent", "Envoyé"})),
    push=("inbound",),
    polls=True,
    status_key="data[].status (else data[].description)",
    allowlist_env="SMSRX_ALLOW_VAVASMS",
    credential_envs=("SMSRX_VAVASMS_USERNAME", "SMSRX_VAVASMS_PASSWORD"),
    poll_rate_env="SMSRX_VAVASMS_POLL_RATE",
    knows="Pushes inbound SMS; no delivery push. smsrx polls its status check per "
    "recipient message_id; its doc shows only 'sent', so delivery is known only if "
    "VavaSMS answers a further value (mapped ahead, extendable by a setting).",
)
