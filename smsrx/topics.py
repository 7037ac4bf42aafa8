"""Kafka topic names: part of the public, versioned contract.

A breaking change to a record's schema gets a new topic (``.v2``); additive fields
do not. Every record is keyed by the provider's message id, so all the events of one
message stay in order on one partition.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEAD_LETTER",
    "DELIVERY_RECEIPTS",
    "INBOUND",
    "MESSAGE_STATUS",
    "SUBMISSIONS",
    "Topics",
]

DELIVERY_RECEIPTS = "sms.delivery-receipts.v1"
INBOUND = "sms.inbound.v1"
SUBMISSIONS = "sms.submissions.v1"
MESSAGE_STATUS = "sms.message-status.v1"
DEAD_LETTER = "sms.dead-letter.v1"


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names in force, with an optional deployment prefix (``SMSRX_TOPIC_PREFIX``)."""

    prefix: str = ""

    @property
    def delivery_receipts(self) -> str:
        """Canonical delivery receipts, one record per carrier callback."""
        return self.prefix + DELIVERY_RECEIPTS

    @property
    def inbound(self) -> str:
        """Inbound SMS (MO)."""
        return self.prefix + INBOUND

    @property
    def submissions(self) -> str:
        """Messages a carrier accepted, published by the sending services."""
        return self.prefix + SUBMISSIONS

    @property
    def message_status(self) -> str:
        """Changes of a recipient's current status, published by status-projection."""
        return self.prefix + MESSAGE_STATUS

    @property
    def dead_letter(self) -> str:
        """Records a worker or the spool replayer could not use, with the reason."""
        return self.prefix + DEAD_LETTER

    def all(self) -> tuple[str, ...]:
        """Every topic smsrx reads or writes."""
        return (
            self.delivery_receipts,
            self.inbound,
            self.submissions,
            self.message_status,
            self.dead_letter,
        )
