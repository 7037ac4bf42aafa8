"""The offset bookkeeping of a worker, without Kafka: which fetched batches may be
recorded, and where a partition must be sought back (issue #10, defect 2)."""

from __future__ import annotations

from aiokafka import TopicPartition

from consumers.offsets import Admission, Offsets

TP = TopicPartition("sms.delivery-receipts.v1", 0)
OTHER = TopicPartition("sms.delivery-receipts.v1", 1)


def test_a_batch_prefetched_before_a_rebalance_is_never_recorded() -> None:
    """Batch 100-199 is abandoned on a revoke while 200-299 was prefetched; the partition is
    assigned again: 200-299 is dropped, nothing past 100 is recorded, and the batch fetched
    again from 100 is."""
    book = Offsets()
    book.rebalanced({TP})  # assigned
    first = book.fetched(TP, 100, 200)
    second = book.fetched(TP, 200, 300)
    assert book.admit(TP, first) == Admission(apply=True)
    book.rebalanced(set())  # revoke begins; PostgreSQL is down, the batch is abandoned
    assert book.abandoned(TP, first) == 100
    book.forget(TP)
    book.rebalanced({TP})  # the same partition is assigned again
    assert book.admit(TP, second) == Admission(apply=False)
    assert book.to_commit({TP}) == {}

    again = book.fetched(TP, 100, 200)
    assert book.admit(TP, again) == Admission(apply=True)
    book.applied(TP, again)
    assert book.to_commit({TP}) == {TP: 200}


def test_a_batch_fetched_before_a_seek_back_is_dropped() -> None:
    """Without a rebalance: once batch 100-199 is abandoned (and sought back), the batch
    prefetched after it is dropped, and the records fetched again from 100 are applied."""
    book = Offsets()
    book.rebalanced({TP})
    first = book.fetched(TP, 100, 200)
    second = book.fetched(TP, 200, 300)
    assert book.admit(TP, first).apply
    assert book.abandoned(TP, first) == 100
    assert book.admit(TP, second) == Admission(apply=False)
    again = book.fetched(TP, 100, 200)
    assert book.admit(TP, again).apply
    book.applied(TP, again)
    assert book.to_commit({TP}) == {TP: 200}


def test_a_batch_starting_at_a_gap_is_refused_with_a_seek() -> None:
    """A batch that starts past the next expected offset (the one before it was never
    admitted) is not applied: the partition must be sought back to the expected offset."""
    book = Offsets()
    book.rebalanced({TP})
    first = book.fetched(TP, 100, 200)
    assert book.admit(TP, first).apply
    book.applied(TP, first)
    book.fetched(TP, 200, 250)  # lost
    later = book.fetched(TP, 250, 300)
    prefetched = book.fetched(TP, 300, 350)
    assert book.admit(TP, later) == Admission(apply=False, seek=200)
    assert book.to_commit({TP}) == {TP: 200}
    # After the seek the stream starts again at 200; a batch fetched before it is stale.
    assert book.admit(TP, prefetched) == Admission(apply=False)
    again = book.fetched(TP, 200, 300)
    assert book.admit(TP, again).apply
    book.applied(TP, again)
    assert book.to_commit({TP}) == {TP: 300}


def test_offsets_the_broker_skips_are_not_a_gap() -> None:
    """A batch that directly follows the last applied one in the fetch stream is applied
    even when it starts later (transaction markers and compacted records have offsets but
    are never returned), also right after a seek back."""
    book = Offsets()
    book.rebalanced({TP})
    first = book.fetched(TP, 100, 200)
    book.admit(TP, first)
    book.applied(TP, first)
    following = book.fetched(TP, 201, 300)  # offset 200 is a commit marker
    assert book.admit(TP, following).apply
    book.applied(TP, following)
    abandoned = book.fetched(TP, 300, 400)
    assert book.admit(TP, abandoned).apply
    assert book.abandoned(TP, abandoned) == 300
    after_seek = book.fetched(TP, 302, 400)  # 300 and 301: markers
    assert book.admit(TP, after_seek).apply
    book.applied(TP, after_seek)
    assert book.to_commit({TP}) == {TP: 400}


def test_the_first_batch_after_an_assignment_sets_the_expected_offset() -> None:
    """After an assignment the consumer starts at the committed offset: its first batch is
    applied wherever it starts, and the next must follow it."""
    book = Offsets()
    book.rebalanced({TP, OTHER})
    a = book.fetched(TP, 5000, 5100)
    b = book.fetched(OTHER, 0, 10)
    assert book.admit(TP, a).apply and book.admit(OTHER, b).apply
    book.applied(TP, a)
    book.applied(OTHER, b)
    assert book.to_commit({TP, OTHER}) == {TP: 5100, OTHER: 10}


def test_only_offsets_applied_and_not_yet_committed_are_to_commit() -> None:
    """Offsets are committed once, only for the partitions asked, and forgotten with them."""
    book = Offsets()
    book.rebalanced({TP, OTHER})
    for tp in (TP, OTHER):
        span = book.fetched(tp, 0, 10)
        book.admit(tp, span)
        book.applied(tp, span)
    assert book.to_commit({TP}) == {TP: 10}
    book.committed({TP: 10})
    assert book.to_commit({TP, OTHER}) == {OTHER: 10}
    book.forget(OTHER)
    assert book.to_commit({TP, OTHER}) == {}
