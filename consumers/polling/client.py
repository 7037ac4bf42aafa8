"""What a poll client is: one carrier's status API, asked about one message.

A client turns the carrier's answer into :class:`PollResult`: the statuses it reported,
or why there are none (the id is unknown, the credentials are refused, or the carrier
failed in a way worth retrying). It never raises for the carrier's answers; parsing is
pure and lives beside each client so that it is tested with the documentation's samples.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from smsrx.providers import Mapped

__all__ = ["Outcome", "PollClient", "PollResult", "PolledStatus"]


class Outcome(enum.StrEnum):
    """How one status request ended; also the ``outcome`` label of ``smsrx_polls_total``."""

    OK = "ok"
    """The carrier answered with statuses."""
    NOT_FOUND = "not_found"
    """The carrier knows no such message (Gateway SMS 404, VavaSMS code 709)."""
    AUTH_FAILED = "auth_failed"
    """The credentials were refused (HTTP 401/403, VavaSMS code 901)."""
    RETRY = "retry"
    """A 5xx, 429, timeout, refused connection or unreadable answer: try again later."""


@dataclass(frozen=True, slots=True)
class PolledStatus:
    """One recipient's status as the carrier reported it."""

    recipient: str
    """E.164 with a leading ``+``."""
    provider_status: str
    """The carrier's own value, verbatim (Gateway SMS ``report.status.name``)."""
    mapped: Mapped
    """Its canonical status, from the provider's mapping."""
    occurred_at: datetime | None
    """When the carrier says the status was reached, if it says."""
    raw: dict[str, Any]
    """The carrier's item for this recipient, verbatim."""


@dataclass(frozen=True, slots=True)
class PollResult:
    """The answer to one status request."""

    outcome: Outcome
    statuses: Sequence[PolledStatus] = field(default_factory=tuple)
    reason: str = ""
    """Why, for anything but OK: one line, no secret, fit for a log."""
    retry_after: float | None = None
    """Seconds the carrier asked to wait (``Retry-After``), when it asked."""


class PollClient(Protocol):
    """One carrier's status API."""

    provider: str
    """The provider name, as events carry it."""

    async def poll(self, message_id: str, recipients: Sequence[str]) -> PollResult:
        """Ask for the statuses of ``recipients`` of ``message_id`` (E.164 numbers)."""
        ...

    async def close(self) -> None:
        """Release the HTTP session."""
        ...
