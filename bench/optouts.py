"""Opt-outs: the read API's checks per second on one core, and ``smsrx optouts import``.

``.venv/bin/python bench/optouts.py`` (about 4 minutes; needs wrk; not part of
``make bench``). It starts the benchmark stack (:mod:`bench.stack`: PostgreSQL with fsync
on, the development broker) and, in each repetition, on fresh topics and empty tables:

1. starts ``smsrx consumer inbound`` as a process (its group reads from the start);
2. ``smsrx optouts import`` of a CSV file of N numbers (100,000; 5 % opt-ins, half of
   them dated, a quarter with a reason): the wall time until the command has published
   them all (it exits), and until the worker has applied them all (``optout_events``
   holds N rows, polled every 50 ms);
3. the same import again: its time, and the time until the worker's group has committed
   every record; no row of ``suppressions`` or ``optout_events`` may change (an md5 of
   every column of every row, before and after) and the worker must count N duplicates
   (``smsrx_consumer_events_total``), else the run stops with an error;
4. wrk (1 thread, ``optouts.lua``) loads ``GET /v1/optouts/{e164}`` on the worker's
   internal port with random numbers, 10 % of them never seen, for S seconds at C
   connections after a 2 s warm-up: checks/s and latency from wrk, the worker's and
   PostgreSQL's CPU from /proc. The worker must be one process, with no errors from wrk,
   and its own ``smsrx_optout_checks_total`` must have counted every check wrk completed
   (and at most the 2 × C that were in flight when wrk stopped, here and after the
   warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` and ``smsrx`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from bench import procfs
from bench.kafkautil import Offsets, highwaters
from bench.report import Results, figure_rows, table, target_rows
from bench.scrape import metric_sum, scrape
from bench.stack import BenchStack
from bench.wrk import require_wrk, run_wrk
from smsrx.cli.dev.process import free_port

LUA = Path(__file__).with_name("optouts.lua")
FIRST = 10_000_000
"""The first national number imported: +22507 10000000, then consecutive numbers."""
UNKNOWN = 0.1
"""Share of checks for numbers never seen."""
_DIGESTS = {
    "optout_events": "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t.event_id)) "
    "FROM optout_events t",
    "suppressions": "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t.phone)) "
    "FROM suppressions t",
}


def write_csv(path: Path, count: int, seed: int) -> int:
    """A file of ``count`` distinct numbers as a CRM would export them; return the opt-outs."""
    rng = random.Random(seed)
    opt_outs = 0
    with path.open("w") as out:
        out.write("phone,action,occurred_at,reason\n")
        for i in range(count):
            action = "opt_in" if rng.random() < 0.05 else "opt_out"
            opt_outs += action == "opt_out"
            day = rng.randrange(1, 28)
            when = f"2026-11-{day:02d}T{rng.randrange(24):02d}:00:00Z" if i % 2 else ""
            reason = "crm export" if i % 4 == 0 else ""
            out.write(f"+22507{FIRST + i:08d},{action},{when},{reason}\n")
    return opt_outs


async def smsrx(stack: BenchStack, env: dict[str, str], *argv: str) -> tuple[float, str]:
    """Run ``smsrx ARGV``; return its wall time and stdout (it must exit 0)."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smsrx.cli",
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"smsrx {' '.join(argv)} exited {proc.returncode}: {err.decode()}")
    return seconds, out.decode()


