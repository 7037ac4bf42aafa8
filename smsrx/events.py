"""The canonical events: the public contract between the receiver, the workers and
every downstream consumer of the Kafka topics.

Each event is a frozen dataclass; :mod:`smsrx.codec` turns it into the JSON record
documented in ``docs/events.md`` and ``docs/schemas/``. Event ids are deterministic,
so the same carrier callback always yields the same ``event_id`` and every consumer
can deduplicate on it.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from smsrx.statuses import FINAL_STATUSES, Status

__all__ = [
    "SCHEMA_VERSION",
    "DeliveryReceipt",
    "InboundMessage",
    "OptOut",
    "OptOutAction",
    "OptOutSource",
    "StatusChange",
    "Submission",
    "event_id_for",
]

SCHEMA_VERSION = 1
"""Version of the record layout inside each ``.v1`` topic; additive changes only."""

_NAMESPACE = uuid.UUID("5d1f0a3e-7c53-4f0e-9a51-6d2b7d3c8e11")
_NAMESPACE_BYTES = _NAMESPACE.bytes


def event_id_for(*parts: str) -> str:
    """A deterministic event id (UUID version 5) built from the parts that identify an event.

    Exactly ``str(uuid.uuid5(_NAMESPACE, "\\x1f".join(parts)))``, spelled out with hashlib
    because it runs once per receipt on every hot path (figures: bench/README.md,
    "Costs the code relies on").
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """One carrier delivery receipt (DR) for one recipient of one message."""

    kind: ClassVar[str] = "delivery_receipt"

    event_id: str
    """Deterministic: the same receipt (provider, message, recipient, carrier status) always
    has the same id."""
    provider: str
    """The carrier, e.g. ``"orange"``."""
    message_id: str
    """The carrier's id of the sent message (Orange: ``callbackData``, the resource id)."""
    recipient: str
    """The recipient's number, E.164 with a leading ``+``."""
    status: Status
    """Canonical status; an unrecognised carrier status is ``unknown``."""
    provider_status: str
    """The carrier's own status value, kept verbatim."""
    is_final: bool
    """Whether the carrier will send nothing more for this recipient."""
    received_at: datetime
    """When smsrx received the callback (UTC)."""
    raw: dict[str, Any]
    """The carrier's original payload."""
    synthetic: bool = False
    """True for events smsrx makes itself (the ``expired`` sweep), never for a carrier's."""
    source: str = "push"
    """How smsrx learnt it: ``push`` (the carrier called the receiver, or smsrx's own
    expiry sweep) or ``poll`` (the poller asked the carrier's status API)."""
    occurred_at: datetime | None = None
    """When the carrier says the status was reached (Gateway SMS's delivery time), when it
    says; None otherwise. Analytics latencies use it when present."""
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        """The Kafka record key: the provider's message id."""
        return self.message_id.encode()

    @classmethod
    def create(
        cls,
        *,
        provider: str,
        message_id: str,
        recipient: str,
        status: Status,
        provider_status: str,
        received_at: datetime,
        raw: dict[str, Any],
        synthetic: bool = False,
        source: str = "push",
        occurred_at: datetime | None = None,
    ) -> DeliveryReceipt:
        """Build a receipt, deriving its id and finality from what identifies it."""
        return cls(
            event_id=event_id_for("dr", provider, message_id, recipient, provider_status),
            provider=provider,
            message_id=message_id,
            recipient=recipient,
            status=status,
            provider_status=provider_status,
            is_final=status in FINAL_STATUSES,
            received_at=received_at,
            raw=raw,
            synthetic=synthetic,
            source=source,
            occurred_at=occurred_at,
        )


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One inbound SMS (MO) received from a carrier."""

    kind: ClassVar[str] = "inbound_message"

    event_id: str
    """Deterministic, from the provider and its message id."""
    provider: str
    """The carrier, e.g. ``"vavasms"``."""
    message_id: str
    """The carrier's message id; the carrier may notify it more than once."""
    sender: str
    """Who sent the SMS, E.164 with a leading ``+``."""
    content: str
    """The text of the SMS."""
    sent_at: datetime | None
    """When the carrier received the SMS, parsed from its own text; None if unparseable."""
    sent_at_text: str
    """The carrier's original date text (VavaSMS ``sms_date``)."""
    received_at: datetime
    """When smsrx received the callback (UTC)."""
    raw: dict[str, Any]
    """The carrier's original payload."""
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        """The Kafka record key: the provider's message id."""
        return self.message_id.encode()

    @classmethod
    def create(
        cls,
        *,
        provider: str,
        message_id: str,
        sender: str,
        content: str,
        sent_at: datetime | None,
        sent_at_text: str,
        received_at: datetime,
        raw: dict[str, Any],
    ) -> InboundMessage:
        """Build an inbound message, deriving its id from the provider and message id."""
        return cls(
            event_id=event_id_for("mo", provider, message_id),
            provider=provider,
            message_id=message_id,
            sender=sender,
            content=content,
            sent_at=sent_at,
            sent_at_text=sent_at_text,
            received_at=received_at,
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class Submission:
    """A message a carrier accepted for sending, published by the sending services."""

    kind: ClassVar[str] = "submission"

    event_id: str
    """Deterministic, from the provider and its message id."""
    provider: str
    """The carrier that accepted the message."""
    message_id: str
    """The carrier's id of the message, which its receipts will carry."""
    recipients: tuple[str, ...]
    """Every recipient, E.164."""
    submitted_at: datetime
    """When the carrier accepted the message (UTC)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Free-form labels such as tenant or campaign."""
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        """The Kafka record key: the provider's message id."""
        return self.message_id.encode()

    @classmethod
    def create(
        cls,
        *,
        provider: str,
        message_id: str,
        recipients: tuple[str, ...],
        submitted_at: datetime,
        tags: dict[str, str] | None = None,
    ) -> Submission:
        """Build a submission, deriving its id from the provider and message id."""
        return cls(
            event_id=event_id_for("submission", provider, message_id),
            provider=provider,
            message_id=message_id,
            recipients=recipients,
            submitted_at=submitted_at,
            tags=dict(tags or {}),
        )


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A change of one recipient's current status, published by status-projection."""

    kind: ClassVar[str] = "status_change"

    event_id: str
    """Deterministic, from the recipient and the new status."""
    provider: str
    """The carrier."""
    message_id: str
    """The carrier's id of the message."""
    recipient: str
    """The recipient, E.164."""
    status: Status
    """The new current status."""
    previous_status: Status | None
    """The status it replaced; None when the recipient was first seen."""
    is_final: bool
    """Whether the new status is final."""
    submitted_at: datetime | None
    """When the message was submitted, once its submission is known."""
    first_event_at: datetime | None
    """When the first receipt for this recipient arrived."""
    changed_at: datetime
    """When the event that caused the change was received."""
    cause_event_id: str
    """The ``event_id`` of the receipt that caused the change."""
    occurred_at: datetime | None = None
    """When the carrier says the new status was reached (that receipt's ``occurred_at``),
    when it says; None otherwise. Added in v1, optional."""
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        """The Kafka record key: message id and recipient."""
        return f"{self.message_id}/{self.recipient}".encode()

    @staticmethod
    def id_for(provider: str, message_id: str, recipient: str, status: Status) -> str:
        """The deterministic id of a change to ``status``."""
        return event_id_for("status", provider, message_id, recipient, status.value)


class OptOutAction(StrEnum):
    """What an opt-out event does to a phone number."""

    OPT_OUT = "opt_out"
    """Stop messaging this number, from every sending service."""
    OPT_IN = "opt_in"
    """The number may be messaged again."""


class OptOutSource(StrEnum):
    """Where an opt-out event came from."""

    KEYWORD = "keyword"
    """A keyword in an inbound SMS (STOP, ARRET, START, ...)."""
    API = "api"
    """A manual change: ``smsrx optouts add|remove|import``."""


@dataclass(frozen=True, slots=True)
class OptOut:
    """A person asked to stop (or to start again) receiving messages: ``sms.opt-outs.v1``.

    The suppression list is the latest of these per phone number, by ``occurred_at``
    with ``event_id`` as the tie-break, so replays and duplicates change nothing.
    """

    kind: ClassVar[str] = "opt_out"

    event_id: str
    """Deterministic: from the inbound message for a keyword, from the change for the API."""
    phone: str
    """The phone number, E.164 with a leading ``+``; also the record key."""
    action: OptOutAction
    """``opt_out`` or ``opt_in``."""
    keyword: str | None
    """The keyword as configured (``STOP``, ``ARRET``); None for a manual change."""
    provider: str | None
    """The carrier the inbound SMS came through; None for a manual change."""
    inbound_message_id: str | None
    """The carrier's id of the inbound SMS; None for a manual change."""
    occurred_at: datetime
    """When the person asked: the SMS's own date when known, else when it was received."""
    received_at: datetime
    """When smsrx learnt of it (UTC)."""
    source: OptOutSource
    """``keyword`` or ``api``."""
    reason: str | None = None
    """Why, for a manual change (``--reason``)."""
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        """The Kafka record key: the phone number, so a compacted topic keeps its latest."""
        return self.phone.encode()

    @property
    def suppressed(self) -> bool:
        """Whether this event leaves the number suppressed."""
        return self.action is OptOutAction.OPT_OUT

    @classmethod
    def from_keyword(
        cls,
        *,
        phone: str,
        action: OptOutAction,
        keyword: str,
        provider: str,
        inbound_message_id: str,
        occurred_at: datetime,
        received_at: datetime,
    ) -> OptOut:
        """The event of a keyword in an inbound SMS: one per inbound message."""
        return cls(
            event_id=event_id_for("opt-out", provider, inbound_message_id),
            phone=phone,
            action=action,
            keyword=keyword,
            provider=provider,
            inbound_message_id=inbound_message_id,
            occurred_at=occurred_at,
            received_at=received_at,
            source=OptOutSource.KEYWORD,
        )

    @classmethod
    def manual(
        cls,
        *,
        phone: str,
        action: OptOutAction,
        occurred_at: datetime,
        received_at: datetime,
        reason: str | None = None,
    ) -> OptOut:
        """A manual change; the same change at the same moment is the same event."""
        return cls(
            event_id=event_id_for(
                "opt-out-api", phone, action.value, occurred_at.isoformat(), reason or ""
            ),
            phone=phone,
            action=action,
            keyword=None,
            provider=None,
            inbound_message_id=None,
            occurred_at=occurred_at,
            received_at=received_at,
            source=OptOutSource.API,
            reason=reason,
        )
