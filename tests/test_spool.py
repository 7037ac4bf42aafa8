"""The durable spool: fsynced appends, crash recovery, bounded size, and replay into the real broker."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from receiver.errors import Unavailable
from receiver.spool import Spool, SpoolLocked
from smsrx.cli.dev.broker import Broker
from smsrx.codec import decode_delivery_receipt
from tests.helpers import orange_receipt, read_topic
from tests.receiver_harness import client, running_receiver, url_for


def _segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.seg"))


async def test_append_survives_reopen_in_order(tmp_path: Path) -> None:
    """Appended records are read back in order after the spool is closed and reopened."""
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    await asyncio.gather(
        *(spool.append("t", f"k{i}".encode(), f"v{i}".encode()) for i in range(50))
    )
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 20)
    again.open()
    assert again.pending == 50
    batch = await again.next_batch(100)
    assert [e.value for e in batch] == [f"v{i}".encode() for i in range(50)]
    again.close()


async def test_commit_moves_checkpoint_across_restarts(tmp_path: Path) -> None:
    """Committed records are not read again, even after a restart."""
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    for i in range(10):
        await spool.append("t", b"k", str(i).encode())
    await spool.commit(await spool.next_batch(4))
    assert spool.pending == 6
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 20)
    again.open()
    assert [e.value for e in await again.next_batch(100)] == [str(i).encode() for i in range(4, 10)]
    again.close()


async def test_torn_tail_is_truncated(tmp_path: Path) -> None:
    """A half-written last frame (a crash mid-append, never acknowledged) is dropped on recovery."""
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    await spool.append("t", b"k", b"complete")
    spool.close()
    [segment] = _segments(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as handle:
        handle.write(b"\x40\x00\x00\x00garbage")
    again = Spool(tmp_path, max_bytes=1 << 20)
    again.open()
    assert again.pending == 1
    assert segment.stat().st_size == size
    await again.append("t", b"k", b"after")
    assert [e.value for e in await again.next_batch(10)] == [b"complete", b"after"]
    again.close()


async def test_full_spool_refuses_with_unavailable(tmp_path: Path) -> None:
    """Past its byte limit the spool refuses new records instead of dropping anything."""
    spool = Spool(tmp_path, max_bytes=2048)
    spool.open()
    with pytest.raises(Unavailable):
        for _ in range(100):
            await spool.append("t", b"k", b"x" * 100)
    assert 10 <= spool.pending < 100
    spool.close()


async def test_one_process_per_spool(tmp_path: Path) -> None:
    """A second owner of the same spool directory is refused."""
    first = Spool(tmp_path, max_bytes=1 << 20)
    first.open()
    with pytest.raises(SpoolLocked):
        Spool(tmp_path, max_bytes=1 << 20).open()
    first.close()


async def test_broker_outage_spools_then_replays_in_order(
    settings_factory, tls_files, tmp_path
) -> None:
    """With the broker down callbacks get 200 from the spool; once it is back they are published in order."""
    own = Broker()
    own.start()
    settings = settings_factory(
        kafka_bootstrap=own.bootstrap,
        kafka_send_timeout=1.0,
        allow_orange=(ipaddress.ip_network("127.0.0.2/32"),),
        spool_dir=tmp_path / "spool",
    )
    from smsrx.kafka import create_topics

    await create_topics(settings)
    try:
        async with running_receiver(settings, tls_files) as running:
            async with client(tls_files, "127.0.0.2") as session:
                url = url_for(running, "/callbacks/orange/dr", "127.0.0.2")

                async def post(message_id: str) -> int:
                    async with session.post(
                        url,
                        data=orange_receipt(
                            "m-spool", f"+22507000000{message_id:02d}", "DeliveredToNetwork"
                        ),
                        headers={"Content-Type": "application/json"},
                    ) as r:
                        return r.status

                assert await post(99) == 200
                own.kill()
                assert [await post(i) for i in range(5)] == [200] * 5
                assert REGISTRY.get_sample_value("smsrx_receiver_spool_events") == 5
                assert (
                    REGISTRY.get_sample_value("smsrx_receiver_spool_oldest_timestamp_seconds") > 0
                )
                assert await post(0) == 200  # a repeat of a spooled event is not spooled twice
                assert REGISTRY.get_sample_value("smsrx_receiver_spool_events") == 5

                own = Broker(port=own.port)
                own.start()
                await create_topics(settings)  # memory storage: the restarted broker starts empty
                for _ in range(60):
                    if REGISTRY.get_sample_value("smsrx_receiver_spool_events") == 0:
                        break
                    await asyncio.sleep(0.5)
                assert REGISTRY.get_sample_value("smsrx_receiver_spool_events") == 0
                assert (
                    REGISTRY.get_sample_value("smsrx_receiver_spool_oldest_timestamp_seconds") == 0
                )
        records = await read_topic(
            settings.kafka_bootstrap, settings.topics.delivery_receipts, idle=1.0
        )
        ids = [decode_delivery_receipt(r.value).recipient for r in records]
        expected = [f"+22507000000{i:02d}" for i in range(5)]
        # Nothing acknowledged is lost. Copies may appear (aiokafka retries a timed-out
        # record itself once the broker is back); consumers drop them by event_id.
        assert set(ids) == set(expected)
        replayed = iter(ids)
        assert all(any(i == e for i in replayed) for e in expected), (
            ids
        )  # the spool's order is kept
    finally:
        own.stop()


async def test_gauges_count_every_open_spool(tmp_path: Path) -> None:
    """A process holding two spools (its own and an adopted one) reports both in the gauges."""
    own, adopted = (
        Spool(tmp_path / "a", max_bytes=1 << 20),
        Spool(tmp_path / "b", max_bytes=1 << 20),
    )
    own.open()
    adopted.open()
    try:
        for i in range(3):
            await own.append("t", b"k", str(i).encode())
        await adopted.append("t", b"k", b"x")
        assert REGISTRY.get_sample_value("smsrx_receiver_spool_events") == 4
        await adopted.commit(await adopted.next_batch(10))
        assert REGISTRY.get_sample_value("smsrx_receiver_spool_events") == 3
    finally:
        own.close()
        adopted.close()
