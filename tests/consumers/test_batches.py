"""The pure half of the worker, without Kafka or PostgreSQL: a fetch turned into parts
and lanes, a refused record isolated by halving, results merged, and the backoff."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from consumers.batches import Applied, Batch, Rejected, batch_of, prepare, split_lanes
from consumers.errors import DatabaseUnavailable, RecordRejected
from consumers.isolation import isolate, refusal
from consumers.offsets import Offsets
from smsrx.backoff import delays, next_delay
from smsrx.codec import DecodeError
from smsrx.partitioner import partition_for

RECEIPTS = "sms.delivery-receipts.v1"
SUBMISSIONS = "sms.submissions.v1"
PARTITIONS = list(range(4))


def record(topic: str, partition: int, offset: int, key: bytes, value: bytes | None) -> Any:
    """A consumer record as ``getmany`` returns it."""
    return ConsumerRecord(topic, partition, offset, 0, 0, key, value, None, 0, 0, ())


def decode(value: bytes) -> str:
    """A decoder for the tests: ``ev:<id>`` is the event ``<id>``."""
    if not value.startswith(b"ev:"):
        raise DecodeError(f"not an event: {value[:10]!r}")
    return value[3:].decode()


DECODERS = {RECEIPTS: decode, SUBMISSIONS: decode}


def fetch(messages: list[str]) -> dict[TopicPartition, list[Any]]:
    """Each message's submission and receipt, keyed by the message id, on the partition
    Kafka's default partitioner gives the key (both topics have 4 partitions)."""
    fetched: dict[TopicPartition, list[Any]] = {}
    for topic in (SUBMISSIONS, RECEIPTS):
        for message in messages:
            key = message.encode()
            tp = TopicPartition(topic, partition_for(key, PARTITIONS))
            batch = fetched.setdefault(tp, [])
            batch.append(record(topic, tp.partition, 100 + len(batch), key, b"ev:" + key))
    return fetched


def test_prepare_decodes_each_partition_and_sets_aside_what_does_not_decode() -> None:
    """Each partition becomes a part; a record that does not decode is rejected, still counted."""
    tp = TopicPartition(RECEIPTS, 3)
    fetched = {
        tp: [
            record(RECEIPTS, 3, 7, b"a", b"ev:a"),
            record(RECEIPTS, 3, 8, b"b", b"garbage\n\tbytes"),
            record(RECEIPTS, 3, 9, b"c", None),
            record(RECEIPTS, 3, 10, b"d", b"ev:d"),
        ],
        TopicPartition(RECEIPTS, 0): [],
    }
    book = Offsets()
    book.rebalanced({tp})

    prepared = prepare(fetched, DECODERS, book, started=12.5)

    assert prepared.started == 12.5
    assert list(prepared.parts) == [tp]  # an empty partition makes no part
    part = prepared.parts[tp]
    assert part.size == 4
    assert (part.span.first, part.span.next, part.span.generation) == (7, 11, 1)
    assert part.items == [(RECEIPTS, "a"), (RECEIPTS, "d")]
    assert [r.offset for r in part.records] == [7, 10]
    assert [(r.record.offset, r.reason) for r in part.rejected] == [
        (8, "not an event: b'garbage\\n\\tb'"),
        (9, "record has no value"),
    ]


def test_records_of_one_key_share_a_lane_on_every_topic() -> None:
    """With 2 lanes, a message's submission and receipt (same key) land in the same lane."""
    messages = [f"msg-{i}" for i in range(40)]
    prepared = prepare(fetch(messages), DECODERS, Offsets(), started=0.0)

    lanes = split_lanes(prepared.parts, 2)
    batches = [batch_of(lane, index) for index, lane in enumerate(lanes)]

    assert len(batches) == 2
    assert [b.lane for b in batches] == [0, 1]
    for lane in lanes:
        assert len({tp.partition % 2 for tp in lane}) == 1
    seen: dict[str, int] = {}
    for index, batch in enumerate(batches):
        for topic in (SUBMISSIONS, RECEIPTS):
            for event in batch.of(topic):
                assert seen.setdefault(event, index) == index, event
    assert sorted(seen) == sorted(messages)
    lane_of = {m: partition_for(m.encode(), PARTITIONS) % 2 for m in messages}
    first = lanes[0]
    first_number = next(iter(first)).partition % 2
    assert {m for m, number in lane_of.items() if number == first_number} == set(
        batches[0].of(RECEIPTS)
    )
    for batch in batches:  # items and records stay aligned, partition after partition
        assert [r.value[3:].decode() for r in batch.records or []] == [e for _, e in batch.items]


