"""Which offsets a worker may commit: the bookkeeping between fetch and commit, without I/O.

A worker fetches batch N+1 while batch N is in its transaction, and a batch can be
abandoned (the database is down when a stop or a revoke comes). Committing an offset
says every record before it was applied, so three rules guard it:

1. **Generation.** Each revoke and each assignment starts a new generation. A batch
   fetched in an older one is dropped: after an assignment the consumer starts again
   from the committed offset, so its records are fetched again.
2. **Epoch.** Each seek starts a new epoch of its partition. When a batch is abandoned
   its partitions are sought back to its first offset, and a batch fetched before that
   seek is dropped, since its records are fetched again after the abandoned ones.
3. **Sequence.** A partition's batch is applied only if it starts at the partition's
   expected offset (where the last applied batch ended). Otherwise the batch is dropped
   and the partition sought back to the expected offset. A broker may make a later
   produce batch visible before an earlier one: the development broker does, with two
   producers on one partition (``receiver --workers 2``), and a consumer that moved on
   would skip the earlier batch for good. Fetched again, the records are there. Only
   a gap that is still there after :data:`GAP_TRIES` fetches is taken as offsets that
   hold no record (transaction markers, compacted records), and passed with a warning.
   After an assignment the first batch sets the expected offset, as the consumer starts
   at the committed one.

Only an applied batch moves the offset to commit.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from aiokafka import TopicPartition

__all__ = ["Admission", "Offsets", "Span"]


@dataclass(frozen=True, slots=True)
class Span:
    """The offsets of one partition's records in one fetched batch."""

    first: int
    """Offset of the first record."""
    next: int
    """One past the offset of the last record."""
    generation: int
    """The rebalance generation it was fetched in."""
    epoch: int
    """The partition's epoch (seeks) it was fetched in."""


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a span may be applied, and where to seek its partition if it may not."""

    apply: bool
    """Apply it: it starts where the partition's applied records end."""
    seek: int | None = None
    """Seek the partition back to this offset (a gap: records before it not yet seen)."""
    skipped: tuple[int, int] | None = None
    """Applied past a gap that stayed: the offsets ``[start, end)`` that held no record."""


GAP_TRIES = 5
"""Fetches a gap must survive, each after a seek back to it, before it is passed."""


class Offsets:
    """Expected, applied and committed offsets of the partitions a worker consumes."""

    def __init__(self) -> None:
        self.generation = 0
        """Incremented on each revoke and assignment."""
        self._epochs = itertools.count(1)
        self._epoch: dict[TopicPartition, int] = {}
        self._gaps: dict[TopicPartition, tuple[int, int]] = {}
        self._expected: dict[TopicPartition, int] = {}
        self._done: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def rebalanced(self, forget: Collection[TopicPartition] = ()) -> None:
        """A revoke begins or partitions were assigned: start a new generation, and forget
        ``forget`` (assigned partitions start again from their committed offset)."""
        self.generation += 1
        for tp in forget:
            self.forget(tp)

    def forget(self, tp: TopicPartition) -> None:
        """Drop everything known about a partition (revoked, or the worker closes)."""
        for book in (self._epoch, self._gaps, self._expected, self._done, self._committed):
            book.pop(tp, None)

    def partitions(self) -> set[TopicPartition]:
        """The partitions with something recorded."""
        return set(self._epoch) | set(self._gaps) | set(self._expected) | set(self._done)

    def fetched(self, tp: TopicPartition, first: int, next_offset: int) -> Span:
        """Record that the consumer returned ``[first, next_offset)`` of ``tp``; call it as
        soon as the fetch returns, in fetch order."""
        return Span(first, next_offset, self.generation, self._epoch.get(tp, 0))

    def admit(self, tp: TopicPartition, span: Span) -> Admission:
        """Whether ``span`` may be applied now; a refused span is dropped, and its
        partition sought back when ``seek`` says so."""
        if span.generation != self.generation or span.epoch != self._epoch.get(tp, 0):
            return Admission(apply=False)
        expected = self._expected.get(tp)
        if expected is None or span.first == expected:
            self._gaps.pop(tp, None)
            return Admission(apply=True)
        if span.first > expected:
            at, tries = self._gaps.get(tp, (expected, 0))
            tries = tries + 1 if at == expected else 1
            if tries > GAP_TRIES:
                del self._gaps[tp]
                return Admission(apply=True, skipped=(expected, span.first))
            self._gaps[tp] = (expected, tries)
        self._sought(tp, expected)
        return Admission(apply=False, seek=expected)

    def applied(self, tp: TopicPartition, span: Span) -> None:
        """An admitted span was applied: records up to ``span.next`` may be committed."""
        self._expected[tp] = span.next
        self._done[tp] = span.next

    def abandoned(self, tp: TopicPartition, span: Span) -> int:
        """An admitted span was not applied; return the offset to seek its partition to,
        so that its records are fetched again."""
        target = self._expected.get(tp, span.first)
        self._sought(tp, target)
        return target

    def to_commit(self, partitions: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        """Offsets applied and not yet committed, among ``partitions``."""
        return {
            tp: offset
            for tp, offset in self._done.items()
            if tp in partitions and self._committed.get(tp) != offset
        }

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """The broker acknowledged ``offsets``."""
        self._committed.update(offsets)

    def _sought(self, tp: TopicPartition, offset: int) -> None:
        self._epoch[tp] = next(self._epochs)
        self._expected[tp] = offset
