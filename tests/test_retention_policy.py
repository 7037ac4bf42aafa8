"""Retention: the policy and its settings, every table accounted for, and a retention
shorter than the topics' refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from smsrx.retention import NEVER_PRUNED, policy
from smsrx.settings import ConfigError, Settings
from tests.helpers import process_env
from tests.retention_harness import DAY, DEFAULTS


async def test_every_table_has_a_retention_or_a_reason_to_keep_it(db) -> None:
    """Every table of the schema is pruned by a rule or listed, with its reason, as never pruned."""
    tables = {
        row[0]
        for row in await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    pruned = {rule.table for rule in policy(DEFAULTS)}
    assert pruned.isdisjoint(NEVER_PRUNED)
    assert tables == pruned | set(NEVER_PRUNED)
    assert {"suppressions", "optout_events"} <= set(NEVER_PRUNED)


def test_retain_processed_shorter_than_the_topics_retention_is_refused() -> None:
    """SMSRX_RETAIN_PROCESSED (or _HISTORY) shorter than SMSRX_TOPIC_RETENTION is a ConfigError naming both."""
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"SMSRX_RETAIN_PROCESSED": "3d"})
    assert str(error.value) == (
        "SMSRX_RETAIN_PROCESSED=3d is shorter than SMSRX_TOPIC_RETENTION=7d: an event replayed "
        "from a topic would no longer be known as a duplicate; keep SMSRX_RETAIN_PROCESSED at "
        "least as long as SMSRX_TOPIC_RETENTION"
    )
    with pytest.raises(
        ConfigError, match="^SMSRX_RETAIN_HISTORY=20d is shorter than SMSRX_TOPIC_RETENTION=30d"
    ):
        Settings.from_env(
            {
                "SMSRX_TOPIC_RETENTION": "30d",
                "SMSRX_RETAIN_HISTORY": "20d",
                "SMSRX_RETAIN_PROCESSED": "30d",
            }
        )
    assert Settings.from_env({"SMSRX_RETAIN_PROCESSED": "7d"}).retain_processed == 7 * 86400.0
    done = subprocess.run(
        [sys.executable, "-m", "smsrx.cli", "db", "prune", "--dry-run"],
        env=process_env(RETAIN_PROCESSED="3d", DATABASE_URL="postgresql://nobody@127.0.0.1:1/x"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(
        "smsrx: configuration error: SMSRX_RETAIN_PROCESSED=3d is shorter"
    )
    assert "Traceback" not in done.stderr


def test_the_policy_counts_from_the_settings() -> None:
    """Each rule's keep comes from its setting; unfinished recipients and submissions add the horizon."""
    settings = DEFAULTS.with_(retain_history=100 * 86400.0, expiry_horizon=86400.0)
    keeps = {(rule.label, rule.column): rule.keep for rule in policy(settings)}
    assert keeps[("status_events", "recorded_at")] == 100 * DAY
    assert keeps[("recipient_status", "final_at")] == 100 * DAY
    assert keeps[("recipient_status", "coalesce(submitted_at, first_event_at)")] == 101 * DAY
    assert keeps[("submissions", "submitted_at")] == 101 * DAY
    assert keeps[("inbound_messages.text", "recorded_at")] == 30 * DAY
    assert {rule.setting for rule in policy(settings)} == {
        "SMSRX_RETAIN_DEDUP",
        "SMSRX_RETAIN_PROCESSED",
        "SMSRX_RETAIN_HISTORY",
        "SMSRX_RETAIN_INBOUND_TEXT",
        "SMSRX_RETAIN_ROLLUPS",
    }
