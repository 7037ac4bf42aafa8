"""Command-line entry points of the workers."""

from __future__ import annotations

from typing import Any

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    """Register ``consumer``, ``status`` and ``submissions`` on the ``smsrx`` parser."""
    del sub
