"""`smsrx dev`: the whole stack from one command, as a user runs it, and nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from smsrx.dev.process import free_port

ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "tests" / "samples" / "orange_dr.json"


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSRX_")}
    env.update(
        SMSRX_STATE_DIR=str(state),
        SMSRX_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        SMSRX_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/smsrx",
        SMSRX_RECEIVER_PORT=str(free_port()),
        SMSRX_RECEIVER_METRICS_PORT=str(free_port()),
        SMSRX_STATUS_PROJECTION_METRICS_PORT=str(free_port()),
        SMSRX_ANALYTICS_METRICS_PORT=str(free_port()),
        SMSRX_SUBSCRIPTIONS_METRICS_PORT=str(free_port()),
        SMSRX_SHUTDOWN_TIMEOUT="3s",
    )
    return env


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 90) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "smsrx dev exited early"
        if path.is_file():
            return json.loads(path.read_text())
        time.sleep(0.2)
    raise AssertionError("dev.json never appeared")


def _curl(addresses: dict[str, object], source: str) -> tuple[int, str]:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--interface",
            source,
            "--cacert",
            str(addresses["ca_file"]),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            f"@{SAMPLE}",
            "-w",
            "\n%{http_code}",
            f"{addresses['receiver_url']}/callbacks/orange/dr",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    body, code = out.rsplit("\n", 1)
    return int(code), body


def _wait_ready(addresses: dict[str, object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                str(addresses["ca_file"]),
                f"{addresses['receiver_url']}/readyz",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if code == "200":
            return
        time.sleep(0.3)
    raise AssertionError("receiver never became ready")


def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-dev", "enable.auto.commit": False}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    records = []
    idle_until = time.monotonic() + 8
    while time.monotonic() < idle_until:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        records.append((msg.key(), msg.value()))
        idle_until = time.monotonic() + 2
    consumer.close()
    return records


def _tree(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


@pytest.mark.timeout(240)
def test_dev_stack_end_to_end(tmp_path: Path) -> None:
    """`smsrx dev` serves the documented DR over HTTPS, publishes once, refuses 127.0.0.3, and SIGTERM stops every process."""
    env = _env(tmp_path / "state")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsrx.cli", "dev", "--no-subscriptions"], env=env, cwd=ROOT
    )
    try:
        addresses = _wait_for(tmp_path / "state" / "dev.json", proc)
        assert set(addresses) >= {
            "receiver_url",
            "metrics_url",
            "kafka_bootstrap",
            "database_url",
            "ca_file",
        }
        _wait_ready(addresses)
        children = _tree(proc.pid)
        assert len(children) >= 3  # postgres, broker, receiver (and the workers)

        assert _curl(addresses, "127.0.0.1") == (
            200,
            '{"status": "accepted", "events": 1, "published": 1}',
        )
        assert _curl(addresses, "127.0.0.1")[0] == 200
        assert _curl(addresses, "127.0.0.3")[0] == 403
        records = _read_all(str(addresses["kafka_bootstrap"]), "sms.delivery-receipts.v1")
        assert [key for key, _ in records] == [b"8f3a2c1e-5b7d-4e9a-a1c3-2d4f6e8b0a9c"]
        assert json.loads(records[0][1])["status"] == "delivered"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    time.sleep(0.5)
    assert [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []
    assert not (tmp_path / "state" / "dev.json").exists()


@pytest.mark.timeout(180)
def test_dev_stack_sigkill_leaves_no_orphans(tmp_path: Path) -> None:
    """Even a SIGKILLed `smsrx dev` leaves no child process behind."""
    env = _env(tmp_path / "state")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsrx.cli", "dev", "--no-subscriptions"], env=env, cwd=ROOT
    )
    _wait_for(tmp_path / "state" / "dev.json", proc)
    children = _tree(proc.pid)
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 30
    alive = children
    while alive and time.monotonic() < deadline:
        alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.3)
    assert alive == []
