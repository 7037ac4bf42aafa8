"""What the PostgreSQL A/B scripts share (``bench/history_ab.py``, ``bench/outbox_ab.py``).

A campaign of receipts cut into batches, a fifth of them sent again in a later batch as
redeliveries are; PostgreSQL alone (no broker traffic), with its CPU read from
``/proc``; variants interleaved (A, B, B, A, ...) so that the machine's drift falls on
both; medians with their spread.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bench import procfs
from bench.stack import BenchStack
from bench.traffic import campaign
from smsrx.events import DeliveryReceipt

__all__ = ["Workload", "cell", "interleaved", "main", "postgres_cpu"]


@dataclass(frozen=True)
class Workload:
    """The receipts every variant writes, batch by batch."""

    batches: list[list[DeliveryReceipt]]
    redelivered: int

    @property
    def receipts(self) -> int:
        """Receipts in all batches, redeliveries included."""
        return sum(len(b) for b in self.batches)

    @classmethod
    def build(cls, receipts: int, batch: int) -> Workload:
        """About ``receipts`` receipts of a campaign, then a fifth of them again."""
        made = campaign(receipts).receipts
        again = made[: len(made) // 5]  # redeliveries, a batch or more later
        stream = made + again
        return cls([stream[i : i + batch] for i in range(0, len(stream), batch)], len(again))

    def describe(self, runs: int) -> str:
        """One line for the printed table."""
        return (
            f"{self.receipts:,} receipts ({self.redelivered:,} redelivered), batches of "
            f"{len(self.batches[0]):,}, {runs} repetitions each"
        )


def interleaved(variants: Sequence[str], repetition: int) -> Sequence[str]:
    """The order of the variants in one repetition: A, B, then B, A, and so on."""
    return variants if repetition % 2 == 0 else variants[::-1]


def postgres_cpu(stack: BenchStack) -> float:
    """CPU seconds used so far by PostgreSQL's processes (the postmaster and its children)."""
    assert stack.postgres is not None and stack.postgres.child is not None
    pid = stack.postgres.child.pid
    assert pid is not None
    return sum(procfs.cpu_seconds(p) for p in procfs.tree(pid))


def cell(values: Sequence[float]) -> str:
    """``median (min–max)``, one decimal."""
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def main(
    prog: str,
    doc: str,
    compare: Callable[[BenchStack, Workload, int], Awaitable[int]],
    argv: list[str] | None = None,
) -> None:
    """Parse the common options, start PostgreSQL (and the broker) and run ``compare``."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=200_000, help="receipts (200000)")
    parser.add_argument("--batch", type=int, default=5000, help="receipts per batch (5000)")
    parser.add_argument("--runs", type=int, default=4, help="repetitions of each (4)")
    args = parser.parse_args(argv)
    workload = Workload.build(args.receipts, args.batch)
    with BenchStack(durable=False).running() as stack:
        code = asyncio.run(compare(stack, workload, args.runs))
    sys.exit(code)
