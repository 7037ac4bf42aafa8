"""Finding the record the database refuses, with no I/O of its own.

A batch that PostgreSQL refuses for its data (the transaction raises
:class:`~consumers.errors.RecordRejected`) is split in halves, and each half tried in
its own transaction, until the record at fault is alone. That record is counted invalid
and set aside as :class:`~consumers.batches.Rejected` for the dead-letter topic, with
PostgreSQL's reason; the records around it are applied. One bad record in a batch of n
costs about 2·log2(n) more transactions.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from consumers.batches import Applied, Batch, Rejected
from consumers.errors import RecordRejected

__all__ = ["Transaction", "isolate", "refusal"]


class Transaction(Protocol):
    """Applies a batch in one database transaction; raises ``RecordRejected`` when the
    database refuses its data."""

    async def __call__(self, batch: Batch, /) -> Applied: ...


async def isolate(batch: Batch, transaction: Transaction) -> Applied:
    """Apply ``batch`` with ``transaction``, halving what the database refuses down to
    the single records at fault, which come back in ``rejected``."""
    try:
        return await transaction(batch)
    except RecordRejected as exc:
        refused = exc
    if len(batch) > 1:
        first, second = batch.halves()
        result = await isolate(first, transaction)
        return result.merge(await isolate(second, transaction))
    assert batch.records is not None  # every batch the worker builds carries them
    return Applied(
        invalid=Counter({batch.items[0][0]: 1}),
        rejected=[Rejected(batch.records[0], refusal(refused))],
    )


def refusal(exc: BaseException) -> str:
    """Why the database refused a record: the cause's type, message and detail."""
    cause = exc.__cause__ or exc
    reason = f"refused by the database: {type(cause).__name__}: "
    reason += getattr(cause, "message", None) or str(cause)
    if detail := getattr(cause, "detail", None):
        reason += f" ({detail})"
    return reason