def test_lanes_come_in_order_of_their_first_part_and_one_lane_takes_all() -> None:
    """Lanes are numbered by their first part's order, not by remainder; one lane takes all."""
    parts = prepare(
        {
            TopicPartition(RECEIPTS, 1): [record(RECEIPTS, 1, 0, b"x", b"ev:x")],
            TopicPartition(RECEIPTS, 2): [record(RECEIPTS, 2, 0, b"y", b"ev:y")],
            TopicPartition(RECEIPTS, 3): [record(RECEIPTS, 3, 0, b"z", b"ev:z")],
        },
        DECODERS,
        Offsets(),
        started=0.0,
    ).parts

    two = split_lanes(parts, 2)
    assert [sorted(tp.partition for tp in lane) for lane in two] == [[1, 3], [2]]
    assert batch_of(two[0], 0).items == [(RECEIPTS, "x"), (RECEIPTS, "z")]
    (one,) = split_lanes(parts, 1)
    assert [tp.partition for tp in one] == [1, 2, 3]


def test_halves_keep_records_aligned_with_items() -> None:
    """An odd batch halves into the shorter first half and the rest, records alongside."""
    batch = Batch([(RECEIPTS, i) for i in range(5)], lane=1, records=list("abcde"))
    first, second = batch.halves()
    assert (first.items, first.records, first.lane) == (
        [(RECEIPTS, 0), (RECEIPTS, 1)],
        ["a", "b"],
        1,
    )
    assert (second.items, second.records) == (
        [(RECEIPTS, 2), (RECEIPTS, 3), (RECEIPTS, 4)],
        list("cde"),
    )
    assert [len(h) for h in Batch([(RECEIPTS, 0)]).halves()] == [0, 1]


class Refused(Exception):
    """Stands in for an asyncpg data error: a message and a detail."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class FakeDatabase:
    """A transaction that refuses any batch holding a poisoned event, as PostgreSQL
    refuses a whole transaction for one bad row; it records the batch of each call."""

    def __init__(self, poisoned: set[int]) -> None:
        self.poisoned = poisoned
        self.calls: list[list[int]] = []

    async def __call__(self, batch: Batch) -> Applied:
        events = [event for _, event in batch.items]
        self.calls.append(events)
        bad = [e for e in events if e in self.poisoned]
        if bad:
            cause = Refused(f"event {bad[0]} is bad", detail="a NUL byte")
            raise RecordRejected(str(cause)) from cause
        return Applied(applied=Counter({RECEIPTS: len(events)}))


def numbered(count: int) -> Batch:
    """A batch of events 0..count-1, each with a record named after it."""
    return Batch([(RECEIPTS, i) for i in range(count)], records=[f"rec-{i}" for i in range(count)])


async def test_halving_isolates_the_poisoned_record() -> None:
    """One bad record in 8: 7 applied, it alone rejected with the reason, in 7 transactions."""
    database = FakeDatabase({5})

    result = await isolate(numbered(8), database)

    assert result.applied == Counter({RECEIPTS: 7})
    assert result.invalid == Counter({RECEIPTS: 1})
    assert result.rejected == [
        Rejected("rec-5", "refused by the database: Refused: event 5 is bad (a NUL byte)")
    ]
    assert database.calls == [
        [0, 1, 2, 3, 4, 5, 6, 7],
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [4, 5],
        [4],
        [5],
        [6, 7],
    ]


async def test_halving_isolates_every_poisoned_record_in_order() -> None:
    """Two bad records, first and last of an odd batch: both rejected, in batch order."""
    result = await isolate(numbered(7), FakeDatabase({0, 6}))
    assert result.applied == Counter({RECEIPTS: 5})
    assert [r.record for r in result.rejected] == ["rec-0", "rec-6"]


async def test_a_batch_the_database_accepts_is_applied_once() -> None:
    """No refusal: one transaction, its result as it is."""
    database = FakeDatabase(set())
    result = await isolate(numbered(3), database)
    assert database.calls == [[0, 1, 2]]
    assert (result.applied, result.rejected) == (Counter({RECEIPTS: 3}), [])


async def test_an_unavailable_database_is_not_halved() -> None:
    """Only a refusal of the data halves a batch: an outage goes to the caller's retry."""
    calls = 0

    async def down(batch: Batch) -> Applied:
        nonlocal calls
        calls += 1
        raise DatabaseUnavailable("connection refused")

    with pytest.raises(DatabaseUnavailable):
        await isolate(numbered(4), down)
    assert calls == 1


