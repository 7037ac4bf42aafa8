"""The receiver's Prometheus metrics (served on its own plain-HTTP port).

What every request or event touches (requests, their duration, publishes, dedup hits) is
a :mod:`smsrx.fastmetrics` counter or histogram: plain numbers, exported when scraped.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from smsrx.fastmetrics import FastCounter, FastHistogram

__all__ = [
    "dedup_hit",
    "observe_publish",
    "observe_request",
    "DEDUP_ERRORS",
    "DEDUP_HITS",
    "EVENTS_PUBLISHED",
    "IN_FLIGHT",
    "IN_FLIGHT_NOW",
    "PRODUCER_ERRORS",
    "PRODUCER_READY",
    "PUBLISH_SECONDS",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SPOOLED",
    "SPOOL_BYTES",
    "SPOOL_DEAD_LETTERED",
    "SPOOL_EVENTS",
    "SPOOL_FULL",
    "SPOOL_OLDEST",
    "SPOOL_MAX_BYTES",
    "SPOOL_REPLAYED",
    "SPOOL_REPLAY_STALLED",
    "SPOOL_WRITE_FAILURES",
    "initialise",
]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = FastCounter(
    "smsrx_receiver_requests",
    "Callback requests by provider and outcome (accepted, duplicate, refused_ip, bad_request, ...)",
    ["provider", "outcome"],
)
REQUEST_SECONDS = FastHistogram(
    "smsrx_receiver_request_duration_seconds",
    "Time from request start to response, by provider",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
)
PUBLISH_SECONDS = FastHistogram(
    "smsrx_receiver_publish_duration_seconds",
    "Time for the broker to acknowledge one event (acks=all), by topic",
    ["topic"],
    buckets=_LATENCY_BUCKETS,
)
EVENTS_PUBLISHED = FastCounter(
    "smsrx_receiver_events_published", "Events acknowledged by the broker, by topic", ["topic"]
)
DEDUP_HITS = FastCounter(
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


class _InFlight:
    """The in-flight count as a plain integer, read by IN_FLIGHT when scraped (a
    Gauge's inc() and dec() each take a lock, twice per request)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def enter(self) -> None:
        """A request started."""
        self.count += 1

    def leave(self) -> None:
        """A request ended."""
        self.count -= 1


IN_FLIGHT_NOW = _InFlight()
IN_FLIGHT.set_function(lambda: IN_FLIGHT_NOW.count)
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
    "smsrx_receiver_spool_full",
    "Events answered 503 because the spool was full: its byte limit, or its filesystem's reserve",
)
SPOOL_WRITE_FAILURES = Counter(
    "smsrx_receiver_spool_write_failures",
    "Spool writes (one fsynced group of events) that failed; each event of the group got 503",
)
SPOOLED = Counter(
    "smsrx_receiver_spooled_events",
    "Events written to the spool instead of the broker, by topic",
    ["topic"],
)
SPOOL_REPLAYED = Counter(
    "smsrx_receiver_spool_replayed_events", "Spooled events published to the broker"
)
SPOOL_REPLAY_STALLED = Gauge(
    "smsrx_receiver_spool_replay_stalled",
    "Spool replayers stopped by an error other than the broker being away (0 or 1 per spool); "
    "/readyz and the log say why",
)
SPOOL_DEAD_LETTERED = Counter(
    "smsrx_receiver_spool_dead_lettered_events",
    "Spooled events the broker refused for good, by where they were put "
    "(dead_letter: the dead-letter topic; quarantine: a file in the spool directory)",
    ["destination"],
)
SPOOL_MAX_BYTES = Gauge(
    "smsrx_receiver_spool_max_bytes",
    "Configured spool size limit (SMSRX_SPOOL_MAX_BYTES); 0 when off",
)

OUTCOMES = (
    "accepted",
    "duplicate",
    "refused_ip",
    "bad_forwarded",
    "bad_request",
    "too_large",
    "unsupported_media_type",
    "timeout",
    "unavailable",
    "not_found",
    "method_not_allowed",
    "error",
)
"""Every ``outcome`` label of :data:`REQUESTS`."""


def initialise(providers: tuple[str, ...], topics: tuple[str, ...]) -> None:
    """Create every known label set at 0, so dashboards and alerts see 0 rather than no data."""
    for provider in (*providers, "none"):
        for outcome in OUTCOMES:
            REQUESTS.cell(provider, outcome)
    for provider in providers:
        REQUEST_SECONDS.cell(provider)
        for source in ("cache", "in_flight", "database"):
            DEDUP_HITS.cell(provider, source)
    for reason in ("timeout", "error", "not_ready"):
        PRODUCER_ERRORS.labels(reason)
    for operation in ("lookup", "write", "write_skipped"):
        DEDUP_ERRORS.labels(operation)
    for destination in ("dead_letter", "quarantine"):
        SPOOL_DEAD_LETTERED.labels(destination)
    for topic in topics:
        PUBLISH_SECONDS.cell(topic)
        EVENTS_PUBLISHED.cell(topic)
        SPOOLED.labels(topic)


def observe_request(provider: str, outcome: str, seconds: float) -> None:
    """Count one callback request and record its duration."""
    REQUESTS.cell(provider, outcome)[0] += 1
    REQUEST_SECONDS.observe(REQUEST_SECONDS.cell(provider), seconds)


def observe_publish(topic: str, seconds: float) -> None:
    """Count one event the broker acknowledged and record how long that took."""
    PUBLISH_SECONDS.observe(PUBLISH_SECONDS.cell(topic), seconds)
    EVENTS_PUBLISHED.cell(topic)[0] += 1


def dedup_hit(provider: str, source: str) -> None:
    """Count one repeated event answered without publishing (source: cache, in_flight, database)."""
    DEDUP_HITS.cell(provider, source)[0] += 1


# The carrier-facing port's connections (receiver/server.py).
__all__ += ["CONNECTIONS", "CONNECTIONS_REFUSED", "HANDSHAKE_FAILURES", "MAX_CONNECTIONS"]

CONNECTIONS = Gauge(
    "smsrx_receiver_connections",
    "Open connections to the carrier-facing port, in their TLS handshake or served",
)
MAX_CONNECTIONS = Gauge(
    "smsrx_receiver_max_connections",
    "Configured connection cap (SMSRX_MAX_CONNECTIONS, lowered to fit the open-file limit)",
)
CONNECTIONS_REFUSED = Counter(
    "smsrx_receiver_connections_refused",
    "Connections closed at once, before TLS, because the connection cap was reached",
)
HANDSHAKE_FAILURES = Counter(
    "smsrx_receiver_tls_handshake_failures",
    "TLS handshakes that failed, by reason (timeout: not done within SMSRX_CLIENT_TIMEOUT)",
    ["reason"],
)
for _reason in ("timeout", "error"):
    HANDSHAKE_FAILURES.labels(_reason)
