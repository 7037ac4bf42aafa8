"""VavaSMS inbound SMS notifications, parsed without I/O.

VavaSMS posts ``message_id``, the sender, ``content`` and ``sms_date`` to the
notification URL configured in its back office, form-encoded or as JSON. Its doc
spells the sender field ``form``; ``from`` is accepted too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from receiver.adapters.fields import identifier, object_at, phone, storable, text
from receiver.bodies import FORM, JSON, decode
from receiver.errors import BadRequest
from smsrx.events import InboundMessage

__all__ = ["PROVIDER", "parse", "parse_sms_date"]

PROVIDER = "vavasms"

_CONTENT_TYPES = frozenset({JSON, FORM})
_MAX_CONTENT = 10_000  # a long SMS is at most a few thousand characters
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M")


def parse_sms_date(value: str) -> datetime | None:
    """Parse VavaSMS's ``sms_date``; None when the format is unknown.

    The doc gives no format or zone. VavaSMS operates in UTC+0 (Côte d'Ivoire), so a
    time without an offset is taken as UTC. The original text is always kept too.
    """
    value = value.strip()
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
        for fmt in _DATE_FORMATS:
            try:
                moment = datetime.strptime(value, fmt)  # noqa: DTZ007 - zone set below
                break
            except ValueError:
                continue
    # isdecimal, not isdigit: "²" is a digit to str.isdigit() but not to int().
    if moment is None and value.isdecimal() and len(value) in (10, 13):
        moment = datetime.fromtimestamp(int(value) / (1000 if len(value) == 13 else 1), UTC)
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        return None


def parse(content_type: str | None, body: bytes, received_at: datetime) -> list[InboundMessage]:
    """Turn one VavaSMS notification into an inbound message, or raise ``BadRequest``."""
    doc: dict[str, Any] = object_at(decode(content_type, body, _CONTENT_TYPES), "body")
    if "from" in doc and "form" in doc and doc["from"] != doc["form"]:
        raise BadRequest("from and form disagree", field="from")
    sender_key = "from" if "from" in doc else "form"
    if sender_key not in doc:
        raise BadRequest("from (or form) is missing", field="from")
    sms_date = text(doc, "sms_date", "sms_date", max_length=64)
    message = InboundMessage.create(
        provider=PROVIDER,
        message_id=identifier(doc, "message_id", "message_id"),
        sender=phone(doc, sender_key, sender_key),
        content=text(doc, "content", "content", max_length=_MAX_CONTENT, allow_empty=True),
        sent_at=parse_sms_date(sms_date),
        sent_at_text=sms_date,
        received_at=received_at,
        raw=storable(doc),
    )
    return [message]
