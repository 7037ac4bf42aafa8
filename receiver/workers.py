"""``smsrx receiver --workers N``: N serving processes on one port, and the parent that
supervises them.

Each worker process serves the port (``SO_REUSEPORT``) in its own slot: its own spool
(``<SMSRX_SPOOL_DIR>/worker-<slot>``, see :mod:`receiver.slots`) and metrics port
(``SMSRX_RECEIVER_METRICS_PORT`` + slot). The parent only supervises:

- a worker that dies is started again on its slot, after 1 s, then 2, 4 … up to 30 s
  if it keeps dying (back to 1 s once it has run for a minute);
- a worker that cannot start (it reports why: its spool is locked by another process,
  its port cannot be bound, ...; or its first run fails within seconds) stops the
  parent: the other workers are drained, one line says why, the exit code is 3;
- SIGTERM or SIGINT to the parent drains every worker (each once), then it exits.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Protocol

from receiver.slots import Slot
from smsrx.errors import EXIT_CANNOT_START
from smsrx.settings import Settings

__all__ = ["CANNOT_START", "Supervisor", "WorkerTarget"]

logger = logging.getLogger(__name__)

CANNOT_START = EXIT_CANNOT_START
"""Exit code of a worker, and of the parent, when a worker cannot start."""

_FIRST_DELAY = 1.0
_MAX_DELAY = 30.0
_STABLE_AFTER = 60.0  # a worker that ran this long restarts after the first delay again
_START_GRACE = 10.0  # a slot's first process failing this soon is taken as unable to start
_STOP_MARGIN = 15.0  # beyond SMSRX_SHUTDOWN_TIMEOUT, before a worker is killed


class WorkerTarget(Protocol):
    """The function a worker process runs; it sends a one-line reason on ``report``
    and exits with CANNOT_START when it cannot start."""

    def __call__(self, settings: Settings, slot: Slot, report: Connection) -> None: ...


def _describe(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"signal {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


@dataclass
class _Worker:
    slot: Slot
    process: BaseProcess | None = None
    report: Connection | None = None
    started: float = 0.0
    starts: int = 0
    delay: float = _FIRST_DELAY
    restart_at: float | None = None


class Supervisor:
    """Starts one process per slot, restarts those that die, stops them all together."""

    def __init__(self, settings: Settings, count: int, target: WorkerTarget) -> None:
        self.settings = settings
        self.target = target
        self.workers = [_Worker(Slot(index, count)) for index in range(count)]
        self._context = multiprocessing.get_context("spawn")
        self._signalled: int | None = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)

    def run(self) -> int:
        """Supervise until a signal or a worker that cannot start; the exit code."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for worker in self.workers:
                self._start(worker)
            logger.info(
                "receiver started %d processes on port %d; metrics ports %d-%d",
                len(self.workers),
                self.settings.receiver_port,
                self.settings.receiver_metrics_port,
                self.settings.receiver_metrics_port + len(self.workers) - 1,
            )
            failure = self._supervise()
            return self._stop(failure)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signalled is None:
            self._signalled = signum
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"\0")

    def _supervise(self) -> str | None:
        """Run until a signal (None) or a worker that cannot start (its reason)."""
        while self._signalled is None:
            now = time.monotonic()
            due = [w.restart_at for w in self.workers if w.restart_at is not None]
            timeout = max(0.0, min(due) - now) if due else None
            running = [w.process.sentinel for w in self.workers if w.process is not None]
            ready = wait([*running, self._wake_read], timeout)
            if self._wake_read in ready:
                os.read(self._wake_read, 512)
            for worker in self.workers:
                if self._signalled is not None:
                    break
                if worker.process is not None and not worker.process.is_alive():
                    failure = self._exited(worker)
                    if failure is not None:
                        return failure
                elif worker.restart_at is not None and worker.restart_at <= time.monotonic():
                    self._start(worker)
        logger.info("receiver stopping on %s", signal.Signals(self._signalled).name)
        return None

    def _start(self, worker: _Worker) -> None:
        settings = self.settings.with_(
            receiver_metrics_port=self.settings.receiver_metrics_port + worker.slot.index
        )
        report, child_end = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=self.target,
            args=(settings, worker.slot, child_end),
            name=f"receiver-{worker.slot.index}",
        )
        process.start()
        child_end.close()
        worker.process, worker.report = process, report
        worker.started, worker.restart_at = time.monotonic(), None
        worker.starts += 1
        if worker.starts > 1:
            logger.info("receiver worker %d restarted pid=%s", worker.slot.index, process.pid)

    def _exited(self, worker: _Worker) -> str | None:
        """Reap a worker that exited: its reason if it cannot start, else plan its restart."""
        assert worker.process is not None and worker.report is not None
        worker.process.join()
        pid, code = worker.process.pid, worker.process.exitcode
        ran = time.monotonic() - worker.started
        reason = None
        with contextlib.suppress(EOFError, OSError):
            if worker.report.poll():
                reason = str(worker.report.recv())
        worker.report.close()
        worker.process = worker.report = None
        if reason is None and worker.starts == 1 and code and code > 0 and ran < _START_GRACE:
            reason = f"it exited with {_describe(code)} after {ran:.1f}s"
        if reason is not None:
            return f"receiver worker {worker.slot.index} cannot start: {reason}"
        if ran >= _STABLE_AFTER:
            worker.delay = _FIRST_DELAY
        logger.warning(
            "receiver worker %d pid=%s exited with %s after %.1fs; restarting in %.0fs",
            worker.slot.index,
            pid,
            _describe(code),
            ran,
            worker.delay,
        )
        worker.restart_at = time.monotonic() + worker.delay
        worker.delay = min(worker.delay * 2, _MAX_DELAY)
        return None

    def _stop(self, failure: str | None) -> int:
        """Drain every running worker (SIGTERM, once), kill those that overstay; the exit code."""
        if failure is not None:
            logger.error("%s; stopping", failure)
        running = [w.process for w in self.workers if w.process is not None]
        for process in running:
            if process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_timeout + _STOP_MARGIN
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.warning("receiver %s did not stop in time: killed", process.name)
                process.kill()
                process.join()
        if failure is not None:
            return CANNOT_START
        return 0 if all(process.exitcode == 0 for process in running) else 1
