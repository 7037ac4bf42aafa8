"""The command line: `smsrx status`, `smsrx submissions publish` and `smsrx consumer`."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from datetime import timedelta

import pytest

from smsrx.cli.dev.process import free_port
from smsrx.codec import decode_submission
from smsrx.settings import Settings
from smsrx.statuses import Status
from tests.consumers.conftest import T0, feed, receipt, submission, wait_for
from tests.helpers import read_topic, settings_env


async def _smsrx(settings: Settings, *argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smsrx.cli",
        *argv,
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_status_tells_a_message_story(settings, runner, db) -> None:
    """`smsrx status` shows each recipient's current status, time to final and every receipt
    with what it did (including a late one kept in history only); --json says the same."""
    one, two = "+2250700000001", "+2250700000002"
    await feed(settings, settings.topics.submissions, [submission("story-1", [one, two], T0)])
    worker = runner.start(runner.projection())
    await runner.drain(worker, records=1)
    receipts = [
        receipt("story-1", one, Status.SENT, T0 + timedelta(seconds=2)),
        receipt("story-1", one, Status.FAILED, T0 + timedelta(seconds=9)),
        receipt("story-1", one, Status.DELIVERED, T0 + timedelta(seconds=12)),
        receipt("story-1", one, Status.QUEUED, T0 + timedelta(seconds=1)),
    ]
    for r in receipts:  # one batch each, in this order
        await feed(settings, settings.topics.delivery_receipts, [r])
        await runner.drain(worker, records=worker.processed + 1)

    code, out, _ = await _smsrx(settings, "status", "orange", "story-1")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "orange message story-1"
    assert lines[1].startswith("submitted 2026-03-02 09:00:00.000 UTC to 2 recipient(s)")
    assert "[tenant=acme]" in lines[1]
    assert f"{one}  DELIVERED (final, carrier: DeliveredToTerminal)" in out
    assert "final at 2026-03-02 09:00:12.000 UTC, 12.0s after submission" in out
    assert "status sent" in out
    assert "sent -> failed (final)" in out
    assert "failed -> delivered (final)" in out
    assert "late: below delivered, history only" in out
    assert f"{two}  SENT (not final): no receipt yet" in out

    code, out, _ = await _smsrx(settings, "status", "orange", "story-1", "--json")
    assert code == 0
    story = json.loads(out)
    first = next(r for r in story["recipients"] if r["recipient"] == one)
    assert first["status"] == "delivered" and first["time_to_final_seconds"] == 12.0
    assert [(e["status"], e["effect"]) for e in first["history"]] == [
        ("sent", "set"),
        ("failed", "changed"),
        ("delivered", "changed"),
        ("queued", "ignored"),
    ]
    assert story["submission"]["tags"] == {"tenant": "acme"}

    code, out, err = await _smsrx(settings, "status", "orange", "nope")
    assert code == 1 and "nothing known" in err


async def test_submissions_publish_records_one_submission(settings) -> None:
    """`smsrx submissions publish` puts one submission on the topic, keyed by message id,
    with numbers in E.164 and tags; a malformed number is refused with exit status 2."""
    code, out, err = await _smsrx(
        settings,
        "submissions",
        "publish",
        "--provider",
        "orange",
        "--message-id",
        "cli-1",
        "--recipient",
        "+225 07 00 00 00 01",
        "--recipient",
        "2250700000002",
        "--submitted-at",
        "2026-03-02T09:00:00Z",
        "--tag",
        "tenant=acme",
        "--tag",
        "campaign=spring",
    )
    assert code == 0, err
    assert "published submission" in out
    (record,) = await read_topic(settings.kafka_bootstrap, settings.topics.submissions)
    sub = decode_submission(record.value)
    assert bytes(record.key) == b"cli-1"
    assert sub.recipients == ("+2250700000001", "+2250700000002")
    assert sub.submitted_at == T0
    assert sub.tags == {"tenant": "acme", "campaign": "spring"}

    code, _, err = await _smsrx(
        settings, "submissions", "publish", "--provider", "orange", "--message-id", "x",
        "--recipient", "hello",
    )  # fmt: skip
    assert code == 2 and "--recipient 'hello'" in err


async def test_worker_process_serves_clean_metrics_and_drains_on_sigterm(settings, db) -> None:
    """`smsrx consumer status-projection` serves /metrics that `promtool check metrics`
    accepts (events, batches, lag, regressions), and exits 0 on SIGTERM."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    port = free_port()
    late = receipt("met-1", "+2250700000001", Status.SENT, T0)
    done = receipt("met-1", "+2250700000001", Status.DELIVERED, T0 + timedelta(seconds=1))
    await feed(settings, settings.topics.delivery_receipts, [done, late])
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsrx.cli", "consumer", "status-projection"],
        env=settings_env(settings, STATUS_PROJECTION_METRICS_PORT=str(port)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_for(lambda: _applied(db), "the receipts to be applied", timeout=60)
        text = ""

        async def scraped() -> bool:
            nonlocal text
            text = await asyncio.to_thread(_scrape, port)
            # Counters are bumped after the commit, so wait for all of them, not just one.
            return all(
                marker in text
                for marker in (
                    "smsrx_consumer_lag_records{",
                    'outcome="applied"',
                    "smsrx_consumer_batch_duration_seconds_bucket",
                    'smsrx_status_regressions_prevented_total{provider="orange"} 1.0',
                )
            )

        await wait_for(scraped, "the lag gauge and counters to be exported", timeout=30)
        assert 'smsrx_status_regressions_prevented_total{provider="orange"} 1.0' in text
        assert (
            'outcome="applied"' in text and "smsrx_consumer_batch_duration_seconds_bucket" in text
        )
        check = subprocess.run(
            [promtool, "check", "metrics"], input=text.encode(), capture_output=True, check=False
        )
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert "shutdown on SIGTERM" in err.decode()


async def _applied(db) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM status_events") == 2)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())
