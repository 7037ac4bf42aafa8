"""Helpers for the worker tests: event builders, feeding the real broker, running
workers in-process, and the precedence oracle the projection must agree with."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from consumers.analytics import Analytics
from consumers.inbound import Inbound
from consumers.status_projection import StatusProjection
from consumers.worker import Worker
from smsrx.codec import encode
from smsrx.events import DeliveryReceipt, InboundMessage, Submission
from smsrx.kafka import make_producer
from smsrx.produce import produce_all
from smsrx.settings import Settings
from smsrx.statuses import FINAL_STATUSES, RANK, Status

# Shorter group timings than aiokafka's defaults: joins and rebalances take ~3 s, not ~8 s.
FAST_GROUP = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 300,
    "rebalance_timeout_ms": 3000,
}

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

PROVIDER_STATUS = {
    Status.QUEUED: "MessageWaiting",
    Status.SENT: "DeliveredToNetwork",
    Status.UNKNOWN: "DeliveryUncertain",
    Status.FAILED: "DeliveryImpossible",
    Status.DELIVERED: "DeliveredToTerminal",
    Status.EXPIRED: "smsrx:expired",
}

COUNTRIES = ("+22507", "+33612", "+22177", "+23762")


def recipient_number(i: int) -> str:
    """A valid-looking number in one of a few countries."""
    prefix = COUNTRIES[i % len(COUNTRIES)]
    return prefix + str(10_000_000 + i)[-(12 - len(prefix) + 1) :].rjust(8, "0")[:8]


def receipt(
    message_id: str,
    recipient: str,
    status: Status,
    at: datetime,
    *,
    provider: str = "orange",
    provider_status: str | None = None,
) -> DeliveryReceipt:
    """A carrier receipt."""
    return DeliveryReceipt.create(
        provider=provider,
        message_id=message_id,
        recipient=recipient,
        status=status,
        provider_status=provider_status or PROVIDER_STATUS[status],
        received_at=at,
        raw={"deliveryStatus": provider_status or PROVIDER_STATUS[status], "m": message_id},
    )


def submission(
    message_id: str, recipients: Sequence[str], at: datetime, *, provider: str = "orange"
) -> Submission:
    """A submission."""
    return Submission.create(
        provider=provider,
        message_id=message_id,
        recipients=tuple(recipients),
        submitted_at=at,
        tags={"tenant": "acme"},
    )


def inbound(message_id: str, sender: str, at: datetime) -> InboundMessage:
    """An inbound SMS."""
    return InboundMessage.create(
        provider="vavasms",
        message_id=message_id,
        sender=sender,
        content="hello",
        sent_at=at,
        sent_at_text=at.isoformat(),
        received_at=at,
        raw={"id": message_id},
    )


@dataclass
class Story:
    """A generated workload: distinct receipts, and the records actually sent."""

    distinct: list[DeliveryReceipt]
    sent: list[DeliveryReceipt]


def workload(
    messages: int, *, recipients: int = 1, duplicates: float = 0.3, seed: int = 1
) -> Story:
    """Receipts for ``messages`` messages with mixed statuses, duplicated and shuffled."""
    rng = random.Random(seed)
    distinct: list[DeliveryReceipt] = []
    for m in range(messages):
        for r in range(recipients):
            number = recipient_number(m * recipients + r)
            chain = rng.choice(
                [
                    [Status.QUEUED, Status.SENT, Status.DELIVERED],
                    [Status.SENT, Status.FAILED],
                    [Status.SENT, Status.FAILED, Status.DELIVERED],
                    [Status.QUEUED, Status.UNKNOWN],
                    [Status.SENT],
                ]
            )
            for step, status in enumerate(chain):
                at = T0 + timedelta(seconds=m % 600, milliseconds=250 * step + r)
                distinct.append(receipt(f"m{m:05d}", number, status, at))
    sent = list(distinct) + [rng.choice(distinct) for _ in range(int(len(distinct) * duplicates))]
    rng.shuffle(sent)
    return Story(distinct, sent)


def oracle(receipts: Iterable[DeliveryReceipt]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The state precedence demands, computed independently of any order."""
    by_key: dict[tuple[str, str, str], list[DeliveryReceipt]] = {}
    for r in {r.event_id: r for r in receipts}.values():
        by_key.setdefault((r.provider, r.message_id, r.recipient), []).append(r)
    expected = {}
    for key, events in by_key.items():
        best = min(events, key=lambda e: (-RANK[e.status], e.received_at, e.event_id))
        expected[key] = {
            "status": best.status.value,
            "is_final": best.status in FINAL_STATUSES,
            "provider_status": best.provider_status,
            "status_event_id": best.event_id,
            "first_event_at": min(e.received_at for e in events),
            "last_event_at": max(e.received_at for e in events),
            "event_count": len(events),
        }
    return expected


