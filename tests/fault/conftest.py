"""The fault-injection suite (`pytest -m fault`): each case runs a whole system of real processes."""

from __future__ import annotations

import pytest

from tests.fault.harness import REPORTS, FaultStack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/fault/" in str(item.fspath):
            item.add_marker(pytest.mark.fault)


@pytest.fixture
async def make_system(tmp_path):
    """Start a fresh system (its own broker, PostgreSQL, receiver and workers) with extra SMSRX_* settings."""
    started: list[FaultStack] = []

    async def make(**env: str) -> FaultStack:
        running = FaultStack(tmp_path / f"system{len(started)}", **env)
        started.append(running)
        await running.start()
        return running

    yield make
    for running in started:
        running.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTS:
        return
    write = terminalreporter.write_line
    write("")
    write("fault-injection results (events)")
    write(
        f"{'case':<34} {'sent':>7} {'acked':>7} {'distinct':>8} {'published':>9} {'projected':>9} {'lost':>5} {'double':>6}"
    )
    for r in REPORTS:
        write(
            f"{r.case:<34} {r.sent:>7} {r.acknowledged:>7} {r.distinct_acknowledged:>8} {r.published:>9} "
            f"{r.projected:>9} {r.lost:>5} {r.double_counted:>6}"
        )
