"""Retention while the system runs: `smsrx db prune` (its lock and its dry run), a prune
beside the workers, and `smsrx db prune --every` as a process of its own, against the
real PostgreSQL and the real broker."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from smsrx.cli.dev.process import free_port
from smsrx.prune import PRUNE_LOCK, PruneReport, connect_for_prune, prune
from smsrx.retention import policy
from smsrx.settings import Settings
from tests.consumers.conftest import (
    T0,
    Runner,
    feed,
    inbound,
    oracle,
    projected,
    wait_for,
    workload,
)
from tests.helpers import process_env
from tests.retention_harness import DAY, DEFAULTS, insert_dedup, prune_at, pruned_rows


@pytest.fixture
async def runner(settings: Settings) -> AsyncIterator[Runner]:
    """Workers against the test's broker and database; all stopped at teardown."""
    run = Runner(settings)
    yield run
    await run.close()


async def test_a_second_concurrent_prune_is_refused(database_url, db) -> None:
    """While one prune holds the lock, another returns None, and the command says so and exits 1."""
    holder = await connect_for_prune(database_url)
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK)
        conn = await connect_for_prune(database_url)
        try:
            assert await prune(conn, policy(DEFAULTS)) is None
        finally:
            await conn.close()
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "smsrx.cli", "db", "prune"],
            env=process_env(DATABASE_URL=database_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        await holder.close()
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        "smsrx db prune: another prune is running ('smsrx db prune', by hand or --every); "
        "try again later\n"
    )
    assert done.stdout == ""


async def test_workers_keep_running_during_a_prune(
    settings_factory, runner, database_url, db
) -> None:
    """Receipts fed during a prune of 60,000 old rows keep being applied, every one of them."""
    settings = settings_factory()
    old = datetime.now(UTC) - 200 * DAY
    await db.execute(
        "INSERT INTO status_events (event_id, provider, message_id, recipient, status, "
        "provider_status, synthetic, received_at, raw, recorded_at) "
        "SELECT gen_random_uuid(), 'orange', 'old-' || (i % 1000), '+2250700000001', 'sent', "
        "'x', false, $1, '{}', $1 FROM generate_series(1, 60000) i",
        old,
    )
    story = workload(400, recipients=2, duplicates=0.2, seed=14)
    projection = runner.start(runner.projection(settings))
    await asyncio.wait_for(projection.assigned.wait(), 60)

    during: list[int] = []

    async def pruning() -> PruneReport | None:
        await wait_for(lambda: projection.processed > 0, "the first receipts to be applied")
        conn = await connect_for_prune(database_url)
        try:
            during.append(projection.processed)
            return await prune(conn, policy(settings), batch_size=200)
        finally:
            during.append(projection.processed)
            await conn.close()

    async def feeding() -> None:
        for start in range(0, len(story.sent), 100):
            await feed(settings, settings.topics.delivery_receipts, story.sent[start : start + 100])

    report, _ = await asyncio.gather(pruning(), feeding())
    await runner.drain(projection, records=len(story.sent))

    assert report is not None and pruned_rows(report) == {"status_events": 60000}
    started, ended = during
    assert ended > started, "the worker applied receipts while the prune ran"
    assert await projected(db) == oracle(story.distinct)
    assert await db.fetchval("SELECT count(*) FROM status_events") == len(story.distinct)