async def projected(db: asyncpg.Connection) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The current-status table, shaped like :func:`oracle`."""
    rows = await db.fetch(
        "SELECT provider, message_id, recipient, status, is_final, provider_status, "
        "status_event_id, first_event_at, last_event_at, event_count FROM recipient_status"
    )
    return {
        (r["provider"], r["message_id"], r["recipient"]): {
            k: r[k]
            for k in (
                "status",
                "is_final",
                "provider_status",
                "status_event_id",
                "first_event_at",
                "last_event_at",
                "event_count",
            )
        }
        for r in rows
    }


async def feed(settings: Settings, topic: str, events: Sequence[Any]) -> None:
    """Publish events to a topic of the real broker, keyed like the receiver does."""
    producer = make_producer(settings)
    await producer.start()
    try:
        for start in range(0, len(events), 5000):
            chunk = events[start : start + 5000]
            await produce_all(producer, [(topic, e.key, encode(e)) for e in chunk])
    finally:
        await producer.stop()


async def feed_raw(settings: Settings, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    """Publish raw (key, value) records."""
    producer = make_producer(settings)
    await producer.start()
    try:
        await produce_all(producer, [(topic, k, v) for k, v in records])
    finally:
        await producer.stop()


async def wait_for(
    check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 60.0
) -> None:
    """Poll ``check`` until it holds; fail the test naming ``what`` after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


class Runner:
    """Runs workers in-process and stops every one of them at teardown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tasks: dict[Worker, asyncio.Task[None]] = {}

    def projection(self, settings: Settings | None = None, **options: Any) -> StatusProjection:
        """A status-projection worker (not started)."""
        options.setdefault("consumer_options", FAST_GROUP)
        return StatusProjection(settings or self.settings, handle_signals=False, **options)

    def analytics(self, settings: Settings | None = None, **options: Any) -> Analytics:
        """An analytics worker (not started)."""
        options.setdefault("consumer_options", FAST_GROUP)
        return Analytics(settings or self.settings, handle_signals=False, **options)

    def inbound(self, settings: Settings | None = None, **options: Any) -> Inbound:
        """An inbound worker, started."""
        options.setdefault("consumer_options", FAST_GROUP)
        worker = Inbound(settings or self.settings, handle_signals=False, **options)
        self.start(worker)
        return worker

    def start(self, worker: Worker) -> Worker:
        """Run ``worker`` in a task."""
        self.tasks[worker] = asyncio.create_task(worker.run())
        return worker

    async def stop(self, worker: Worker) -> None:
        """Drain and stop ``worker``; re-raise what made it fail."""
        worker.stop()
        task = self.tasks.pop(worker)
        await asyncio.wait_for(task, 30)

    async def drain(self, *workers: Worker, records: int, timeout: float = 90.0) -> None:
        """Wait until the workers together processed ``records`` records."""
        await wait_for(
            lambda: (
                sum(w.processed for w in workers) >= records
                or any(self.tasks[w].done() for w in workers if w in self.tasks)
            ),
            f"{records} records processed",
            timeout,
        )
        for w in workers:
            task = self.tasks.get(w)
            if task is not None and task.done():
                task.result()

    async def close(self) -> None:
        """Stop every worker still running."""
        for worker in list(self.tasks):
            worker.stop()
        if self.tasks:
            await asyncio.wait(self.tasks.values(), timeout=30)
        for task in self.tasks.values():
            if not task.done():
                task.cancel()


@pytest.fixture
async def runner(settings: Settings) -> AsyncIterator[Runner]:
    """Start workers against the test's broker and database; all stopped at teardown."""
    run = Runner(settings)
    yield run
    await run.close()


def sample(name: str, **labels: str) -> float:
    """The current value of a Prometheus sample of this process (0 when absent)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def read_api(worker: Inbound) -> AsyncIterator[aiohttp.ClientSession]:
    """The worker's ``GET /v1/optouts/{e164}``, served on a free port, and a client for it."""
    app = web.Application()
    app.add_routes(worker.http_routes())
    server = web.AppRunner(app)
    await server.setup()
    site = web.TCPSite(server, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            yield http
    finally:
        await server.cleanup()


async def api(http: aiohttp.ClientSession, phone: str) -> dict[str, Any]:
    """The read API's answer for ``phone``."""
    async with http.get(f"/v1/optouts/{phone}") as resp:
        assert resp.status == 200
        body: dict[str, Any] = orjson.loads(await resp.read())
        return body
