"""`smsrx dev`: the whole stack from one command, as a user runs it, and nothing left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from smsrx.cli.dev.process import free_port
from tests.helpers import dev_command_env, second_terminal

ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "tests" / "samples" / "orange_dr.json"


def _env(state: Path) -> dict[str, str]:
    return dev_command_env(state, SHUTDOWN_TIMEOUT="3s")


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


# --- A second terminal: every other command finds the running `smsrx dev` by itself ---

USING = "smsrx: using the development stack of 'smsrx dev' (pid {pid}, .smsrx/dev.json)"
PUBLISH = ("submissions", "publish", "--provider", "orange", "--recipient", "+2250700000001")


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A running `smsrx dev` whose state directory is `.smsrx` in the yielded directory."""
    home = tmp_path_factory.mktemp("terminal")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsrx.cli", "dev", "--no-subscriptions"],
        env=_env(home / ".smsrx"),
        cwd=ROOT,
    )
    try:
        dev_json = _wait_for(home / ".smsrx" / "dev.json", proc)
        yield home, dev_json
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


@pytest.mark.timeout(240)
def test_second_terminal_publishes_and_reads_status_through_dev_json(
    dev_stack: tuple[Path, dict[str, Any]],
) -> None:
    """With no variables, `submissions publish` and `status` use the running dev stack and say so."""
    home, dev_json = dev_stack
    using = USING.format(pid=dev_json["pid"])
    published = second_terminal(home, *PUBLISH, "--message-id", "second-1")
    assert published.returncode == 0, published.stderr
    assert published.stderr.splitlines() == [using]
    assert published.stdout.startswith("published submission ")

    deadline = time.monotonic() + 60
    while True:
        status = second_terminal(home, "status", "orange", "second-1")
        if status.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stderr.splitlines() == [using]
    assert "submitted " in status.stdout and "+2250700000001" in status.stdout


@pytest.mark.timeout(240)
def test_an_explicit_database_url_turns_dev_json_off(
    dev_stack: tuple[Path, dict[str, Any]],
) -> None:
    """SMSRX_DATABASE_URL set by hand wins: dev.json is not read, and the refusal is one line, exit 4."""
    home, _ = dev_stack
    port = free_port()
    url = f"postgresql://postgres:secret@127.0.0.1:{port}/elsewhere"
    status = second_terminal(home, "status", "orange", "x", SMSRX_DATABASE_URL=url)
    assert status.returncode == 4
    [line] = status.stderr.splitlines()
    assert line.startswith("smsrx: ") and f"127.0.0.1:{port}/elsewhere (SMSRX_DATABASE_URL)" in line
    assert "secret" not in line


@pytest.mark.timeout(240)
def test_publishing_idempotently_to_the_dev_broker_is_one_line(
    dev_stack: tuple[Path, dict[str, Any]],
) -> None:
    """SMSRX_KAFKA_IDEMPOTENCE=1 against the development broker: one line naming the fix, exit 5, no traceback."""
    home, dev_json = dev_stack
    published = second_terminal(
        home, *PUBLISH, "--message-id", "second-2", SMSRX_KAFKA_IDEMPOTENCE="1"
    )
    assert published.returncode == 5
    assert published.stdout == ""
    using, line = published.stderr.splitlines()
    assert using == USING.format(pid=dev_json["pid"])
    assert line.startswith(f"smsrx: the broker at {dev_json['kafka_bootstrap']} has no idempotent")
    assert "SMSRX_KAFKA_IDEMPOTENCE=0" in line


@pytest.mark.timeout(240)
def test_a_stale_dev_json_is_ignored(
    dev_stack: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A dev.json whose `smsrx dev` is gone is not used, even when its services still answer."""
    _, dev_json = dev_stack
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / ".smsrx").mkdir()
    (tmp_path / ".smsrx" / "dev.json").write_text(json.dumps({**dev_json, "pid": gone.pid}))
    status = second_terminal(tmp_path, "status", "orange", "x")
    assert status.returncode == 4
    [line] = status.stderr.splitlines()
    assert "127.0.0.1:5432/smsrx (SMSRX_DATABASE_URL)" in line


def test_an_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    """Publishing to a broker nobody runs: one line naming SMSRX_KAFKA_BOOTSTRAP, exit 4."""
    bootstrap = f"127.0.0.1:{free_port()}"
    published = second_terminal(
        tmp_path, *PUBLISH, "--message-id", "x", SMSRX_KAFKA_BOOTSTRAP=bootstrap
    )
    assert published.returncode == 4
    assert published.stderr.splitlines() == [
        f"smsrx: cannot reach the broker at {bootstrap} (SMSRX_KAFKA_BOOTSTRAP); is it up?"
    ]


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    """A usage error is one line naming the help to read, exit 2."""
    status = second_terminal(tmp_path, "status", "orange")
    assert status.returncode == 2
    assert status.stderr.splitlines() == [
        "smsrx status: the following arguments are required: MESSAGE_ID (see 'smsrx status --help')"
    ]
