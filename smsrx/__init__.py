"""smsrx: the shared event contract, settings and tooling of the SMS receipt processor.

The receiver, the consumers and the subscription manager all import the contract
from here, so the wire format is defined exactly once.
"""

from __future__ import annotations

from smsrx.statuses import FINAL_STATUSES, RANK, Status
from smsrx.topics import Topics

__all__ = ["FINAL_STATUSES", "RANK", "Status", "Topics", "__version__"]

__version__ = "0.1.0"
