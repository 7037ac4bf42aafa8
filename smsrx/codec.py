"""JSON encoding of the canonical events with orjson, and strict decoding.

This is the only place that knows the wire format. Producers call :func:`encode`;
consumers call the ``decode_*`` function of the topic they read, which raises
:class:`DecodeError` on anything that is not a valid record of that kind.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import orjson

from smsrx.clock import parse_rfc3339
from smsrx.errors import SmsrxError
from smsrx.events import (
    DeliveryReceipt,
    InboundMessage,
    OptOut,
    OptOutAction,
    OptOutSource,
    StatusChange,
    Submission,
)
from smsrx.statuses import Status

__all__ = [
    "JSON_OPTIONS",
    "CarrierEvent",
    "DecodeError",
    "Event",
    "decode_delivery_receipt",
    "decode_inbound",
    "decode_opt_out",
    "decode_routed",
    "decode_status_change",
    "decode_submission",
    "encode",
    "encode_routed",
]

JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
"""orjson options of every record smsrx writes: datetimes in UTC with a ``Z``."""


class DecodeError(SmsrxError, ValueError):
    """A record is not valid JSON, or not a valid event of the expected kind."""


Event = DeliveryReceipt | InboundMessage | Submission | StatusChange | OptOut
"""Every canonical event the topics carry."""
CarrierEvent = DeliveryReceipt | InboundMessage
"""The events a carrier's callback becomes."""
T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)


def encode(event: Event) -> bytes:
    """The record value for an event: compact JSON, timestamps in RFC 3339 UTC."""
    return orjson.dumps(event, option=JSON_OPTIONS)


def encode_routed(message: InboundMessage, route: str) -> bytes:
    """A record of ``sms.inbound.routed.v1``: the inbound record, plus its ``route``."""
    return encode(message)[:-1] + b',"route":' + orjson.dumps(route) + b"}"


def _load(data: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError("record is not a JSON object")
    return doc


def _field(doc: dict[str, Any], name: str, kind: type[T]) -> T:
    value = doc.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DecodeError(f"field {name!r} is missing or not a {kind.__name__}")
    return value


def _time(doc: dict[str, Any], name: str) -> datetime:
    try:
        return parse_rfc3339(_field(doc, name, str))
    except ValueError as exc:
        raise DecodeError(f"field {name!r}: {exc}") from None


def _optional_time(doc: dict[str, Any], name: str) -> datetime | None:
    return None if doc.get(name) is None else _time(doc, name)


def _status(doc: dict[str, Any], name: str) -> Status:
    try:
        return Status(_field(doc, name, str))
    except ValueError:
        raise DecodeError(f"field {name!r} is not a canonical status") from None


def _guarded(build: Callable[[dict[str, Any]], T]) -> Callable[[bytes], T]:
    def decode(data: bytes) -> T:
        return build(_load(data))

    decode.__doc__ = build.__doc__
    return decode


@_guarded
def decode_delivery_receipt(doc: dict[str, Any]) -> DeliveryReceipt:
    """Decode a record of ``sms.delivery-receipts.v1``."""
    return DeliveryReceipt(
        event_id=_field(doc, "event_id", str),
        provider=_field(doc, "provider", str),
        message_id=_field(doc, "message_id", str),
        recipient=_field(doc, "recipient", str),
        status=_status(doc, "status"),
        provider_status=_field(doc, "provider_status", str),
        is_final=_field(doc, "is_final", bool),
        received_at=_time(doc, "received_at"),
        raw=_field(doc, "raw", dict),
        synthetic=bool(doc.get("synthetic", False)),
        source=_source(doc),
        occurred_at=_optional_time(doc, "occurred_at"),
        schema_version=_field(doc, "schema_version", int),
    )


_SOURCES = frozenset({"push", "poll"})


def _source(doc: dict[str, Any]) -> str:
    source = doc.get("source", "push")
    if source not in _SOURCES:
        raise DecodeError("field 'source' is not 'push' or 'poll'")
    return str(source)


def _inbound(doc: dict[str, Any]) -> InboundMessage:
    """Decode a record of ``sms.inbound.v1``."""
    return InboundMessage(
        event_id=_field(doc, "event_id", str),
        provider=_field(doc, "provider", str),
        message_id=_field(doc, "message_id", str),
        sender=_field(doc, "sender", str),
        content=_field(doc, "content", str),
        sent_at=_optional_time(doc, "sent_at"),
        sent_at_text=_field(doc, "sent_at_text", str),
        received_at=_time(doc, "received_at"),
        raw=_field(doc, "raw", dict),
        schema_version=_field(doc, "schema_version", int),
    )


decode_inbound = _guarded(_inbound)


@_guarded
def decode_submission(doc: dict[str, Any]) -> Submission:
    """Decode a record of ``sms.submissions.v1``."""
    recipients = _field(doc, "recipients", list)
    if not recipients or not all(isinstance(r, str) for r in recipients):
        raise DecodeError("field 'recipients' must be a non-empty list of strings")
    tags = doc.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise DecodeError("field 'tags' must map names to strings")
    return Submission(
        event_id=_field(doc, "event_id", str),
        provider=_field(doc, "provider", str),
        message_id=_field(doc, "message_id", str),
        recipients=tuple(recipients),
        submitted_at=_time(doc, "submitted_at"),
        tags=tags,
        schema_version=_field(doc, "schema_version", int),
    )


@_guarded
def decode_status_change(doc: dict[str, Any]) -> StatusChange:
    """Decode a record of ``sms.message-status.v1``."""
    previous = doc.get("previous_status")
    return StatusChange(
        event_id=_field(doc, "event_id", str),
        provider=_field(doc, "provider", str),
        message_id=_field(doc, "message_id", str),
        recipient=_field(doc, "recipient", str),
        status=_status(doc, "status"),
        previous_status=None if previous is None else _status(doc, "previous_status"),
        is_final=_field(doc, "is_final", bool),
        submitted_at=_optional_time(doc, "submitted_at"),
        first_event_at=_optional_time(doc, "first_event_at"),
        changed_at=_time(doc, "changed_at"),
        cause_event_id=_field(doc, "cause_event_id", str),
        occurred_at=_optional_time(doc, "occurred_at"),
        schema_version=_field(doc, "schema_version", int),
    )


def _optional_str(doc: dict[str, Any], name: str) -> str | None:
    return None if doc.get(name) is None else _field(doc, name, str)


def _choice(doc: dict[str, Any], name: str, kind: type[E]) -> E:
    try:
        return kind(_field(doc, name, str))
    except ValueError:
        raise DecodeError(f"field {name!r} is not one of {[e.value for e in kind]}") from None


@_guarded
def decode_opt_out(doc: dict[str, Any]) -> OptOut:
    """Decode a record of ``sms.opt-outs.v1``."""
    return OptOut(
        event_id=_field(doc, "event_id", str),
        phone=_field(doc, "phone", str),
        action=_choice(doc, "action", OptOutAction),
        keyword=_optional_str(doc, "keyword"),
        provider=_optional_str(doc, "provider"),
        inbound_message_id=_optional_str(doc, "inbound_message_id"),
        occurred_at=_time(doc, "occurred_at"),
        received_at=_time(doc, "received_at"),
        source=_choice(doc, "source", OptOutSource),
        reason=_optional_str(doc, "reason"),
        schema_version=_field(doc, "schema_version", int),
    )


def decode_routed(data: bytes) -> tuple[InboundMessage, str]:
    """Decode a record of ``sms.inbound.routed.v1``: the inbound message and its route."""
    doc = _load(data)
    return _inbound(doc), _field(doc, "route", str)
