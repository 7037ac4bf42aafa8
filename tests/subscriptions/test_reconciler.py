"""``reconcile --watch``: periodic passes, /metrics while watching, a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable

import aiohttp
import pytest

from smsrx.cli.dev.process import free_port
from smsrx.settings import Settings
from subscriptions.reconciler import run_reconciler
from tests.subscriptions.conftest import AUTH_HEADER, FAST, NOTIFY_URL, SENDER
from tests.subscriptions.fake_orange import FakeOrange


async def until(condition: Callable[[], bool], what: str, deadline: float = 15.0) -> None:
    """Wait for ``condition``; fail the test with ``what`` if it never holds."""
    for _ in range(int(deadline / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def scrape(port: int) -> str:
    """The text of /metrics on ``port``."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            return await response.text()


@pytest.fixture
def watch_settings(orange_settings: Settings) -> Settings:
    """Settings with a free /metrics port for the watcher."""
    return orange_settings.with_(subscriptions_metrics_port=free_port())


async def test_reconciler_restores_and_serves_metrics(
    watch_settings: Settings, fake: FakeOrange
) -> None:
    """The watcher registers, restores a deleted registration, serves /metrics and stops."""
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_reconciler(
            watch_settings, lines.append, interval=0.05, stop=stop, handle_signals=False, retry=FAST
        )
    )
    try:
        await until(lambda: fake.registration is not None, "first registration")
        assert fake.registration is not None
        first = fake.registration.id
        fake.delete_behind_our_back()
        await until(
            lambda: fake.registration is not None and fake.registration.id != first,
            "registration restored",
        )
        await until(lambda: any("RECOVERED" in line for line in lines), "recovery reported")
        await until(lambda: lines[-1].startswith("reconcile: OK"), "a pass after the recovery")
        text = await scrape(watch_settings.subscriptions_metrics_port)
        assert "smsrx_orange_subscription_in_place 1.0" in text
        assert 'smsrx_orange_api_requests_total{endpoint="check",outcome="ok"}' in text
        assert 'smsrx_orange_reconciliations_total{result="recovered"}' in text
        assert "smsrx_orange_subscription_last_check_timestamp_seconds" in text
        assert 'role="subscriptions"' in text
    finally:
        stop.set()
        assert await task == 0
    assert lines[0] == "reconcile: nothing registered for this sender"


async def test_failed_pass_is_reported_and_the_next_runs(
    watch_settings: Settings, fake: FakeOrange
) -> None:
    """A pass Orange fails is reported as one line; the next pass succeeds."""
    fake.fail("token", 503, times=FAST.attempts)
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_reconciler(
            watch_settings, lines.append, interval=0.05, stop=stop, handle_signals=False, retry=FAST
        )
    )
    try:
        await until(lambda: fake.registration is not None, "registration after the failure")
    finally:
        stop.set()
        assert await task == 0
    assert lines[0].startswith("reconcile: error: Orange failed on token (HTTP 503)")
    assert "gave up after 3 attempts" in lines[0]


async def test_stop_interrupts_a_hung_pass(watch_settings: Settings, fake: FakeOrange) -> None:
    """On stop, a pass stuck on a slow Orange gets the shutdown grace, then is cancelled."""
    fake.slow("subscribe", 30.0)
    settings = watch_settings.with_(orange_timeout=60.0, shutdown_timeout=0.1)
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_reconciler(settings, lines.append, stop=stop, handle_signals=False, retry=FAST)
    )
    await until(lambda: fake.count("subscribe") == 1, "subscribe in flight")
    stop.set()
    assert await task == 0
    assert lines == ["reconcile: interrupted by shutdown"]


async def test_sigterm_stops_the_command(
    watch_settings: Settings, fake: FakeOrange, database_url: str
) -> None:
    """'smsrx subscriptions reconcile --watch' reconciles until SIGTERM, then exits 0."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SMSRX_")}
    env.update(
        SMSRX_DATABASE_URL=database_url,
        SMSRX_ORANGE_API_URL=fake.url,
        SMSRX_INSECURE_PROVIDER_URLS="1",  # the fake serves plain HTTP
        SMSRX_ORANGE_AUTH_HEADER=AUTH_HEADER,
        SMSRX_ORANGE_SENDER=SENDER,
        SMSRX_ORANGE_NOTIFY_URL=NOTIFY_URL,
        SMSRX_METRICS_HOST="127.0.0.1",
        SMSRX_SUBSCRIPTIONS_METRICS_PORT=str(watch_settings.subscriptions_metrics_port),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smsrx.cli",
        "subscriptions",
        "reconcile",
        "--watch",
        "1m",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), 30)
        assert first.decode() == "reconcile: nothing registered for this sender\n"
        second = await asyncio.wait_for(process.stdout.readline(), 30)
        assert second.decode().startswith("reconcile: subscribed id=")
        text = await scrape(watch_settings.subscriptions_metrics_port)
        assert "smsrx_orange_subscription_in_place 1.0" in text
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    _, err = await process.communicate()
    assert code == 0, err.decode()
    assert "reconciler stopped" in err.decode()
    assert AUTH_HEADER not in err.decode()
