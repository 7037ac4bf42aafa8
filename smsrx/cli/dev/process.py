"""Child processes that die with their parent and stop within a bound.

For the dev stack, the tests and the benchmarks; the one helper production code
needs, :func:`smsrx.process.set_parent_death_signal`, is in the shared package.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from smsrx.process import set_parent_death_signal

__all__ = ["Child", "free_port", "wait_for_port"]


def _die_with_parent(sig: int) -> Callable[[], None]:
    def preexec() -> None:
        set_parent_death_signal(sig)

    return preexec


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, *, alive: Callable[[], bool]) -> None:
    """Wait until something accepts TCP connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"process exited before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


class Child:
    """A subprocess started with a death signal, and stopped politely then firmly."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        death_signal: int = signal.SIGKILL,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.user = user
        self.stop_signal = stop_signal
        self.death_signal = death_signal
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        """Start the process, logging to ``log_path`` (appended) or inheriting stderr."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        kwargs: dict[str, Any] = {}
        if self.user is not None and os.geteuid() == 0:
            kwargs["user"] = self.user
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
            env=self.env,
            preexec_fn=_die_with_parent(self.death_signal),
            **kwargs,
        )

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        """Send the stop signal and return at once; :meth:`stop` with ``signalled=True``
        then waits. Stopping several processes this way lets them drain side by side."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(self.stop_signal)

    def stop(self, timeout: float = 10.0, *, signalled: bool = False) -> int | None:
        """Send the stop signal (unless ``signalled`` already), wait up to ``timeout``, then
        SIGKILL. Return the exit code. A second signal would interrupt a graceful drain."""
        if self.proc is None:
            return None
        if self.proc.poll() is None and signalled:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
