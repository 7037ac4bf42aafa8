"""Fault injection: one of two receiver processes (`smsrx receiver --workers 2`) SIGKILLed under load."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator

import psutil
import pytest

from smsrx.cli.dev.process import Child, wait_for_port
from tests.fault.harness import System

pytestmark = pytest.mark.timeout(600)


class TwoWorkerSystem(System):
    """The fault harness's system, with the receiver started as `smsrx receiver --workers 2`."""

    def start_process(self, name: str) -> None:
        if name != "receiver":
            super().start_process(name)
            return
        child = Child(
            [sys.executable, "-m", "smsrx.cli", "receiver", "--workers", "2"],
            env=self.env,
            log_path=self.root / "receiver.log",
        )
        child.start()
        self.processes[name] = child
        wait_for_port("127.0.0.1", self.port, 30, alive=child.alive)

    def worker(self, slot: int) -> psutil.Process | None:
        """The receiver process that holds slot ``slot``'s spool lock."""
        pid = self.processes["receiver"].pid
        assert pid is not None
        lock = str(self.root / "spool" / f"worker-{slot}" / "lock")
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error):
                if any(f.path == lock for f in child.open_files()):
                    return child
        return None


@pytest.fixture
async def two_workers(tmp_path) -> AsyncIterator[TwoWorkerSystem]:
    """A fresh system whose receiver runs two worker processes."""
    system = TwoWorkerSystem(tmp_path / "system")
    try:
        await system.start()
        yield system
    finally:
        await system.stop()


async def test_receiver_worker_sigkill_under_two_workers(two_workers: TwoWorkerSystem) -> None:
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
