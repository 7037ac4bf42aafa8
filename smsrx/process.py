"""Process helpers that production code needs (the dev stack's are in smsrx.cli.dev)."""

from __future__ import annotations

import contextlib
import ctypes

__all__ = ["set_parent_death_signal"]

_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux).

    So even a SIGKILLed supervisor leaves no orphan behind.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
