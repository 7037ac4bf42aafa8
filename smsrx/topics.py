"""Kafka topic names: part of the public, versioned contract.

A breaking change to a record's schema gets a new topic (``.v2``); additive fields
do not. Records about a message are keyed by the provider's message id, so all the
events of one message stay in order on one partition; opt-outs are keyed by the phone
number, so a number's changes stay in order and compaction keeps its latest.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEAD_LETTER",
    "DELIVERY_RECEIPTS",
    "INBOUND",
    "INBOUND_ROUTED",
    "MESSAGE_STATUS",
    "OPT_OUTS",
    "SUBMISSIONS",
    "Topics",
]

DELIVERY_RECEIPTS = "sms.delivery-receipts.v1"
INBOUND = "sms.inbound.v1"
SUBMISSIONS = "sms.submissions.v1"
MESSAGE_STATUS = "sms.message-status.v1"
DEAD_LETTER = "sms.dead-letter.v1"
OPT_OUTS = "sms.opt-outs.v1"
INBOUND_ROUTED = "sms.inbound.routed.v1"
COMPACTED = frozenset({OPT_OUTS})
"""Topics kept compacted: the latest record per key is what matters (a number's opt-out)."""


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

    @property
    def opt_outs(self) -> str:
        """Opt-outs and opt-ins, keyed by phone number; compacted."""
        return self.prefix + OPT_OUTS

    @property
    def inbound_routed(self) -> str:
        """Inbound SMS with the route their keyword chose, published by the inbound worker."""
        return self.prefix + INBOUND_ROUTED

    def compacted(self, name: str) -> bool:
        """Whether topic ``name`` (with this prefix) is kept compacted."""
        return name.removeprefix(self.prefix) in COMPACTED

    def all(self) -> tuple[str, ...]:
        """Every topic smsrx reads or writes."""
        return (
            self.delivery_receipts,
            self.inbound,
            self.submissions,
            self.message_status,
            self.dead_letter,
            self.opt_outs,
            self.inbound_routed,
        )