async def test_db_prune_every_runs_passes_until_sigterm(database_url, db) -> None:
    """`smsrx db prune --every 1s` prunes at start and again a second later, serves its metrics, and exits 0 on SIGTERM."""
    now = datetime.now(UTC)
    for i in range(3):
        await insert_dedup(db, f"old-{i}", now - 8 * DAY)
    await insert_dedup(db, "young", now - DAY)
    port = free_port()
    env = process_env(
        DATABASE_URL=database_url, METRICS_HOST="127.0.0.1", PRUNE_METRICS_PORT=str(port)
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smsrx.cli",
        "db",
        "prune",
        "--every",
        "1s",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        passes: list[str] = []
        while len(passes) < 2:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, f"exited early: {passes}"
            if "smsrx.prune_job: prune" in line:
                passes.append(line)
        assert "3 rows deleted, 0 texts erased" in passes[0] and "receiver_dedup 3" in passes[0]
        assert "0 rows deleted, 0 texts erased" in passes[1]
        assert await db.fetchval("SELECT count(*) FROM receiver_dedup") == 1
        metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        assert 'smsrx_prune_deleted_rows_total{table="receiver_dedup"} 3.0' in metrics
        age = re.search(
            r'smsrx_table_oldest_row_age_seconds\{table="receiver_dedup"\} (\S+)', metrics
        )
        assert age and DAY.total_seconds() <= float(age.group(1)) < DAY.total_seconds() + 60
        proc.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, rest.decode()
    assert "Traceback" not in rest.decode()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def test_a_replay_after_a_prune_counts_nothing_twice(
    settings, runner, database_url, db
) -> None:
    """Pruned within SMSRX_RETAIN_PROCESSED, a replay of every topic into analytics changes no count."""
    story = workload(150, recipients=2, duplicates=0.2, seed=41)
    mos = [inbound(f"mo-{i}", "+33612345678", T0) for i in range(30)]
    topics = settings.topics
    await feed(settings, topics.delivery_receipts, story.sent)
    await feed(settings, topics.inbound, mos)
    analytics = runner.start(runner.analytics())
    await runner.drain(analytics, records=len(story.sent) + len(mos))
    await runner.stop(analytics)
    rollups = await _rollups(db)
    counted = await db.fetchval("SELECT count(*) FROM analytics_processed_events")
    assert counted == len(story.distinct) + len(mos)

    # The clock moved forward to just inside SMSRX_RETAIN_PROCESSED: every id is kept.
    now = datetime.now(UTC) + timedelta(seconds=settings.retain_processed) - timedelta(hours=1)
    report = await prune_at(database_url, now)
    assert "analytics_processed_events" not in pruned_rows(report)

    again = runner.start(runner.analytics(group_id=f"replay-{uuid.uuid4().hex[:8]}"))
    await runner.drain(again, records=len(story.sent) + len(mos))
    await runner.stop(again)
    assert await _rollups(db) == rollups
    assert await db.fetchval("SELECT count(*) FROM analytics_processed_events") == counted


async def _rollups(db) -> dict[str, list[tuple[object, ...]]]:
    return {
        table: [tuple(r) for r in await db.fetch(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4")]
        for table in ("analytics_receipts_minute", "analytics_inbound_minute")
    }


async def test_db_prune_dry_run_prints_the_plan(database_url, db) -> None:
    """`smsrx db prune --dry-run` prints every table with what is due, changes nothing, no traceback."""
    await insert_dedup(db, "old", datetime.now(UTC) - 8 * DAY)
    env = process_env(DATABASE_URL=database_url)
    command = [sys.executable, "-m", "smsrx.cli", "db", "prune", "--dry-run"]
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["table", "rows", "kept", "oldest", "row"]
    assert lines[1].split()[:4] == ["receiver_dedup", "would", "delete", "1"]
    for rule in policy(DEFAULTS):
        assert any(line.startswith(rule.label + " ") for line in lines), rule.label
    assert "dry run, nothing changed: 1 rows would be deleted and 0 inbound texts erased" in lines
    assert await db.fetchval("SELECT count(*) FROM receiver_dedup") == 1

    done = await asyncio.to_thread(
        subprocess.run, [*command, "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    plan = json.loads(done.stdout)
    assert plan["dry_run"] is True and plan["deleted"] == 1
    assert plan["tables"][0]["table"] == "receiver_dedup"
    assert plan["tables"][0]["oldest_age_seconds"] >= 8 * 86400
