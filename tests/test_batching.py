"""The one batching primitive: natural batches, no timer, errors to their callers."""

from __future__ import annotations

import asyncio

import pytest

from smsrx.batching import Batcher


class _Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.running = 0
        self.peak = 0

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        return [ValueError(i) if i < 0 else i * 10 for i in items]


async def test_calls_of_one_loop_turn_share_a_batch() -> None:
    """Items submitted in the same turn of the loop go in one batch, and each gets its result."""
    fn = _Recorder()
    batcher: Batcher[int, int] = Batcher(fn, name="t")
    assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert fn.batches == [[0, 1, 2, 3, 4]]


async def test_a_lone_call_goes_without_waiting_for_a_timer() -> None:
    """A call that finds nothing in flight runs at the next loop turn, not after a linger."""
    fn = _Recorder()
    batcher: Batcher[int, int] = Batcher(fn, name="t")
    future = batcher.submit_nowait(1)
    await asyncio.sleep(0)  # the launch
    await asyncio.sleep(0)  # the batch function runs and returns
    await asyncio.sleep(0)
    assert future.done() and future.result() == 10


async def test_calls_during_a_batch_join_the_next() -> None:
    """Items submitted while a batch is in flight all go together in the following batch."""
    fn = _Recorder(delay=0.02)
    batcher: Batcher[int, int] = Batcher(fn, name="t")
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.005)
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
    await asyncio.gather(first, *rest)
    assert fn.batches == [[0], [1, 2, 3, 4, 5]]
    assert fn.peak == 1


async def test_max_batch_and_concurrency() -> None:
    """Batches never exceed max_batch, and at most `concurrency` run at once."""
    fn = _Recorder(delay=0.01)
    batcher: Batcher[int, int] = Batcher(fn, name="t", max_batch=3, concurrency=2)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert all(len(b) <= 3 for b in fn.batches)
    assert sorted(i for b in fn.batches for i in b) == list(range(10))
    assert fn.peak == 2


async def test_item_and_batch_errors_reach_their_callers() -> None:
    """An exception in the results fails one item; a raised one fails the whole batch."""
    fn = _Recorder()
    batcher: Batcher[int, int] = Batcher(fn, name="t")
    ok, bad = await asyncio.gather(batcher.submit(1), batcher.submit(-1), return_exceptions=True)
    assert ok == 10 and isinstance(bad, ValueError)

    calls = []

    async def broken_once(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise OSError("disk")
        return items

    failing: Batcher[int, int] = Batcher(broken_once, name="t")
    outcomes = await asyncio.gather(*(failing.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, OSError) for o in outcomes)
    assert await failing.submit(4) == 4  # the batcher keeps serving after a failed batch


async def test_close_finishes_what_was_submitted() -> None:
    """close() waits for the batches in flight and the items still waiting, then refuses more."""
    fn = _Recorder(delay=0.01)
    batcher: Batcher[int, int] = Batcher(fn, name="t", max_batch=2)
    futures = [batcher.submit_nowait(i) for i in range(5)]
    await batcher.close()
    assert [f.result() for f in futures] == [0, 10, 20, 30, 40]
    with pytest.raises(RuntimeError):
        batcher.submit_nowait(9)


async def test_a_pause_gathers_fuller_batches() -> None:
    """With a pause (for work nobody waits on), items arriving during it share the next batch."""
    fn = _Recorder()
    batcher: Batcher[int, int] = Batcher(fn, name="t", pause=0.05)
    first = batcher.submit_nowait(0)
    await asyncio.sleep(0.01)  # the first batch ran; the batcher now rests
    rest = [batcher.submit_nowait(i) for i in range(1, 4)]
    await asyncio.sleep(0.01)
    later = [batcher.submit_nowait(i) for i in range(4, 6)]
    await asyncio.gather(first, *rest, *later)
    assert fn.batches == [[0], [1, 2, 3, 4, 5]]
