"""The offset bookkeeping of a worker, without Kafka: which fetched batches may be
recorded, and where a partition must be sought back (issue #10, defect 2)."""

from __future__ import annotations

from aiokafka import TopicPartition

from consumers.offsets import GAP_TRIES, Admission, Offsets

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


def test_a_batch_visible_before_an_earlier_one_is_fetched_again() -> None:
    """A later produce batch the broker showed before an earlier one (two producers on a
    partition) is not applied past the unseen records: fetched again, they are there."""
    book = Offsets()
    book.rebalanced({TP})
    first = book.fetched(TP, 100, 200)
    book.admit(TP, first)
    book.applied(TP, first)
    early = book.fetched(TP, 204, 300)  # 200-203 not visible yet
    assert book.admit(TP, early) == Admission(apply=False, seek=200)
    again = book.fetched(TP, 200, 300)
    assert book.admit(TP, again) == Admission(apply=True)
    book.applied(TP, again)
    assert book.to_commit({TP}) == {TP: 300}


def test_a_gap_that_stays_is_passed_after_a_few_fetches() -> None:
    """Offsets that hold no record (transaction markers, compaction) stay a gap however
    often they are fetched: after GAP_TRIES refusals the batch is applied past them."""
    book = Offsets()
    book.rebalanced({TP})
    first = book.fetched(TP, 100, 200)
    book.admit(TP, first)
    book.applied(TP, first)
    for _ in range(GAP_TRIES):
        following = book.fetched(TP, 201, 300)  # offset 200 is a commit marker
        assert book.admit(TP, following) == Admission(apply=False, seek=200)
    following = book.fetched(TP, 201, 300)
    assert book.admit(TP, following) == Admission(apply=True, skipped=(200, 201))
    book.applied(TP, following)
    assert book.to_commit({TP}) == {TP: 300}
    # A new gap further on starts counting afresh.
    later = book.fetched(TP, 302, 400)
    assert book.admit(TP, later) == Admission(apply=False, seek=300)


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
