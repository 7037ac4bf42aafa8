"""receiver.logthrottle: one line per source and interval, a summary with the count, bounded memory."""

from __future__ import annotations

import asyncio
import logging

import pytest

from receiver.logthrottle import OTHER_SOURCES, LogThrottle

SUMMARY = "refused %(count)d more requests from %(source)s in the last %(seconds).0f s: %(reasons)s"


class Lines:
    """The messages logged so far by the throttle under test."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    def __call__(self) -> list[str]:
        return self.caplog.messages


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Lines:
    """Read the throttle's log lines (logger ``test.throttle``)."""
    caplog.set_level(logging.WARNING, logger="test.throttle")
    return Lines(caplog)


async def test_first_event_logged_then_summary_with_count(lines: Lines) -> None:
    """A burst gives one line at once and one summary with the count when the interval ends."""
    throttle = LogThrottle(logging.getLogger("test.throttle"), SUMMARY, interval=0.3)
    for i in range(1234):
        throttle.event("203.0.113.9", "refused_ip" if i % 2 else "bad_request", "first %d", i)
    assert lines() == ["first 0"]
    await asyncio.sleep(0.45)
    assert lines()[1].startswith("refused 1233 more requests from 203.0.113.9 in the last 0 s: ")
    assert "refused_ip=617" in lines()[1] and "bad_request=616" in lines()[1]
    # Still counted within the next interval (the source was active), then forgotten.
    throttle.event("203.0.113.9", "refused_ip", "again")
    await asyncio.sleep(0.7)
    assert len(lines()) == 3 and "refused 1 more requests" in lines()[2]
    assert len(throttle) == 0
    throttle.event("203.0.113.9", "refused_ip", "after a quiet interval")
    assert lines()[-1] == "after a quiet interval"
    throttle.close()


async def test_sources_beyond_the_cap_share_one_entry(lines: Lines) -> None:
    """Memory is bounded: past max_sources, new sources are counted together."""
    throttle = LogThrottle(logging.getLogger("test.throttle"), SUMMARY, max_sources=10)
    for i in range(5000):
        throttle.event(f"2001:db8::{i:x}", "refused_ip", "refused %s", i)
    assert len(throttle) == 11  # 10 sources and OTHER_SOURCES
    assert len(lines()) == 11  # the first of each, and the first beyond the cap
    throttle.close()
    assert lines()[-1].startswith(f"refused 4989 more requests from {OTHER_SOURCES} ")
    assert len(throttle) == 0
