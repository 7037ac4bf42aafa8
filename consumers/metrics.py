"""Prometheus metrics of the workers (status-projection and analytics).

Every series carries a ``worker`` label, so both workers can share one process
(``smsrx dev``, the tests) and still be told apart.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ANALYTICS_INBOUND",
    "ANALYTICS_LATENCY",
    "ANALYTICS_OUTCOMES",
    "ANALYTICS_RECEIPTS",
    "BATCH_DURATION",
    "BATCH_RECORDS",
    "COMMIT_FAILURES",
    "DATABASE_ERRORS",
    "DEAD_LETTERS",
    "EVENTS",
    "EXPIRED",
    "EXPIRY_SWEEPS",
    "EXPIRY_SWEEP_DURATION",
    "INBOUND_ROUTED",
    "LAG",
    "LATENCY_BUCKETS",
    "OPTOUTS",
    "OPTOUT_CHECKS",
    "OUTBOX_PENDING",
    "REBALANCES",
    "REGRESSIONS",
    "STATUS_CHANGES",
    "STATUS_CHANGES_PUBLISHED",
    "SUPPRESSED",
]

LATENCY_BUCKETS: tuple[float, ...] = (
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    43200.0,
    86400.0,
    172800.0,
    259200.0,
    float("inf"),
)
"""Upper bounds (seconds) of the time-to-final buckets, in PostgreSQL and in Prometheus."""

# --- every worker ---------------------------------------------------------------

EVENTS = Counter(
    "smsrx_consumer_events_total",
    "Records consumed, by topic and outcome (applied, duplicate, invalid)",
    ["worker", "topic", "outcome"],
)
BATCH_RECORDS = Histogram(
    "smsrx_consumer_batch_records",
    "Records in each batch applied in one database transaction",
    ["worker"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
BATCH_DURATION = Histogram(
    "smsrx_consumer_batch_duration_seconds",
    "Time to decode, apply and commit one batch",
    ["worker"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
LAG = Gauge(
    "smsrx_consumer_lag_records",
    "Records not yet processed: the partition's high watermark minus the consumer position",
    ["worker", "topic", "partition"],
)
REBALANCES = Counter(
    "smsrx_consumer_rebalances_total",
    "Partition assignment changes, by change (assigned, revoked)",
    ["worker", "change"],
)
DATABASE_ERRORS = Counter(
    "smsrx_consumer_database_errors_total",
    "Failed batch transactions, by kind (transient: retried; data: record isolated)",
    ["worker", "kind"],
)
DEAD_LETTERS = Counter(
    "smsrx_consumer_dead_letters_total",
    "Records published to sms.dead-letter.v1 (did not decode, or refused by the database), "
    "by the topic they were read from",
    ["worker", "topic"],
)
COMMIT_FAILURES = Counter(
    "smsrx_consumer_commit_failures_total",
    "Kafka offset commits that failed (the events are deduplicated when redelivered)",
    ["worker"],
)

# --- status-projection -------------------------------------------------------------

REGRESSIONS = Counter(
    "smsrx_status_regressions_prevented_total",
    "Late receipts ranked below the current status, kept in history without changing it",
    ["provider"],
)
STATUS_CHANGES = Counter(
    "smsrx_status_changes_total",
    "Changes of a recipient's current status, by new status",
    ["provider", "status"],
)
STATUS_CHANGES_PUBLISHED = Counter(
    "smsrx_status_changes_published_total",
    "Status changes published to sms.message-status.v1 from the outbox",
)
OUTBOX_PENDING = Gauge(
    "smsrx_status_outbox_pending_records",
    "Status changes committed to the database and not yet acknowledged by the broker",
)
EXPIRY_SWEEPS = Counter(
    "smsrx_expiry_sweeps_total",
    "Expiry sweeps, by outcome (done, locked: another worker was sweeping, failed)",
    ["outcome"],
)
EXPIRED = Counter(
    "smsrx_expiry_receipts_published_total",
    "Synthetic 'expired' receipts published for recipients without a final status",
)
EXPIRY_SWEEP_DURATION = Histogram(
    "smsrx_expiry_sweep_duration_seconds",
    "Time of one expiry sweep",
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0),
)

# --- analytics ------------------------------------------------------------------

ANALYTICS_RECEIPTS = Counter(
    "smsrx_analytics_receipts_total",
    "Distinct delivery receipts counted into the rollups, by provider and status",
    ["provider", "status"],
)
ANALYTICS_INBOUND = Counter(
    "smsrx_analytics_inbound_total",
    "Distinct inbound SMS counted into the rollups, by provider",
    ["provider"],
)
ANALYTICS_OUTCOMES = Counter(
    "smsrx_analytics_final_outcomes_total",
    "Recipients reaching a final status, by provider and status (upgrades count again)",
    ["provider", "status"],
)
ANALYTICS_LATENCY = Histogram(
    "smsrx_analytics_time_to_final_seconds",
    "Time to a recipient's first final status, since submission or since the first receipt",
    ["provider", "since"],
    buckets=LATENCY_BUCKETS,
)

# --- inbound --------------------------------------------------------------------

OPTOUTS = Counter(
    "smsrx_optouts_total",
    "Opt-out and opt-in events applied to the suppression list for the first time, by "
    "action, source (keyword, api), provider, country (ISO alpha-3) and keyword",
    ["action", "source", "provider", "country", "keyword"],
)
SUPPRESSED = Gauge("smsrx_suppressed_numbers", "Phone numbers suppressed now (opted out)")
INBOUND_ROUTED = Counter(
    "smsrx_inbound_routed_total",
    "Inbound SMS routed for the first time, by route (opt-out, opt-in, default, or a rule)",
    ["route"],
)
OPTOUT_CHECKS = Counter(
    "smsrx_optout_checks_total",
    "Numbers checked through GET /v1/optouts/{e164}, by answer (suppressed, allowed, "
    "invalid, unavailable)",
    ["answer"],
)
