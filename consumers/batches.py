"""A fetched batch on its way to the database, without I/O.

``getmany()`` returns records by partition. :func:`prepare` decodes them into one
:class:`Part` per partition, with its offset :class:`~consumers.offsets.Span`; a record
that does not decode is set aside as :class:`Rejected`. :func:`split_lanes` splits the
parts into a worker's concurrent transactions by partition number (records of one
message share it on every topic, so two lanes touch disjoint rows), and
:func:`batch_of` joins the parts of one lane into the :class:`Batch` that a worker's
``apply`` receives. :class:`Applied` is what ``apply`` returns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from consumers.offsets import Offsets, Span
from smsrx.codec import DecodeError
from smsrx.deadletter import DeadLetter

__all__ = [
    "Applied",
    "Batch",
    "Decoder",
    "Part",
    "Prepared",
    "Rejected",
    "batch_of",
    "prepare",
    "split_lanes",
]

Decoder = Callable[[bytes], Any]
"""Turns a record value into an event, or raises :class:`~smsrx.codec.DecodeError`."""


class Batch:
    """The decoded events of one ``getmany``, as ``(topic, event)`` in consumption order."""

    __slots__ = ("_by_topic", "items", "lane", "records")

    def __init__(
        self, items: list[tuple[str, Any]], lane: int = 0, records: list[Any] | None = None
    ) -> None:
        self.items = items
        self.lane = lane
        """Which of the worker's concurrent transactions this is (0: the first)."""
        self.records = records
        """The raw record of each item, in the same order (for the dead-letter topic)."""
        self._by_topic: dict[str, list[Any]] | None = None

    def of(self, topic: str) -> list[Any]:
        """The events of one topic, in order."""
        if self._by_topic is None:
            self._by_topic = {}
            for name, event in self.items:
                self._by_topic.setdefault(name, []).append(event)
        return self._by_topic.get(topic, [])

    def halves(self) -> tuple[Batch, Batch]:
        """The first and second half, to isolate a record the database refuses."""
        middle = len(self.items) // 2
        records = self.records
        return (
            Batch(self.items[:middle], self.lane, None if records is None else records[:middle]),
            Batch(self.items[middle:], self.lane, None if records is None else records[middle:]),
        )

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the worker cannot use, bound for the dead-letter topic."""

    record: Any
    """The consumer record, as fetched (topic, partition, offset, key, value)."""
    reason: str
    """Why, in one line."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", " ".join(self.reason.split()))

    def letter(self, source: str) -> DeadLetter:
        """The dead letter that ``source`` (a worker's role) publishes for this record."""
        record = self.record
        return DeadLetter(
            source=source,
            reason=self.reason,
            topic=record.topic,
            key=record.key,
            value=record.value,
            partition=record.partition,
            offset=record.offset,
        )


@dataclass(slots=True)
class Applied:
    """What a batch did, by topic; reported once its transaction has committed."""

    applied: Counter[str] = field(default_factory=Counter)
    """Events that changed the database."""
    duplicate: Counter[str] = field(default_factory=Counter)
    """Events already applied before (redelivered or repeated in the batch)."""
    invalid: Counter[str] = field(default_factory=Counter)
    """Records that could not be decoded, or that the database refused."""
    on_commit: list[Callable[[], None]] = field(default_factory=list)
    """Run once the transaction committed (metrics, staging the outbox)."""
    rejected: list[Rejected] = field(default_factory=list)
    """Records the database refused, for the dead-letter topic."""

    def merge(self, other: Applied) -> Applied:
        """Add ``other`` into this one and return it."""
        self.applied.update(other.applied)
        self.duplicate.update(other.duplicate)
        self.invalid.update(other.invalid)
        self.on_commit.extend(other.on_commit)
        self.rejected.extend(other.rejected)
        return self


@dataclass(slots=True)
class Part:
    """The records of one partition in a batch."""

    size: int
    """Records fetched, those that did not decode included."""
    span: Span
    """Their offsets, as the bookkeeping saw them fetched."""
    items: list[tuple[str, Any]] = field(default_factory=list)
    """The decoded events, as ``(topic, event)``."""
    records: list[Any] = field(default_factory=list)
    """The raw record of each item."""
    rejected: list[Rejected] = field(default_factory=list)
    """Records that did not decode."""


@dataclass(slots=True)
class Prepared:
    """A fetched and decoded batch, waiting for its transaction."""

    started: float
    """When it was fetched (``time.perf_counter()``), for the batch duration."""
    parts: dict[TopicPartition, Part] = field(default_factory=dict)


def prepare(
    records: Mapping[TopicPartition, list[Any]],
    decoders: Mapping[str, Decoder],
    offsets: Offsets,
    started: float,
) -> Prepared:
    """Decode what ``getmany()`` returned, one :class:`Part` per partition with records.

    Call it as soon as the fetch returns, with no await in between: ``offsets`` must see
    each fetch in the generation and epoch it was made in.
    """
    prepared = Prepared(started=started)
    for tp, batch in records.items():
        if not batch:
            continue
        decode = decoders[tp.topic]
        span = offsets.fetched(tp, batch[0].offset, batch[-1].offset + 1)
        part = Part(len(batch), span)
        for record in batch:
            try:
                if record.value is None:
                    raise DecodeError("record has no value")  # noqa: TRY301
                part.items.append((tp.topic, decode(record.value)))
            except DecodeError as exc:
                part.rejected.append(Rejected(record, str(exc)))
            else:
                part.records.append(record)
        prepared.parts[tp] = part
    return prepared


def split_lanes(
    parts: Mapping[TopicPartition, Part], lanes: int
) -> list[dict[TopicPartition, Part]]:
    """The parts of each lane (partition number modulo ``lanes``) that has any, in the
    order their first part comes."""
    split: dict[int, dict[TopicPartition, Part]] = {}
    for tp, part in parts.items():
        split.setdefault(tp.partition % lanes, {})[tp] = part
    return list(split.values())


def batch_of(parts: Mapping[TopicPartition, Part], lane: int) -> Batch:
    """The parts' events and records in one batch, partition after partition."""
    return Batch(
        [item for part in parts.values() for item in part.items],
        lane,
        [record for part in parts.values() for record in part.records],
    )
