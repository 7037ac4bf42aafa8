"""Fixtures: the fake Orange API, settings pointing at it, a client and a store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import REGISTRY

from smsrx.settings import Settings
from subscriptions.client import OrangeClient, RetryPolicy, open_client
from subscriptions.store import SubscriptionStore, open_store
from tests.subscriptions.fake_orange import FakeOrange

AUTH_HEADER = "Basic c21zcng6dG9wLXNlY3JldC1jbGllbnQ="
SENDER = "2250000"
NOTIFY_URL = "https://example.com/callbacks/orange/dr"
OTHER_URL = "https://elsewhere.example.net/dr"
FAST = RetryPolicy(attempts=3, first_delay=0.01, max_delay=0.02)
TIMEOUT = 0.3


def sample(name: str, **labels: str) -> float:
    """A metric's current value in the default registry, 0 if never set."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def api_calls(endpoint: str, outcome: str) -> float:
    """``smsrx_orange_api_requests_total`` for one endpoint and outcome."""
    return sample("smsrx_orange_api_requests_total", endpoint=endpoint, outcome=outcome)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOrange]:
    """The fake Orange API on a loopback port, with one app and one sender."""
    server = FakeOrange(auth_header=AUTH_HEADER, sender=SENDER)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def api_settings(fake: FakeOrange) -> Settings:
    """Settings pointing at the fake Orange API (and at no database)."""
    return Settings(
        metrics_host="127.0.0.1",
        orange_api_url=fake.url,
        insecure_provider_urls=True,  # the fake serves plain HTTP
        orange_auth_header=AUTH_HEADER,
        orange_sender=SENDER,
        orange_notify_url=NOTIFY_URL,
        orange_timeout=TIMEOUT,
        shutdown_timeout=1.0,
    )


@pytest.fixture
def orange_settings(api_settings: Settings, database_url: str) -> Settings:
    """Settings pointing at the fake Orange API and the emptied test database."""
    return api_settings.with_(database_url=database_url)


@pytest.fixture
async def client(api_settings: Settings) -> AsyncIterator[OrangeClient]:
    """A client of the fake with quick retries."""
    async with open_client(api_settings, retry=FAST) as orange:
        yield orange


@pytest.fixture
async def store(orange_settings: Settings) -> AsyncIterator[SubscriptionStore]:
    """The subscription store on the test database."""
    async with open_store(orange_settings.database_url) as opened:
        yield opened


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """Undo ``smsrx.cli.main``'s logging setup after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
