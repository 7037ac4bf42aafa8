"""``smsrx receiver --workers N`` as real processes: N serving workers, each with its own
spool and metrics port, supervised by the parent; spools of a larger N are replayed."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from receiver.adapters import orange
from receiver.spool import Spool
from smsrx.cli.dev.process import free_port, wait_for_port
from smsrx.clock import utcnow
from smsrx.codec import encode
from smsrx.settings import Settings
from tests.fault.harness import receipt_body
from tests.helpers import read_topic
from tests.receiver_harness import client

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).parent.parent


def _metrics_base() -> int:
    """A free port whose successor is free too: metrics of workers 0 and 1."""
    for _ in range(50):
        base = free_port()
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", base + 1))
            return base
    raise RuntimeError("no two consecutive free ports")


class Receiver:
    """``smsrx receiver --workers N`` started as a subprocess, its output in a file."""

    def __init__(
        self, settings: Settings, tls: dict[str, Path], root: Path, workers: int, **env: str
    ) -> None:
        self.port = free_port()
        self.metrics_port = _metrics_base()
        self.spool = root / "spool"
        self.log = root / f"receiver-{workers}-{time.monotonic_ns()}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SMSRX_")},
            "SMSRX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "SMSRX_KAFKA_IDEMPOTENCE": "0",
            "SMSRX_DATABASE_URL": settings.database_url,
            "SMSRX_TOPIC_PREFIX": settings.topics.prefix,
            "SMSRX_RECEIVER_HOST": "127.0.0.1",
            "SMSRX_RECEIVER_PORT": str(self.port),
            "SMSRX_METRICS_HOST": "127.0.0.1",
            "SMSRX_RECEIVER_METRICS_PORT": str(self.metrics_port),
            "SMSRX_TLS_CERT": str(tls["cert"]),
            "SMSRX_TLS_KEY": str(tls["key"]),
            "SMSRX_ALLOW_ORANGE": "127.0.0.1",
            "SMSRX_STATE_DIR": str(root),
            "SMSRX_SPOOL_DIR": str(self.spool),
            "SMSRX_SHUTDOWN_TIMEOUT": "3s",
            "SMSRX_LOG_LEVEL": "INFO",
            **env,
        }
        self.argv = [sys.executable, "-m", "smsrx.cli", "receiver", "--workers", str(workers)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> Receiver:
        with self.log.open("ab") as out:
            proc = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        self.proc = proc
        if wait:
            wait_for_port("127.0.0.1", self.port, 30, alive=lambda: proc.poll() is None)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> list[psutil.Process]:
        """The parent's living worker processes (not multiprocessing's resource tracker)."""
        assert self.proc is not None
        found = []
        for child in psutil.Process(self.proc.pid).children():
            with contextlib.suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(
                    child.cmdline()
                ):
                    found.append(child)
        return found

    def holder(self, slot: int) -> psutil.Process | None:
        """The worker that has slot ``slot``'s spool lock open."""
        lock = str(self.spool / f"worker-{slot}" / "lock")
        for worker in self.workers():
            with contextlib.suppress(psutil.Error):
                if any(f.path == lock for f in worker.open_files()):
                    return worker
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    """Receivers a test starts; any still running at the end is stopped."""
    started: list[Receiver] = []
    yield started
    for receiver in started:
        if receiver.proc is not None and receiver.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                receiver.stop()


