"""The whole system as an operator runs it, for sections 6 and 7 (stack, soak).

``smsrx receiver`` (HTTPS, one process), ``smsrx consumer status-projection`` and
``smsrx consumer analytics`` on fresh topics and emptied tables, beside the stack's
broker and PostgreSQL. :class:`WholeSystem` knows every process of the system and
checks each is the one it claims: its command line is the one started, the broker,
the receiver and each worker are one process, and nothing else runs under the
benchmark besides them (and wrk while it loads). Their CPU is read from /proc, with
what reaped children used (PostgreSQL's backends come and go).

Catch-up is read from the broker and the processes' metrics ports, never from
PostgreSQL, so that watching costs the database nothing: both groups have committed
every record of ``sms.delivery-receipts.v1``, the projection's outbox is empty, and
analytics has committed ``sms.message-status.v1`` (where the projection publishes
status changes) to its end. The receiver's and the projection's counters of what they
published say when; the high watermarks (from fetch responses) then prove it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench import procfs
from bench.kafkautil import Offsets, highwaters
from bench.scrape import metric_sum, scrape
from bench.stack import BenchStack, Service
from consumers.analytics import Analytics
from consumers.status_projection import StatusProjection
from smsrx.cli.dev.process import Child

__all__ = ["CONNECTIONS", "PROCESSES", "WholeSystem"]

CONNECTIONS = 64
"""wrk's connections, and so the most requests that can be in flight when it stops."""
PROCESSES = ("broker", "postgres", "receiver", "projection", "analytics")
"""The processes the CPU figures name, in the order they are shown."""
_PUBLISHED = "smsrx_receiver_events_published_total"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


