"""Command-line entry points of the subscription manager."""

from __future__ import annotations

from typing import Any

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    """Register ``subscriptions`` on the ``smsrx`` parser."""
    del sub
