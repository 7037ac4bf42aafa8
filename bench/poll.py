"""Status polling at scale: N submissions across Gateway SMS and VavaSMS against fake
status APIs that refuse more than 50 requests per second.

``.venv/bin/python bench/poll.py`` (about 4 minutes; not part of ``make bench``). It
starts the benchmark stack (:mod:`bench.stack`), the fake Gateway SMS and VavaSMS APIs of
the tests (``tests/fakes``, each limited to 50 requests in any second, answering 429
past it), then ``smsrx consumer status-projection`` and ``smsrx consumer poller`` as
processes, and publishes N submissions (10,000: half Gateway SMS, half VavaSMS, one
recipient each), beside a backlog of 100,000 more recipients already scheduled and not
due for an hour (so that the limits are shown to hold with 100,000 pending). Half of the recipients of each provider are final at the first poll,
the others are pending once and final at the second. It waits until every recipient is
final in ``recipient_status``, then checks and prints:

- requests each fake received, and the most in any one second (must be ≤ 50), and the
  429s it answered (must be 0);
- every recipient final; every status change on ``sms.message-status.v1`` once (distinct
  event ids = records); receipts with ``source: poll`` on ``sms.delivery-receipts.v1``
  equal to the distinct carrier values (no value published twice);
- the poller is one process; its CPU per request; the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench``, ``smsrx`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import procfs
from bench.stack import BenchStack
from smsrx.clock import utcnow
from smsrx.codec import encode
from smsrx.events import Submission
from smsrx.kafka import make_producer
from smsrx.produce import produce_all
from smsrx.settings import Settings
from tests.fakes.gatewaysms import FakeGatewaySms
from tests.fakes.vavasms import FakeVavaSms

LIMIT = 50
"""Requests per second each fake API allows."""


def busiest_second(times: list[float]) -> int:
    """The most requests in any window of one second."""
    times, most, start = sorted(times), 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


async def topic_records(bootstrap: str, topic: str) -> list[dict[str, object]]:
    """Every record of ``topic`` now, decoded as JSON."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[dict[str, object]] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            out.extend(orjson.loads(r.value) for rs in batch.values() for r in rs)
        return out
    finally:
        await consumer.stop()


