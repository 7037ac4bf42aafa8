"""Orange SMS API delivery receipts (``deliveryInfoNotification``), parsed without I/O.

The payload, as Orange documents it::

    {"deliveryInfoNotification": {
        "callbackData": "<resource id of the sent SMS>",
        "deliveryInfo": {"address": "tel:+<recipient>", "deliveryStatus": "<status>"}}}
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from receiver.adapters.fields import identifier, object_at, phone, storable, token
from receiver.bodies import JSON, decode
from receiver.errors import BadRequest
from smsrx import providers
from smsrx.events import DeliveryReceipt

__all__ = ["PROVIDER", "STATUSES", "parse"]

_ORANGE = providers.get("orange")
PROVIDER = _ORANGE.name
STATUSES = _ORANGE.statuses
"""Orange ``deliveryStatus`` to canonical status (``docs/statuses.md``); anything else is
kept as ``unknown``."""

_ROOT = "deliveryInfoNotification"
_CONTENT_TYPES = frozenset({JSON})
_MAX_INFOS = 100


def _receipt(
    message_id: str, info: Any, path: str, received_at: datetime, raw: dict[str, Any]
) -> DeliveryReceipt:
    info = object_at(info, path)
    recipient = phone(info, "address", f"{path}.address")
    provider_status = token(info, "deliveryStatus", f"{path}.deliveryStatus", max_length=64)
    return DeliveryReceipt.create(
        provider=PROVIDER,
        message_id=message_id,
        recipient=recipient,
        status=STATUSES.map(provider_status).status,
        provider_status=provider_status,
        received_at=received_at,
        raw=raw,
    )


def parse(content_type: str | None, body: bytes, received_at: datetime) -> list[DeliveryReceipt]:
    """Turn one Orange DR callback into its receipts, or raise ``BadRequest``."""
    raw = object_at(decode(content_type, body, _CONTENT_TYPES), "body")
    notification = object_at(raw.get(_ROOT), _ROOT) if _ROOT in raw else None
    if notification is None:
        raise BadRequest(f"{_ROOT} is missing", field=_ROOT)
    message_id = identifier(notification, "callbackData", f"{_ROOT}.callbackData")
    infos = notification.get("deliveryInfo")
    path = f"{_ROOT}.deliveryInfo"
    if infos is None:
        raise BadRequest(f"{path} is missing", field=path)
    # The documented payload has one deliveryInfo object; OneAPI also allows a list.
    if isinstance(infos, list):
        if not infos or len(infos) > _MAX_INFOS:
            raise BadRequest(f"{path} must hold 1 to {_MAX_INFOS} entries", field=path)
        receipts = [
            _receipt(message_id, info, f"{path}[{i}]", received_at, raw)
            for i, info in enumerate(infos)
        ]
    else:
        receipts = [_receipt(message_id, infos, path, received_at, raw)]
    storable(raw)  # the rest of the payload, kept verbatim in every receipt
    return receipts
