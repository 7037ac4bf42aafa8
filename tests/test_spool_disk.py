"""The spool on a full disk: an acknowledged record is never torn, refused records get 503."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.errors import Unavailable
from receiver.keys import PIPELINE
from receiver.spool import Spool
from smsrx.cli.dev.broker import Broker
from smsrx.codec import decode_delivery_receipt
from smsrx.kafka import create_topics
from tests.helpers import event_id_of, orange_receipt, read_topic
from tests.receiver_harness import RunningReceiver, client, running_receiver, url_for

_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A fresh 256 KiB tmpfs, unmounted after the test."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) on this machine: cannot build a tiny filesystem")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)


async def _wave(spool: Spool, start: int, count: int, size: int) -> list[tuple[int, bool]]:
    """Append ``count`` records at once (one group write); (number, acknowledged) for each."""

    async def one(number: int) -> tuple[int, bool]:
        try:
            await spool.append("t", b"k", f"{number:06d}".encode() + b"x" * size)
        except Unavailable:
            return number, False
        return number, True

    return list(await asyncio.gather(*(one(start + i) for i in range(count))))


async def test_full_disk_never_loses_an_acknowledged_append(tiny_fs: Path) -> None:
    """On a filesystem that fills up and frees again, every acknowledged append survives a reopen, in order."""
    (tiny_fs / "ballast").write_bytes(b"\0" * (160 * 1024))
    folder = tiny_fs / "spool"
    spool = Spool(folder, max_bytes=1 << 20)
    spool.open()
    acked: list[int] = []
    number = 0
    refusals = 0
    while refusals < 3 and number < 2000:  # until the disk has refused three groups
        results = await _wave(spool, number, 6, 900)
        acked += [n for n, ok in results if ok]
        refusals += not all(ok for _, ok in results)
        number += 6
    assert refusals, "the filesystem never filled up"
    assert spool.pending == len(acked)
    (tiny_fs / "ballast").unlink()  # room again: appends after the refusals must be kept too
    for _ in range(5):
        results = await _wave(spool, number, 4, 900)
        assert all(ok for _, ok in results), results
        acked += [n for n, _ in results]
        number += 4
    spool.close()

    again = Spool(folder, max_bytes=1 << 20)
    again.open()
    try:
        read = [int(e.value[:6]) for e in await again.next_batch(10_000)]
        assert read == acked
        assert again.pending == len(acked)
    finally:
        again.close()


_SHORT_WRITE = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    from pathlib import Path
    from prometheus_client import REGISTRY
    from receiver.errors import Unavailable
    from receiver.spool import Spool

    async def main(folder: Path, limit: int) -> None:
        spool = Spool(folder, max_bytes=1 << 20)
        spool.open()
        acked, refused = [], []

        async def put(number: int, size: int) -> None:
            try:
                await spool.append("t", b"k", f"{number:06d}".encode() + b"x" * size)
            except Unavailable:
                refused.append(number)
            else:
                acked.append(number)

        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # files stop at `limit` bytes
        number = 0
        while not refused and number < 1000:
            await asyncio.gather(*(put(number + i, 700) for i in range(4)))
            number += 4
        await asyncio.gather(*(put(number + i, 700) for i in range(4)))  # refused again
        number += 4
        await put(number, 10)  # small enough for the room left: kept
        segment = folder / "000000000001.seg"
        size = segment.stat().st_size
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        spool.close()
        again = Spool(folder, max_bytes=1 << 20)
        again.open()
        read = [int(e.value[:6]) for e in await again.next_batch(10_000)]
        again.close()
        failures = REGISTRY.get_sample_value("smsrx_receiver_spool_write_failures_total")
        print(json.dumps({
            "acked": acked, "refused": refused, "read": read, "size": size,
            "size_after_reopen": segment.stat().st_size, "failures": failures,
        }))

    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
    """
)


def test_short_write_is_cut_back_and_never_acknowledged(tmp_path: Path) -> None:
    """A group cut short by the file size limit is refused whole and cut back; later appends are kept."""
    folder = tmp_path / "spool"
    run = subprocess.run(
        [sys.executable, "-c", _SHORT_WRITE, str(folder), "10000"],
        capture_output=True,
        text=True,
        cwd=_ROOT,
        env={**os.environ, "PYTHONPATH": str(_ROOT)},
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["refused"], "the size limit never cut a write"
    assert result["read"] == result["acked"], result  # nothing torn was acknowledged
    assert result["acked"][-1] == max(result["acked"] + result["refused"]), result  # the small one
    assert result["size_after_reopen"] == result["size"], result  # no torn tail left behind
    assert result["failures"] and result["failures"] >= 1, result


def _dr(number: int) -> bytes:
    """A receipt of message ``m-disk-<number>``, with some padding to fill the disk sooner."""
    return orange_receipt(
        f"m-disk-{number:05d}", "+2250700000001", "DeliveredToNetwork", padding="p" * 300
    )


async def _load(running: RunningReceiver, tls: dict[str, Path], first: int) -> dict[int, int]:
    """Post receipts 16 at a time until a whole wave is refused; status of each by number."""
    statuses: dict[int, int] = {}
    url = url_for(running, "/callbacks/orange/dr", "127.0.0.2")
    async with client(tls, "127.0.0.2") as session:

        async def post(number: int) -> None:
            async with session.post(
                url, data=_dr(number), headers={"Content-Type": "application/json"}
            ) as response:
                statuses[number] = response.status

        number = first
        while number < first + 3000:
            await asyncio.gather(*(post(number + i) for i in range(16)))
            number += 16
            if all(statuses[n] == 503 for n in range(number - 16, number)):
                break
    return statuses


async def _drained(running: RunningReceiver, timeout: float) -> int:
    spool = running.app[PIPELINE].spool
    assert spool is not None
    deadline = asyncio.get_running_loop().time() + timeout
    while spool.pending and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.25)
    return spool.pending


async def test_receiver_on_full_disk_answers_200_or_503_and_replays_every_200(
    settings_factory, tls_files, tiny_fs: Path
) -> None:
    """Broker down and spool disk full: each callback gets 200 or 503, and every 200 reaches the topic after a restart."""
    own = Broker()
    own.start()
    settings = settings_factory(
        kafka_bootstrap=own.bootstrap,
        kafka_send_timeout=1.0,
        allow_orange=(ipaddress.ip_network("127.0.0.2/32"),),
        spool_dir=tiny_fs / "spool",
    )
    await create_topics(settings)
    own.kill()
    try:
        async with running_receiver(settings, tls_files) as running:
            first = await _load(running, tls_files, 0)
        async with running_receiver(settings, tls_files) as running:  # restarted on the same spool
            second = await _load(running, tls_files, 10_000)
            own = Broker(port=own.port)
            own.start()
            await create_topics(settings)  # memory storage: the restarted broker starts empty
            left = await _drained(running, 60)
        statuses = {**first, **second}
        assert set(statuses.values()) <= {200, 503}, sorted(set(statuses.values()))
        assert 200 in first.values() and 503 in first.values(), first
        acked = {event_id_of(_dr(n)) for n, status in statuses.items() if status == 200}
        records = await read_topic(
            settings.kafka_bootstrap, settings.topics.delivery_receipts, idle=1.0
        )
        published = {decode_delivery_receipt(r.value).event_id for r in records}
        assert published == acked, (
            f"acknowledged {len(acked)}, on the topic {len(published)}, "
            f"missing {len(acked - published)}, extra {len(published - acked)}, spool left {left}"
        )
        assert left == 0
    finally:
        own.stop()