def test_refusal_names_the_cause_without_a_detail() -> None:
    """Without a cause or a detail the reason is the error's own type and text."""
    assert refusal(RecordRejected("value too long")) == (
        "refused by the database: RecordRejected: value too long"
    )


def test_applied_merge_adds_counts_and_keeps_order() -> None:
    """Merging adds counters by topic, appends callbacks and rejections in order, returns self."""
    calls: list[str] = []
    first = Applied(
        applied=Counter({RECEIPTS: 2}),
        duplicate=Counter({SUBMISSIONS: 1}),
        on_commit=[lambda: calls.append("first")],
        rejected=[Rejected("r1", "one")],
    )
    second = Applied(
        applied=Counter({RECEIPTS: 3, SUBMISSIONS: 1}),
        invalid=Counter({RECEIPTS: 1}),
        on_commit=[lambda: calls.append("second")],
        rejected=[Rejected("r2", "two")],
    )

    merged = first.merge(second)

    assert merged is first
    assert merged.applied == Counter({RECEIPTS: 5, SUBMISSIONS: 1})
    assert merged.duplicate == Counter({SUBMISSIONS: 1})
    assert merged.invalid == Counter({RECEIPTS: 1})
    assert [r.record for r in merged.rejected] == ["r1", "r2"]
    for callback in merged.on_commit:
        callback()
    assert calls == ["first", "second"]
    assert second.applied == Counter({RECEIPTS: 3, SUBMISSIONS: 1})  # untouched


def test_a_rejected_record_has_a_one_line_reason_and_becomes_a_dead_letter() -> None:
    """The reason is folded onto one line; the dead letter carries the record whole."""
    raw = record(RECEIPTS, 2, 41, b"k", b"\xffjunk")
    rejected = Rejected(raw, "not JSON:\n  unexpected\tbyte ")
    assert rejected.reason == "not JSON: unexpected byte"
    letter = rejected.letter("analytics")
    assert (letter.source, letter.reason, letter.topic) == ("analytics", rejected.reason, RECEIPTS)
    assert (letter.key, letter.value, letter.partition, letter.offset) == (b"k", b"\xffjunk", 2, 41)


def test_backoff_doubles_up_to_the_cap() -> None:
    """The worker's waits: 0.2 s doubling to at most 10 s, and staying there."""
    assert list(itertools.islice(delays(0.2, 10.0), 9)) == pytest.approx(
        [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0]
    )
    assert next_delay(4.0, 30.0) == 8.0
    assert next_delay(20.0, 30.0) == 30.0


def test_each_backoff_sequence_starts_over() -> None:
    """Two sequences are independent: a new retry loop starts from the first wait."""
    first = delays(1.0, 30.0)
    assert [next(first), next(first), next(first)] == [1.0, 2.0, 4.0]
    assert next(delays(1.0, 30.0)) == 1.0


@pytest.mark.parametrize(("first", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_backoff_refuses_a_wait_that_would_never_grow_or_exceeds_its_cap(
    first: float, cap: float
) -> None:
    """A zero or negative first wait, or one past the cap, is a mistake caught at once."""
    with pytest.raises(ValueError, match="0 < first <= cap"):
        delays(first, cap)
