"""The receiver's Prometheus metrics (served on its own plain-HTTP port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "DEDUP_ERRORS",
    "DEDUP_HITS",
    "EVENTS_PUBLISHED",
    "IN_FLIGHT",
    "PRODUCER_ERRORS",
    "PRODUCER_READY",
    "PUBLISH_SECONDS",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SPOOLED",
    "SPOOL_BYTES",
    "SPOOL_EVENTS",
    "SPOOL_FULL",
    "SPOOL_OLDEST",
    "SPOOL_REPLAYED",
]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "smsrx_receiver_requests",
    "Callback requests by provider and outcome (accepted, duplicate, refused_ip, bad_request, ...)",
    ["provider", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "smsrx_receiver_request_duration_seconds",
    "Time from request start to response, by provider",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
)
PUBLISH_SECONDS = Histogram(
    "smsrx_receiver_publish_duration_seconds",
    "Time for the broker to acknowledge one event (acks=all), by topic",
    ["topic"],
    buckets=_LATENCY_BUCKETS,
)
EVENTS_PUBLISHED = Counter(
    "smsrx_receiver_events_published", "Events acknowledged by the broker, by topic", ["topic"]
)
DEDUP_HITS = Counter(
    "smsrx_receiver_dedup_hits",
    "Repeated callbacks answered 200 without publishing, by provider and where the repeat was found",
    ["provider", "source"],
)
DEDUP_ERRORS = Counter(
    "smsrx_receiver_dedup_errors",
    "Dedup store operations that failed (the receiver then relies on consumer-side dedup)",
    ["operation"],
)
IN_FLIGHT = Gauge("smsrx_receiver_requests_in_flight", "Callback requests being handled now")
PRODUCER_ERRORS = Counter(
    "smsrx_receiver_producer_errors",
    "Publishes that failed, by reason (timeout, error, not_ready)",
    ["reason"],
)
PRODUCER_READY = Gauge(
    "smsrx_receiver_producer_ready", "1 while the Kafka producer is connected, else 0"
)

SPOOL_EVENTS = Gauge("smsrx_receiver_spool_events", "Events in the local spool, not yet published")
SPOOL_BYTES = Gauge(
    "smsrx_receiver_spool_bytes", "Bytes of events in the local spool, not yet published"
)
SPOOL_OLDEST = Gauge(
    "smsrx_receiver_spool_oldest_timestamp_seconds",
    "Unix time the oldest unpublished spool entry was written; 0 when the spool is empty",
)
SPOOL_FULL = Counter(
    "smsrx_receiver_spool_full", "Callbacks answered 503 because the spool was full"
)
SPOOLED = Counter(
    "smsrx_receiver_spooled_events",
    "Events written to the spool instead of the broker, by topic",
    ["topic"],
)
SPOOL_REPLAYED = Counter(
    "smsrx_receiver_spool_replayed_events", "Spooled events published to the broker"
)