async def run(stack: BenchStack, args: argparse.Namespace) -> int:
    gateway, vava = FakeGatewaySms(), FakeVavaSms()
    await gateway.start()
    await vava.start()
    gateway.limit_rate(LIMIT)
    vava.limit_rate(LIMIT)
    prefix = f"p{uuid.uuid4().hex[:8]}."
    await stack.create_topics(prefix)
    await stack.truncate()
    env = stack.env(
        SMSRX_TOPIC_PREFIX=prefix,
        SMSRX_INSECURE_PROVIDER_URLS="1",
        SMSRX_GATEWAYSMS_API_URL=gateway.url,
        SMSRX_GATEWAYSMS_TOKEN=gateway.token,
        SMSRX_VAVASMS_STATUS_URL=vava.url,
        SMSRX_VAVASMS_USERNAME=vava.username,
        SMSRX_VAVASMS_PASSWORD=vava.password,
        SMSRX_GATEWAYSMS_POLL_RATE=str(args.rate),
        SMSRX_VAVASMS_POLL_RATE=str(args.rate),
        SMSRX_POLL_SCHEDULE="1s",
    )
    settings = Settings.from_env(env)
    half = args.submissions // 2
    now = utcnow()
    subs = []
    for i in range(half):
        pending = [("PENDING", 1), ("DELIVERED", 1)] if i % 2 else [("DELIVERED", 1)]
        number = f"+3934{i:08d}"
        gateway.add_message(f"gw-{i}", {number: pending})
        subs.append(
            Submission.create(
                provider="gatewaysms", message_id=f"gw-{i}", recipients=(number,), submitted_at=now
            )
        )
        vava.add_message(f"SM-{i}", [("sent", 1), ("delivered", 1)] if i % 2 else [("failed", 1)])
        subs.append(
            Submission.create(
                provider="vavasms",
                message_id=f"SM-{i}",
                recipients=(f"+22507{i:08d}",),
                submitted_at=now,
            )
        )
    conn = await asyncpg.connect(stack.database_url)
    try:  # the backlog: scheduled, not due for an hour, never final
        await conn.execute(
            "INSERT INTO poll_schedule (provider, message_id, recipient, submitted_at, due_at) "
            "SELECT CASE WHEN i % 2 = 0 THEN 'gatewaysms' ELSE 'vavasms' END, 'backlog-' || i, "
            "'+2250799' || lpad(i::text, 6, '0'), now(), now() + interval '1 hour' "
            "FROM generate_series(1, $1) AS i",
            args.backlog,
        )
    finally:
        await conn.close()
    most_pending = 0
    projection = stack.spawn("status-projection", "consumer", "status-projection", env=env)
    poller = stack.spawn("poller", "consumer", "poller", env=env)
    producer = make_producer(settings)
    await producer.start()
    started = time.monotonic()
    try:
        await produce_all(producer, [(settings.topics.submissions, s.key, encode(s)) for s in subs])
    finally:
        await producer.stop()
    conn = await asyncpg.connect(stack.database_url)
    try:
        while True:
            pending_now = await conn.fetchval(
                "SELECT count(*) FROM poll_schedule WHERE due_at IS NOT NULL"
            )
            most_pending = max(most_pending, pending_now)
            final = await conn.fetchval("SELECT count(*) FROM recipient_status WHERE is_final")
            if final >= len(subs):
                break
            if time.monotonic() - started > args.timeout:
                raise RuntimeError(
                    f"only {final} of {len(subs)} recipients final after {args.timeout}s"
                )
            await asyncio.sleep(1)
        wall = time.monotonic() - started
        await asyncio.sleep(3)  # any request still in flight would show now
        pending = (
            await conn.fetchval("SELECT count(*) FROM poll_schedule WHERE due_at IS NOT NULL")
            - args.backlog
        )
    finally:
        await conn.close()
    assert poller.pid is not None
    processes = procfs.tree(poller.pid)
    cpu = sum(procfs.cpu_seconds(pid) for pid in processes)
    changes = await topic_records(stack.bootstrap, settings.topics.message_status)
    receipts = [
        r
        for r in await topic_records(stack.bootstrap, settings.topics.delivery_receipts)
        if r.get("source") == "poll"
    ]
    change_ids = Counter(str(c["event_id"]) for c in changes)
    receipt_keys = Counter(
        (r["message_id"], r["recipient"], r["provider_status"]) for r in receipts
    )
    expected_requests = {"gatewaysms": half + half // 2, "vavasms": half + half // 2}
    rows = [
        ("submissions (one recipient each)", f"{len(subs):,}"),
        ("every recipient final, wall time", f"{wall:.1f} s"),
        (
            "recipients pending polls, at most during the run (backlog included)",
            f"{most_pending:,}",
        ),
        ("poll rows of the submissions still pending", f"{pending}"),
        ("poller processes", f"{len(processes)}"),
        (
            "poller CPU per request",
            f"{cpu / max(1, len(gateway.requests) + len(vava.requests)) * 1e6:.0f} µs",
        ),
        ("status changes published / distinct", f"{len(changes):,} / {len(change_ids):,}"),
        ("poll receipts published / distinct values", f"{len(receipts):,} / {len(receipt_keys):,}"),
    ]
    ok = (
        pending == 0
        and len(processes) == 1
        and max(change_ids.values()) == 1
        and max(receipt_keys.values()) == 1
    )
    for name, fake in (("gatewaysms", gateway), ("vavasms", vava)):
        busiest = busiest_second([r.at for r in fake.requests])
        rows.append(
            (f"{name}: requests (expected {expected_requests[name]:,})", f"{len(fake.requests):,}")
        )
        rows.append((f"{name}: most requests in any second (limit {LIMIT})", f"{busiest}"))
        rows.append((f"{name}: answered 429", f"{fake.rate_violations}"))
        ok = (
            ok
            and busiest <= LIMIT
            and fake.rate_violations == 0
            and len(fake.requests) == expected_requests[name]
        )
    await gateway.stop()
    await vava.stop()
    stack.stop_child("poller")
    stack.stop_child("status-projection")
    _ = projection
    width = max(len(n) for n, _ in rows)
    print(f"\n| {'figure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    print("\nall checks passed" if ok else "\nCHECK FAILED: see the figures above")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="bench/poll.py", description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=10_000, help="submissions (10000)")
    parser.add_argument(
        "--backlog", type=int, default=100_000, help="recipients scheduled, not due (100000)"
    )
    parser.add_argument(
        "--rate", type=float, default=45.0, help="poller rate per provider, req/s (45)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after (900 s)")
    args = parser.parse_args(argv)
    with BenchStack(durable=False).running() as stack:
        code = asyncio.run(run(stack, args))
    sys.exit(code)


if __name__ == "__main__":
    main()
