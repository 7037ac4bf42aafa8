"""A whole smsrx system under test: its own broker and PostgreSQL, the receiver and both
workers as real processes (all started by the launcher, :mod:`smsrx.cli.dev.stack`), a
load generator, and the counts that prove nothing was lost.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from receiver.adapters import orange
from smsrx.cli.dev.stack import Stack
from smsrx.clock import utcnow
from smsrx.db import Migration

STATUSES = (
    "MessageWaiting",
    "DeliveredToNetwork",
    "DeliveryUncertain",
    "DeliveredToTerminal",
    "DeliveryImpossible",
)
COUNTRIES = ("22507", "33612", "22177", "23767", "2547")


def receipt_body(i: int) -> bytes:
    """A distinct Orange receipt: ~5 recipients per message, statuses and countries mixed."""
    message, recipient = divmod(i, 5)
    prefix = COUNTRIES[message % len(COUNTRIES)]
    number = prefix + str(10_000_000 + message * 7 + recipient)[-(11 - len(prefix)) :].rjust(
        11 - len(prefix), "0"
    )
    info = {"address": f"tel:+{number}", "deliveryStatus": STATUSES[i % len(STATUSES)]}
    return orjson.dumps(
        {"deliveryInfoNotification": {"callbackData": f"fault-{message:06d}", "deliveryInfo": info}}
    )


def event_id_of(body: bytes) -> str:
    """The event_id the receiver will give this body (the adapter is pure)."""
    return orange.parse("application/json", body, utcnow())[0].event_id


@dataclass
class LoadResult:
    """What a load run sent and how the receiver answered."""

    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    errors: int = 0

    def merge(self, other: LoadResult) -> None:
        self.sent += other.sent
        self.errors += other.errors
        self.acked |= other.acked
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count


@dataclass
class Report:
    """One fault case's figures, printed at the end of the run and kept for the README."""

    case: str
    sent: int
    acknowledged: int
    distinct_acknowledged: int
    published: int
    projected: int
    lost: int
    double_counted: int
    note: str = ""


REPORTS: list[Report] = []