async def digests(conn: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """Row count and md5 of every column of every row, per table."""
    found = {}
    for table_name, query in _DIGESTS.items():
        row = await conn.fetchrow(query)
        found[table_name] = (int(row[0]), str(row[1]))
    return found


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float) -> float:
    """Poll ``check`` every 50 ms until it holds; return when (monotonic seconds)."""
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {limit:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic()


def postgres_cpu(stack: BenchStack) -> float:
    """CPU seconds of PostgreSQL's processes so far."""
    assert stack.postgres.child is not None and stack.postgres.child.pid is not None
    return sum(procfs.cpu_seconds(pid) for pid in procfs.tree(stack.postgres.child.pid))


async def repetition(
    stack: BenchStack, args: argparse.Namespace, results: Results, run: int
) -> None:
    """One repetition: import twice, then load the read API."""
    prefix = f"o{uuid.uuid4().hex[:8]}."
    await stack.create_topics(prefix)
    await stack.truncate()
    port = free_port()
    env = stack.env(SMSRX_TOPIC_PREFIX=prefix, SMSRX_INBOUND_METRICS_PORT=str(port))
    topic = stack.settings(SMSRX_TOPIC_PREFIX=prefix).topics.opt_outs
    name = f"inbound-{run}"
    worker = stack.spawn(name, "consumer", "inbound", env=env, port=port)
    assert worker.pid is not None
    path = stack.root / "optouts.csv"
    opt_outs = write_csv(path, args.numbers, seed=run)
    conn = await asyncpg.connect(stack.database_url)
    offsets = Offsets(stack.bootstrap, prefix + "smsrx-inbound")
    try:
        # 1. the first import
        started, cpu = time.monotonic(), procfs.cpu_seconds(worker.pid)
        published, out = await smsrx(stack, env, "optouts", "import", str(path))
        if not out.startswith(f"published {args.numbers:,}, skipped 0"):
            raise RuntimeError(f"unexpected import summary: {out!r}")

        async def applied() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM optout_events") >= args.numbers)

        done = await until(applied, f"{args.numbers:,} events applied", 300)
        worker_cpu = procfs.cpu_seconds(worker.pid) - cpu
        n = args.numbers
        results.add(
            "import.published", f"import of {n:,} numbers: published (wall)", "s", published
        )
        results.add(
            "import.applied", f"import of {n:,} numbers: applied (wall)", "s", done - started
        )
        results.add(
            "import.rate",
            "import: numbers applied per second (from the command's start)",
            "rows/s",
            n / (done - started),
        )
        results.add(
            "import.worker_cpu", "import: inbound worker CPU per number", "µs", worker_cpu / n * 1e6
        )
        suppressed = await conn.fetchval("SELECT count(*) FROM suppressions WHERE suppressed")
        if suppressed != opt_outs:
            raise RuntimeError(f"{suppressed} numbers suppressed, the file has {opt_outs} opt-outs")
        before = await digests(conn)

        # 2. the same import again
        started = time.monotonic()
        again, out = await smsrx(stack, env, "optouts", "import", str(path))
        partitions = sorted(await highwaters(stack.bootstrap, topic))

        async def consumed() -> bool:
            return await offsets.committed(topic, partitions) >= 2 * n

        done = await until(consumed, f"{2 * n:,} records committed", 300)
        results.add("again.published", "same import again: published (wall)", "s", again)
        results.add("again.consumed", "same import again: consumed (wall)", "s", done - started)
        after = await digests(conn)
        metrics = await scrape(port)
        duplicates = metric_sum(
            metrics, "smsrx_consumer_events_total", topic=topic, outcome="duplicate"
        )
        if after != before or duplicates != n:
            raise RuntimeError(
                f"the second import changed something: {before} -> {after}, "
                f"{duplicates:,.0f} duplicates counted"
            )
        results.notes.append(
            f"repetition {run}: {n:,} numbers ({opt_outs:,} opt-outs); after the second "
            f"import optout_events and suppressions unchanged ({after['optout_events'][0]:,} "
            f"and {after['suppressions'][0]:,} rows, md5 {after['suppressions'][1][:8]}...), "
            f"{duplicates:,.0f} duplicates counted by the worker"
        )

        # 3. the read API
        await read_api(stack, args, results, port, worker.pid)
    finally:
        await offsets.close()
        await conn.close()
        stack.stop_child(name)
        await stack.delete_topics(prefix)


async def read_api(
    stack: BenchStack, args: argparse.Namespace, results: Results, port: int, pid: int
) -> None:
    """Load ``GET /v1/optouts/{e164}`` with wrk and check the worker counted it."""
    url = f"http://127.0.0.1:{port}"
    script_args = [str(FIRST), str(args.numbers), str(UNKNOWN)]
    await run_wrk(url, connections=args.connections, seconds=2, script=LUA, script_args=script_args)
    if procfs.tree(pid) != [pid]:
        raise RuntimeError(f"the inbound worker is not one process: {procfs.tree(pid)}")
    checks_before = metric_sum(await scrape(port), "smsrx_optout_checks_total")
    cpu, pg, busy, wall = procfs.cpu_seconds(pid), postgres_cpu(stack), *_clock()
    result = await run_wrk(
        url, connections=args.connections, seconds=args.seconds, script=LUA, script_args=script_args
    )
    cpu, pg = procfs.cpu_seconds(pid) - cpu, postgres_cpu(stack) - pg
    busy, wall = _clock()[0] - busy, time.monotonic() - wall
    samples = await scrape(port)
    checks = metric_sum(samples, "smsrx_optout_checks_total") - checks_before
    answered = result.requests - result.errors
    # wrk counts only answers received before it stops: up to C requests are in flight
    # then, and up to C at the end of the warm-up may be counted after the first scrape.
    if result.errors or not answered <= checks <= answered + 2 * args.connections:
        raise RuntimeError(
            f"wrk: {result.requests:,} requests, {result.errors} errors; the worker counted "
            f"{checks:,.0f} checks"
        )
    c = args.connections
    results.add("api.rps", f"read API, {c} conn: checks/s", "req/s", result.rps)
    results.add("api.p50", f"read API, {c} conn: p50 latency", "ms", result.p50_ms)
    results.add("api.p99", f"read API, {c} conn: p99 latency", "ms", result.p99_ms)
    results.add("api.cpu", "read API: inbound worker CPU (of one core)", "%", cpu / wall * 100)
    results.add("api.per_check", "read API: worker CPU per check", "µs", cpu / checks * 1e6)
    results.add("api.pg_per_check", "read API: PostgreSQL CPU per check", "µs", pg / checks * 1e6)
    suppressed = metric_sum(samples, "smsrx_optout_checks_total", answer="suppressed")
    results.notes.append(
        f"read API: {checks:,.0f} checks counted by the worker for {answered:,} answered by wrk "
        f"({suppressed / max(1.0, metric_sum(samples, 'smsrx_optout_checks_total')):.0%} "
        f"suppressed over the run); other processes used {busy - cpu - pg:.1f} CPU-s "
        f"(wrk included) in {wall:.1f} s"
    )


def _clock() -> tuple[float, float]:
    return procfs.machine_busy_seconds(), time.monotonic()


async def measure(stack: BenchStack, args: argparse.Namespace) -> Results:
    """Every repetition, interleaved: each imports, imports again, then loads the API."""
    results = Results()
    for run in range(1, args.runs + 1):
        print(f"repetition {run} of {args.runs}", file=sys.stderr)
        await repetition(stack, args, results, run)
    results.target("read API checks/s, one worker process", "api.rps", 5000, higher_is_better=True)
    results.target(
        f"import of {args.numbers:,} numbers until applied", "import.applied", 60,
        higher_is_better=False,
    )  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(prog="bench/optouts.py", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--numbers", type=int, default=100_000, help="numbers imported (100000)")
    parser.add_argument("--seconds", type=float, default=10, help="wrk run length (10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    args = parser.parse_args(argv)
    require_wrk()
    started = time.monotonic()
    with BenchStack().running() as stack:
        results = asyncio.run(measure(stack, args))
    markdown = True
    print(f"\n{args.runs} repetitions in {(time.monotonic() - started) / 60:.1f} min\n")
    headers = ["figure", "target", "measured", "spread", "÷ target", ""]
    print(table(headers, target_rows(results.targets), markdown=markdown) + "\n")
    figures = list(results.figures.values())
    print(table(["figure", "median", "spread", "n"], figure_rows(figures), markdown=markdown))
    print("\n" + "\n".join(f"- {note}" for note in results.notes))


if __name__ == "__main__":
    main()
