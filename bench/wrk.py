"""Running wrk with ``orange.lua`` and reading its figures."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["E2E_SCRIPT", "WrkResult", "require_wrk", "run_wrk"]

SCRIPT = Path(__file__).with_name("orange.lua")
E2E_SCRIPT = Path(__file__).with_name("e2e.lua")
_RUN_IDS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        """Requests per second (answered without error)."""
        return (self.requests - self.errors) / self.seconds


def require_wrk() -> str:
    """The wrk binary, or a clear error saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("bench: wrk is not installed (Debian: apt-get install -y wrk)")
    return path


async def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    duplicates: float = 0.05,
    run_id: int | None = None,
    script: Path = SCRIPT,
    script_args: list[str] | None = None,
) -> WrkResult:
    """POST receipts to ``url`` for ``seconds`` with ``connections`` kept-alive connections.

    By default with ``orange.lua`` (distinct receipts, ``duplicates`` of them repeated);
    ``script`` and ``script_args`` run another script.
    """
    run_id = run_id if run_id is not None else (next(_RUN_IDS) * 7919 + _salt()) % 2**31
    args = script_args if script_args is not None else [str(run_id), str(duplicates)]
    argv = [
        require_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        "--",
        *args,
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    text = out.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-2000:]} {err.decode()[-2000:]}")
    doc = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(
        doc[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkResult(
        requests=doc["requests"],
        seconds=doc["duration_us"] / 1e6,
        errors=errors,
        p50_ms=doc["p50_us"] / 1000,
        p90_ms=doc["p90_us"] / 1000,
        p99_ms=doc["p99_us"] / 1000,
        max_ms=doc["max_us"] / 1000,
    )


def _salt() -> int:
    import os

    return int.from_bytes(os.urandom(3), "big")
