"""`smsrx dev` with a carrier's status API: the poller starts only with credentials, and a
Gateway SMS message submitted from a second terminal shows its polled statuses."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.gatewaysms import FakeGatewaySms
from tests.helpers import dev_command_env, second_terminal

ROOT = Path(__file__).parent.parent
MESSAGE = "5e5e65429f272510fb6adcc0"
A, B, C = "+393495155018", "+393495155019", "+393495155020"


async def _until(check: object, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):  # type: ignore[arg-type]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


@pytest.mark.timeout(300)
async def test_dev_polls_gateway_sms_and_status_shows_how(tmp_path: Path) -> None:
    """Done when 1 from the CLI: DELIVERED, UNDELIVERABLE and DELIVERED-after-3-polls show delivered, failed, delivered, by poll, with the carrier's time."""
    fake = FakeGatewaySms()
    await fake.start()
    fake.add_message(
        MESSAGE,
        {A: [("DELIVERED", 1)], B: [("UNDELIVERABLE", 1)], C: [("PENDING", 3), ("DELIVERED", 1)]},
    )
    home = tmp_path
    env = dev_command_env(
        home / ".smsrx",
        SHUTDOWN_TIMEOUT="3s",
        GATEWAYSMS_TOKEN=fake.token,
        GATEWAYSMS_API_URL=fake.url,
        INSECURE_PROVIDER_URLS="1",
        POLL_SCHEDULE="1s",
    )
    log = (tmp_path / "dev.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsrx.cli", "dev", "--no-subscriptions"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await _until(lambda: (home / ".smsrx" / "dev.json").is_file(), "dev.json")
        published = await asyncio.to_thread(
            second_terminal,
            home,
            *("submissions", "publish", "--provider", "gatewaysms", "--message-id", MESSAGE),
            *("--recipient", A, "--recipient", B, "--recipient", C),
        )
        assert published.returncode == 0, published.stderr
        status: list[subprocess.CompletedProcess[str]] = []

        def final() -> bool:
            status[:] = [second_terminal(home, "status", "gatewaysms", MESSAGE)]
            return status[0].stdout.count("(final,") == 3

        await _until(final, "three final recipients")
        doctor = await asyncio.to_thread(second_terminal, home, "doctor")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
        log.close()
        await fake.stop()
    assert code == 0
    text = status[0].stdout
    lines = text.splitlines()
    assert any(line.startswith(f"{A}  DELIVERED (final") for line in lines), text
    assert any(line.startswith(f"{B}  FAILED (final") for line in lines), text
    assert any(line.startswith(f"{C}  DELIVERED (final") for line in lines), text
    assert text.count("learnt by poll (status API); carrier time 20") == 3
    assert fake.polls(MESSAGE, C) == 4
    started = (tmp_path / "dev.log").read_text()
    assert "poller: polling gatewaysms" in started
    polled = [line for line in doctor.stdout.splitlines() if "polling gatewaysms" in line]
    assert len(polled) == 1 and "is polled by the poller of 'smsrx dev'" in polled[0], doctor
    assert fake.token not in doctor.stdout + doctor.stderr


@pytest.mark.timeout(120)
def test_dev_says_in_one_line_why_the_poller_is_not_started(tmp_path: Path) -> None:
    """Without any provider's credentials, `smsrx dev` starts no poller and says which variables would."""
    env = dev_command_env(tmp_path / ".smsrx", SHUTDOWN_TIMEOUT="3s")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsrx.cli", "dev", "--no-subscriptions"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "smsrx dev is up" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    skipped = [line for line in lines if "poller: not started" in line]
    assert len(skipped) == 1, "".join(lines)
    assert "SMSRX_GATEWAYSMS_TOKEN" in skipped[0] and "SMSRX_VAVASMS_PASSWORD" in skipped[0]
    assert not any("consumer poller" in line for line in lines)