class WholeSystem:
    """Receiver, status-projection and analytics on fresh topics; see the module."""

    def __init__(self, stack: BenchStack, prefix: str) -> None:
        assert stack.broker.child is not None and stack.postgres.child is not None
        self.stack, self.prefix = stack, prefix
        settings = stack.settings(SMSRX_TOPIC_PREFIX=prefix)
        self.receipts = settings.topics.delivery_receipts
        self.changes = settings.topics.message_status
        self.projection_metrics = settings.status_projection_metrics_port
        self.receiver = stack.receiver(f"receiver-{prefix.rstrip('.')}", prefix=prefix)
        self.projection = stack.consumer("status-projection", prefix=prefix)
        self.analytics = stack.consumer("analytics", prefix=prefix)
        self.groups = {
            "projection": Offsets(stack.bootstrap, prefix + StatusProjection.group),
            "analytics": Offsets(stack.bootstrap, prefix + Analytics.group),
        }
        self.children: dict[str, Child] = {
            "broker": stack.broker.child,
            "postgres": stack.postgres.child,
            "receiver": self.receiver.child,
            "projection": self.projection.child,
            "analytics": self.analytics.child,
        }
        self.partitions: list[int] = []
        """Partitions of the receipts topic."""
        self.change_partitions: list[int] = []
        """Partitions of the status-changes topic."""
        self.progress = ""
        """What the last catch-up check saw (for errors and logs)."""

    @classmethod
    async def start(cls, stack: BenchStack, tag: str) -> WholeSystem:
        """Fresh topics under a new prefix, emptied tables, then the three processes."""
        prefix = f"{tag}{uuid.uuid4().hex[:8]}."
        await stack.create_topics(prefix)
        await stack.truncate()
        system = cls(stack, prefix)
        system.partitions = sorted(await highwaters(stack.bootstrap, system.receipts))
        system.change_partitions = sorted(await highwaters(stack.bootstrap, system.changes))
        system.check()
        return system

    @property
    def url(self) -> str:
        """Where carriers post Orange receipts."""
        return f"https://127.0.0.1:{self.receiver.port}/callbacks/orange/dr"

    @property
    def services(self) -> tuple[Service, ...]:
        """The smsrx processes this system started."""
        return (self.receiver, self.projection, self.analytics)

    def pids(self) -> dict[str, list[int]]:
        """Every process of the system, by name (PostgreSQL: the server and its children)."""
        pids = {name: [child.pid] for name, child in self.children.items() if child.pid}
        pids["postgres"] = procfs.tree(pids["postgres"][0])
        return pids

    def check(self) -> None:
        """Each named process is the one started, the single ones are one process, and
        nothing else runs under this benchmark; otherwise raise."""
        ours = set(procfs.tree(os.getpid())) - {os.getpid()}
        pids = self.pids()
        problems = []
        for name, child in self.children.items():
            if child.pid is None or not child.alive():
                problems.append(f"{name} is not running")
                continue
            argv = _cmdline(child.pid)
            if argv != child.argv:
                problems.append(f"{name}: pid {child.pid} runs {argv}, not {child.argv}")
            if name != "postgres" and len(procfs.tree(child.pid)) != 1:
                problems.append(f"{name}: {len(procfs.tree(child.pid))} processes, not 1")
        others = sorted(set(self.stack.children) - {s.name for s in self.services})
        if others:
            problems.append(f"other processes on the stack: {others}")
        accounted = {pid for group in pids.values() for pid in group}
        stray = [p for p in sorted(ours - accounted) if Path(f"/proc/{p}").exists()]
        if stray:
            problems.append(f"unaccounted processes: {[(p, _cmdline(p)) for p in stray]}")
        if problems:
            raise RuntimeError("whole system: " + "; ".join(problems))

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each process group, reaped children included."""
        return {
            name: sum(procfs.cpu_seconds(pid, reaped=True) for pid in pids)
            for name, pids in self.pids().items()
        }

    def memory(self) -> dict[str, int]:
        """Resident bytes of the receiver and the broker; PostgreSQL's as the sum of PSS."""
        pids = self.pids()
        return {
            name: procfs.MemoryWatch.measure(pids[name], summed=name == "postgres")
            for name in ("receiver", "broker", "postgres")
        }

    async def published(self) -> float:
        """Receipts the broker acknowledged to the receiver (its own counter)."""
        assert self.receiver.metrics_port is not None
        samples = await scrape(self.receiver.metrics_port)
        return metric_sum(samples, _PUBLISHED, topic=self.receipts)

    async def lag(self) -> dict[str, float]:
        """Receipts published and not yet committed, by group."""
        published = await self.published()
        return {
            name: max(0.0, published - await offsets.committed(self.receipts, self.partitions))
            for name, offsets in self.groups.items()
        }

    async def caught_up(self, limit: float, interval: float = 0.1) -> float:
        """Wait until both groups committed every receipt, the outbox is empty and
        analytics committed every status change; return the seconds waited.

        The processes' own counters say when, cheaply (a few requests, so the figure
        is close to the moment); the high watermarks then prove it, with the committed
        offsets unchanged since (otherwise the wait goes on).
        """
        started = time.monotonic()
        while True:
            seen = await self._counted()
            if seen is not None and await self._proven(seen):
                return seen.at - started
            dead = [s.name for s in self.services if not s.child.alive()]
            if dead or time.monotonic() - started > limit:
                raise RuntimeError(
                    f"whole system not caught up after {time.monotonic() - started:.0f}s "
                    f"(exited: {dead or 'none'}): {self.progress}"
                )
            await asyncio.sleep(interval)

    async def _committed(self) -> _Committed:
        return _Committed(
            {
                name: await offsets.committed(self.receipts, self.partitions)
                for name, offsets in self.groups.items()
            },
            await self.groups["analytics"].committed(self.changes, self.change_partitions),
            time.monotonic(),
        )

    async def _counted(self) -> _Committed | None:
        """The committed offsets, if they reach what the receiver and the projection
        say they published and the outbox is empty."""
        published = await self.published()
        projection = await scrape(self.projection_metrics)
        pending = metric_sum(projection, "smsrx_status_outbox_pending_records")
        changes = metric_sum(projection, "smsrx_status_changes_published_total")
        seen = await self._committed()
        self.progress = (
            f"{published:,.0f} receipts published, committed {seen.receipts}; "
            f"{changes:,.0f} status changes published, {pending:,.0f} pending, "
            f"{seen.changes:,} committed by analytics"
        )
        caught = min(seen.receipts.values()) >= published and seen.changes >= changes
        return seen if caught and not pending else None

    async def _proven(self, seen: _Committed) -> bool:
        receipts = await highwaters(self.stack.bootstrap, self.receipts)
        changes = await highwaters(self.stack.bootstrap, self.changes)
        now = await self._committed()
        marks = (sum(receipts.values()), sum(changes.values()))
        self.progress += f"; high watermarks {marks[0]:,} receipts, {marks[1]:,} status changes"
        return (
            now.receipts == seen.receipts
            and now.changes == seen.changes
            and all(done == marks[0] for done in now.receipts.values())
            and now.changes == marks[1]
        )

    async def stop(self) -> None:
        """Stop the processes and delete the topics."""
        for offsets in self.groups.values():
            await offsets.close()
        for service in reversed(self.services):
            self.stack.stop_service(service)
        await self.stack.delete_topics(self.prefix)


@dataclass(frozen=True)
class _Committed:
    receipts: dict[str, int]
    """Receipts committed, by group."""
    changes: int
    """Status changes committed by analytics."""
    at: float
    """When they were read (monotonic)."""


@dataclass
class Burst:
    """What one burst at full speed measured."""

    seconds: float
    """wrk's run."""
    acked: int
    """Receipts answered 200 (wrk)."""
    published: float
    """Receipts the receiver published over the burst (its counter)."""
    errors: int
    http_p99: float
    catchup: float
    """Seconds from the end of the burst until the system had caught up."""
    cpu: dict[str, float]
    """CPU seconds of each process over the burst and the catch-up."""
    load: float
    """CPU seconds of wrk and this benchmark over the same time."""
    others: float
    """CPU seconds of processes outside this run over the same time."""

    @property
    def rate(self) -> float:
        """Receipts acknowledged per second."""
        return self.acked / self.seconds

    @property
    def elapsed(self) -> float:
        """Seconds of burst and catch-up."""
        return self.seconds + self.catchup

    def per_receipt(self, name: str | None = None) -> float:
        """µs of CPU per receipt acknowledged, of one process or (None) of all."""
        used = sum(self.cpu.values()) if name is None else self.cpu[name]
        return used / self.acked * 1e6 if self.acked else float("nan")
