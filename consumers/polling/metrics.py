"""The poller's Prometheus metrics (names are the public contract of the dashboards)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CREDENTIALS_OK",
    "POLLS",
    "POLLS_DUE",
    "POLLS_OVERDUE_SECONDS",
    "POLLS_PENDING",
    "POLL_LATENCY",
    "POLL_RECEIPTS",
    "RATE_LIMIT_WAITS",
    "RATE_LIMIT_WAIT_SECONDS",
]

POLLS = Counter(
    "smsrx_polls_total",
    "Status requests to carriers' status APIs, by provider and outcome "
    "(ok, not_found, auth_failed, retry)",
    ["provider", "outcome"],
)
POLL_LATENCY = Histogram(
    "smsrx_poll_latency_seconds",
    "Duration of one status request, by provider",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
POLL_RECEIPTS = Counter(
    "smsrx_poll_receipts_total",
    "Receipts the poller published (a recipient's status changed), by provider and status",
    ["provider", "status"],
)
POLLS_PENDING = Gauge(
    "smsrx_polls_pending",
    "Recipients whose status the poller still polls, by provider",
    ["provider"],
)
POLLS_DUE = Gauge(
    "smsrx_polls_due",
    "Recipients whose next poll is due now or past, by provider",
    ["provider"],
)
POLLS_OVERDUE_SECONDS = Gauge(
    "smsrx_polls_overdue_seconds",
    "How late the most overdue poll is, by provider (0 when none is due)",
    ["provider"],
)
RATE_LIMIT_WAITS = Counter(
    "smsrx_poll_rate_limit_waits_total",
    "Status requests that waited for the provider's rate limit, by provider",
    ["provider"],
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "smsrx_poll_rate_limit_wait_seconds_total",
    "Time status requests spent waiting for the provider's rate limit, by provider",
    ["provider"],
)
CREDENTIALS_OK = Gauge(
    "smsrx_poll_credentials_ok",
    "1 while the provider accepts the poller's credentials, 0 once it refused them",
    ["provider"],
)