def _metric(port: int, name: str) -> float | None:
    """Sum of a metric's samples from ``/metrics`` on ``port``, or None if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    return sum(
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    )


def _locked(directory: Path) -> bool:
    """Whether some process holds the spool lock of ``directory``."""
    fd = os.open(directory / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def _post_from_new_connections(receiver: Receiver, tls: dict[str, Path], count: int) -> None:
    """``count`` receipts, each on its own connection (so SO_REUSEPORT spreads them)."""
    url = f"https://127.0.0.1:{receiver.port}/callbacks/orange/dr"
    async with client(tls) as session:  # force_close: one connection per request
        for i in range(count):
            async with session.post(
                url, data=receipt_body(i), headers={"Content-Type": "application/json"}
            ) as answer:
                assert answer.status == 200, await answer.text()


async def test_two_workers_are_two_serving_processes(
    settings_factory, tls_files, tmp_path, receivers
) -> None:
    """`--workers 2` runs two serving processes, each with its own metrics port and its own locked spool."""
    receiver = Receiver(settings_factory(), tls_files, tmp_path, 2).start()
    receivers.append(receiver)
    await asyncio.sleep(4)  # workers that die at start have died by now
    workers = receiver.workers()
    assert len(workers) == 2, receiver.output()
    for slot in (0, 1):
        assert _metric(receiver.metrics_port + slot, "smsrx_receiver_requests_total") is not None, (
            f"metrics port of worker {slot} does not answer\n{receiver.output()}"
        )
        assert _locked(receiver.spool / f"worker-{slot}"), slot
    holders = [receiver.holder(slot) for slot in (0, 1)]
    assert {h.pid for h in holders if h} == {w.pid for w in workers}  # one lock each

    await _post_from_new_connections(receiver, tls_files, 40)
    served = [
        _metric(receiver.metrics_port + slot, "smsrx_receiver_requests_total") or 0.0
        for slot in (0, 1)
    ]
    assert sum(served) == 40 and all(served), served  # both processes served requests

    assert receiver.stop(signal.SIGTERM) == 0, receiver.output()
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert "Traceback" not in receiver.output()


async def test_killed_worker_is_restarted(settings_factory, tls_files, tmp_path, receivers) -> None:
    """A SIGKILLed worker is restarted on its slot (logged with slot, signal and delay); SIGINT drains both."""
    receiver = Receiver(settings_factory(), tls_files, tmp_path, 2).start()
    receivers.append(receiver)
    deadline = time.monotonic() + 20
    while (victim := receiver.holder(1)) is None:
        assert time.monotonic() < deadline, receiver.output()
        await asyncio.sleep(0.2)
    victim.kill()
    deadline = time.monotonic() + 30
    while (successor := receiver.holder(1)) is None or successor.pid == victim.pid:
        assert time.monotonic() < deadline, receiver.output()
        await asyncio.sleep(0.2)
    while _metric(receiver.metrics_port + 1, "smsrx_receiver_requests_total") is None:
        assert time.monotonic() < deadline, receiver.output()
        await asyncio.sleep(0.2)
    assert len(receiver.workers()) == 2
    restart = [line for line in receiver.output().splitlines() if "restarting in" in line]
    assert len(restart) == 1 and "worker 1" in restart[0] and "SIGKILL" in restart[0], restart

    workers = receiver.workers()
    assert receiver.stop(signal.SIGINT) == 0, receiver.output()
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert "Traceback" not in receiver.output()


async def _fill(directory: Path, topic: str, indexes: range) -> set[str]:
    """Spool one receipt per index in ``directory``, as a receiver would; their event ids."""
    events = [orange.parse("application/json", receipt_body(i), utcnow())[0] for i in indexes]
    spool = Spool(directory, max_bytes=1 << 20)
    spool.open()
    try:
        for event in events:
            await spool.append(topic, event.key, encode(event))
    finally:
        spool.close()
    return {event.event_id for event in events}


async def test_lower_worker_count_replays_stranded_spools(
    settings_factory, tls_files, tmp_path, receivers
) -> None:
    """`--workers 1` replays the spools of worker-1 and worker-2 and of the single-process layout, then removes them."""
    settings = settings_factory()
    topic = settings.topics.delivery_receipts
    base = tmp_path / "spool"
    expected = await _fill(base, topic, range(0, 3))  # files directly in SMSRX_SPOOL_DIR
    expected |= await _fill(base / "worker-1", topic, range(3, 6))
    expected |= await _fill(base / "worker-2", topic, range(6, 9))
    assert len(expected) == 9

    receiver = Receiver(settings, tls_files, tmp_path, 1).start()
    receivers.append(receiver)
    deadline = time.monotonic() + 60
    published: set[str] = set()
    while published != expected:
        assert time.monotonic() < deadline, (published, receiver.output())
        records = await read_topic(settings.kafka_bootstrap, topic, idle=0.5)
        published = {orjson.loads(r.value)["event_id"] for r in records}
    # An adopted directory is renamed to .worker-N.retired-PID, then removed: wait for both.
    while (left := sorted(p.name for p in base.iterdir())) != ["worker-0"]:
        assert time.monotonic() < deadline, (left, receiver.output())  # the old layout's too
        await asyncio.sleep(0.2)
    assert _locked(base / "worker-0")
    assert receiver.stop() == 0, receiver.output()


def test_adopted_spool_directories(tmp_path) -> None:
    """Slot i of N adopts worker-j for each j >= N with j % N == i; slot 0 also the single-process layout."""
    from receiver.slots import Slot

    for j in (0, 1, 2, 3, 4, 7):
        (tmp_path / f"worker-{j}").mkdir()
    (tmp_path / "worker-x").mkdir()
    assert Slot(0, 2).spool_dir(tmp_path) == tmp_path / "worker-0"
    assert Slot(0, 2).adopted_dirs(tmp_path) == [tmp_path / "worker-2", tmp_path / "worker-4"]
    assert Slot(1, 2).adopted_dirs(tmp_path) == [tmp_path / "worker-3", tmp_path / "worker-7"]
    assert Slot(0, 8).adopted_dirs(tmp_path) == []
    (tmp_path / "checkpoint").write_text("1 0\n")
    assert Slot(0, 5).adopted_dirs(tmp_path) == [tmp_path]
    assert Slot(1, 5).adopted_dirs(tmp_path) == []


async def test_worker_that_cannot_start_stops_the_parent(
    settings_factory, tls_files, tmp_path, receivers
) -> None:
    """A worker whose spool another process holds stops `--workers 2`: one clear line, exit code non-zero, no traceback."""
    held = tmp_path / "spool" / "worker-0"
    held.mkdir(parents=True)
    fd = os.open(held / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        receiver = Receiver(settings_factory(), tls_files, tmp_path, 2).start(wait=False)
        receivers.append(receiver)
        assert receiver.proc is not None
        try:
            code = receiver.proc.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the parent kept running\n{receiver.output()}")
    finally:
        os.close(fd)
    output = receiver.output()
    assert code != 0
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "cannot start" in line]
    assert len(lines) == 1, output
    assert "worker 0" in lines[0] and str(held) in lines[0], lines[0]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", receiver.port), 1):
        pass  # nothing is left serving
