"""CPU time and memory of processes, read from /proc (Linux), with no dependency."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "MemoryWatch",
    "children",
    "cpu_seconds",
    "machine_busy_seconds",
    "own_cpu_seconds",
    "pss_bytes",
    "rss_bytes",
    "tree",
]

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User plus system CPU seconds ``pid`` has used so far (0 once it is gone); with
    ``reaped``, plus that of the children it has waited for."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime, stime, then cutime, cstime
    return sum(int(f) for f in fields[11 : 15 if reaped else 13]) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    pids = [pid]
    for child in children(pid):
        pids += tree(child)
    return pids


def pss_bytes(pid: int) -> int:
    """Proportional set size of ``pid`` (shared pages divided among their users), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class MemoryWatch:
    """Idle and peak resident memory of named processes.

    ``rss`` is per process: the largest of the group's processes (a receiver started
    with ``--workers 2`` is two processes of about the same size). PostgreSQL is many
    processes sharing memory, so its figure is the sum of their proportional sizes.
    """

    def __init__(self) -> None:
        self.idle: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    @staticmethod
    def measure(pids: list[int], *, summed: bool = False) -> int:
        """The figure of a group: its largest RSS, or the sum of PSS when ``summed``."""
        if summed:
            return sum(pss_bytes(pid) for pid in pids)
        return max((rss_bytes(pid) for pid in pids), default=0)

    def record_idle(self, name: str, pids: list[int], *, summed: bool = False) -> None:
        """Note the idle figure of a group now."""
        self.idle[name] = self.measure(pids, summed=summed)

    def sample(self, name: str, pids: list[int], *, summed: bool = False) -> None:
        """Update the peak figure of a group."""
        self.peak[name] = max(self.peak.get(name, 0), self.measure(pids, summed=summed))


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def own_cpu_seconds() -> float:
    """CPU seconds of this process, its reaped children and its living descendants."""
    return sum(cpu_seconds(pid, reaped=True) for pid in tree(os.getpid()))
