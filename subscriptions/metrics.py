"""Metrics of the subscription manager, served on ``SMSRX_SUBSCRIPTIONS_METRICS_PORT``.

Alert on ``smsrx_orange_subscription_in_place == 0`` (receipts are not coming to us)
and on ``time() - smsrx_orange_subscription_last_check_timestamp_seconds`` growing
well past the reconcile interval (we no longer know).
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge

__all__ = [
    "API_REQUESTS",
    "LAST_CHECK",
    "RECONCILIATIONS",
    "SUBSCRIPTION_IN_PLACE",
    "observe_api",
    "observe_check",
    "set_in_place",
]

SUBSCRIPTION_IN_PLACE = Gauge(
    "smsrx_orange_subscription_in_place",
    "1 when Orange's delivery-receipt callback is registered to the desired URL, else 0",
)
LAST_CHECK = Gauge(
    "smsrx_orange_subscription_last_check_timestamp_seconds",
    "Unix time Orange last told us what is registered: a check (found or not) or a subscribe",
)
API_REQUESTS = Counter(
    "smsrx_orange_api_requests",
    "HTTP requests to Orange's API, each retry counted, by endpoint and outcome",
    ["endpoint", "outcome"],
)
RECONCILIATIONS = Counter(
    "smsrx_orange_reconciliations",
    "Reconcile runs by result: in_place, subscribed, repaired, recovered or failed",
    ["result"],
)


def observe_api(endpoint: str, outcome: str) -> None:
    """Count one request to ``endpoint`` (token, subscribe, check, unsubscribe)."""
    API_REQUESTS.labels(endpoint=endpoint, outcome=outcome).inc()


def observe_check() -> None:
    """Orange has just told us the state of the subscription."""
    LAST_CHECK.set(time.time())


def set_in_place(in_place: bool) -> None:
    """Record whether the desired callback is registered."""
    SUBSCRIPTION_IN_PLACE.set(1 if in_place else 0)