class FaultStack(Stack):
    """The launcher's stack with the receiver and both workers running, each a real
    process a test can kill, plus the load generator and the counts of the fault suite."""

    receiver_args: tuple[str, ...] = ("receiver",)
    """How the receiver is started (a subclass runs ``receiver --workers 2``)."""

    def __init__(self, root: Path, **variables: str) -> None:
        defaults = {
            "SMSRX_KAFKA_SEND_TIMEOUT": "2s",
            "SMSRX_SHUTDOWN_TIMEOUT": "5s",
            "SMSRX_LOG_LEVEL": "WARNING",
        }
        super().__init__(root, variables={**defaults, **variables})
        self.port = self.ports["SMSRX_RECEIVER_PORT"]
        self.metrics_port = self.ports["SMSRX_RECEIVER_METRICS_PORT"]

    async def start(self) -> list[Migration]:
        """Start everything and wait until the receiver is ready."""
        applied = await super().start()
        for name in ("receiver", "status-projection", "analytics"):
            self.start_process(name)
        self.wait_ready("receiver", self.port)
        return applied

    def start_process(self, name: str, *, instance: str | None = None) -> None:
        """(Re)start the receiver or a worker; ``instance`` names a second replica."""
        if name == "receiver":
            self.spawn(instance or name, *self.receiver_args, port=self.port, timeout=30)
        else:
            self.spawn(instance or name, "consumer", name)

    def session(self) -> aiohttp.ClientSession:
        """An HTTPS client trusting the system's CA."""
        import ssl

        context = ssl.create_default_context(cafile=str(self.cert.ca))
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=64),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    # -- load ----------------------------------------------------------------------------

    async def load(
        self,
        indexes: range | list[int],
        *,
        rate: float,
        concurrency: int = 32,
        duplicates: float = 0.0,
    ) -> LoadResult:
        """POST receipts at a steady ``rate``, with a share of repeats; record every answer."""
        bodies = [receipt_body(i) for i in indexes]
        rng = random.Random(len(bodies))
        extra = [bodies[rng.randrange(len(bodies))] for _ in range(int(len(bodies) * duplicates))]
        for body in extra:
            bodies.insert(rng.randrange(len(bodies) + 1), body)
        result = LoadResult()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        started = time.monotonic()
        url = f"https://localhost:{self.port}/callbacks/orange/dr"

        async def sender(session: aiohttp.ClientSession) -> None:
            while not queue.empty():
                body = queue.get_nowait()
                index = result.sent
                result.sent += 1
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    async with session.post(
                        url, data=body, headers={"Content-Type": "application/json"}
                    ) as resp:
                        await resp.read()
                        result.statuses[resp.status] = result.statuses.get(resp.status, 0) + 1
                        if resp.status == 200:
                            result.acked.add(event_id_of(body))
                except (aiohttp.ClientError, TimeoutError):
                    result.errors += 1

        async with self.session() as session:
            await asyncio.gather(*(sender(session) for _ in range(concurrency)))
        return result

    # -- observation -----------------------------------------------------------------

    def receiver_metric(self, name: str) -> float:
        """Sum of a receiver metric's samples (0 when the receiver is down)."""
        try:
            text = urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2
            ).read()
        except OSError:
            return 0.0
        return sum(
            s.value
            for f in text_string_to_metric_families(text.decode())
            for s in f.samples
            if s.name == name
        )

    async def topic_records(self) -> int:
        """Records on the receipts topic now, read to the end (the broker keeps them in memory only)."""
        topic = self.settings().topics.delivery_receipts
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            await consumer.topics()  # loads the cluster metadata
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            count = 0

            async def behind() -> bool:
                return any([await consumer.position(p) < ends[p] for p in partitions])

            while await behind():
                batch = await consumer.getmany(timeout_ms=1000, max_records=10000)
                count += sum(len(records) for records in batch.values())
            return count
        finally:
            await consumer.stop()

    async def projected(self, acked: set[str]) -> int:
        """How many acknowledged events are in the projection's history."""
        conn = await asyncpg.connect(self.database_url, timeout=5)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM status_events WHERE event_id = ANY($1::uuid[])",
                    list(acked),
                )
            )
        finally:
            await conn.close()

    async def counts(self) -> tuple[int, int, int]:
        """(history rows, events analytics processed, sum of analytics receipt rollups)."""
        conn = await asyncpg.connect(self.database_url, timeout=5)
        try:
            history = await conn.fetchval("SELECT count(*) FROM status_events")
            rollup = await conn.fetchval(
                "SELECT coalesce(sum(events), 0) FROM analytics_receipts_minute"
            )
            processed = await conn.fetchval("SELECT count(*) FROM analytics_processed_events")
            return int(history), int(processed), int(rollup)
        finally:
            await conn.close()

    async def settle(self, acked: set[str], timeout: float = 180) -> None:
        """Wait until every acknowledged event is projected and analytics counted every projected one."""
        started = time.monotonic()
        deadline = started + timeout
        projected = history = rollup = 0
        problem: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                projected = await self.projected(acked)
                history, _, rollup = await self.counts()
            except (OSError, asyncpg.PostgresError) as exc:  # PostgreSQL restarting
                problem = exc
                await asyncio.sleep(1)
                continue
            if projected == len(acked) and rollup >= history:
                await asyncio.sleep(2)  # anything still in flight would show up now
                if (await self.counts())[0] == history:
                    print(f"settled in {time.monotonic() - started:.1f}s: {history} events")
                    return
            await asyncio.sleep(0.5)
        print(
            f"NOT settled after {timeout:.0f}s: projected {projected}/{len(acked)}, "
            f"rollup {rollup}/{history}, last database error: {problem!r}"
        )

    async def report(
        self, case: str, load: LoadResult, *, published: int, note: str = ""
    ) -> Report:
        """Settle, count, and record the case's figures."""
        await self.settle(load.acked)
        projected = await self.projected(load.acked)
        history, _, rollup = await self.counts()
        report = Report(
            case=case,
            sent=load.sent,
            acknowledged=load.statuses.get(200, 0),
            distinct_acknowledged=len(load.acked),
            published=published,
            projected=projected,
            lost=len(load.acked) - projected,
            double_counted=rollup - history,
            note=note,
        )
        REPORTS.append(report)
        return report
