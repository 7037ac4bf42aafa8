"""Fault injection: one of two receiver processes (`smsrx receiver --workers 2`) SIGKILLed under load."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import psutil
import pytest

from tests.fault.harness import FaultStack

pytestmark = pytest.mark.timeout(600)


class TwoWorkerStack(FaultStack):
    """The fault harness's stack, with the receiver started as `smsrx receiver --workers 2`."""

    receiver_args = ("receiver", "--workers", "2")

    def worker(self, slot: int) -> psutil.Process | None:
        """The receiver process that holds slot ``slot``'s spool lock."""
        pid = self.children["receiver"].pid
        assert pid is not None
        lock = str(self.root / "spool" / f"worker-{slot}" / "lock")
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error):
                if any(f.path == lock for f in child.open_files()):
                    return child
        return None


@pytest.fixture
async def two_workers(tmp_path) -> AsyncIterator[TwoWorkerStack]:
    """A fresh system whose receiver runs two worker processes."""
    system = TwoWorkerStack(tmp_path / "system")
    try:
        await system.start()
        yield system
    finally:
        system.stop()


async def test_receiver_worker_sigkill_under_two_workers(two_workers: TwoWorkerStack) -> None:
    """One of two receiver workers SIGKILLed under load: it is restarted, every 200 is projected exactly once."""
    system = two_workers
    loading = asyncio.create_task(system.load(range(10000), rate=800, duplicates=0.05))
    await asyncio.sleep(4)
    victim, survivor = system.worker(1), system.worker(0)
    assert victim is not None and survivor is not None
    victim.kill()
    deadline = time.monotonic() + 30
    while (successor := system.worker(1)) is None or successor.pid == victim.pid:
        assert time.monotonic() < deadline, "worker 1 was not restarted"
        await asyncio.sleep(0.2)
    load = await loading
    report = await system.report(
        "a worker killed under --workers 2",
        load,
        published=await system.topic_records(),
        note=f"answers {load.statuses}, {load.errors} requests without an answer (cut off by the kill)",
    )
    print(report)
    # Every answer is a 200: the requests without one were cut off with the killed process.
    assert set(load.statuses) == {200}, load.statuses
    assert report.lost == 0, report
    assert report.double_counted == 0, report
    assert report.projected == report.distinct_acknowledged, report
    assert load.statuses.get(200, 0) >= load.sent - 200, load.statuses  # a handful cut off at most
    log = (system.root / "receiver.log").read_text(errors="replace")
    assert "receiver worker 1" in log and "restarting in" in log, log[-3000:]
    still = system.worker(0)
    assert still is not None and still.pid == survivor.pid  # worker 0 served throughout
