"""Carrier adapters and the table that routes each callback path to one.

An adapter is a pure function ``parse(content_type, body, received_at) -> events``:
no server and no I/O, so it is tested with recorded payloads from ``tests/samples/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from receiver.adapters import orange, vavasms
from smsrx.events import DeliveryReceipt, InboundMessage

__all__ = ["ROUTES", "Route"]

Event = DeliveryReceipt | InboundMessage
Parser = Callable[[str | None, bytes, datetime], Sequence[Event]]


@dataclass(frozen=True, slots=True)
class Route:
    """One callback endpoint: its provider (which names its allowlist) and parser."""

    path: str
    provider: str
    parse: Parser
    summary: str


ROUTES: tuple[Route, ...] = (
    Route("/callbacks/orange/dr", orange.PROVIDER, orange.parse, "Orange SMS API delivery receipt"),
    Route("/callbacks/vavasms/inbound", vavasms.PROVIDER, vavasms.parse, "VavaSMS inbound SMS"),
)
