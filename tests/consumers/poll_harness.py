"""What the poller tests share: the fake carrier APIs, settings pointing at them, a
running poller and status-projection, and readers of the schedule and the receipts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from consumers.poller import Poller
from smsrx.clock import utcnow
from smsrx.codec import decode_delivery_receipt
from smsrx.events import DeliveryReceipt
from smsrx.settings import Settings
from tests.consumers.conftest import FAST_GROUP, Runner, wait_for
from tests.fakes.gatewaysms import FakeGatewaySms
from tests.fakes.vavasms import FakeVavaSms
from tests.helpers import read_topic

FAST_SCHEDULE = (0.3, 0.3, 0.3, 0.5)


@dataclass
class Carriers:
    """Both fake status APIs, started."""

    gateway: FakeGatewaySms
    vava: FakeVavaSms

    def settings(self, factory: Callable[..., Settings], **changes: Any) -> Settings:
        """Test settings polling both fakes on a fast schedule."""
        values: dict[str, Any] = {
            "insecure_provider_urls": True,
            "gatewaysms_api_url": self.gateway.url,
            "gatewaysms_token": self.gateway.token,
            "vavasms_status_url": self.vava.url,
            "vavasms_username": self.vava.username,
            "vavasms_password": self.vava.password,
            "poll_schedule": FAST_SCHEDULE,
            "gatewaysms_poll_rate": 200.0,
            "vavasms_poll_rate": 200.0,
            "poll_timeout": 2.0,
        }
        values.update(changes)
        return factory(**values)


@pytest.fixture
async def carriers() -> AsyncIterator[Carriers]:
    """The fake Gateway SMS and VavaSMS APIs on loopback ports."""
    gateway, vava = FakeGatewaySms(), FakeVavaSms()
    await gateway.start()
    await vava.start()
    yield Carriers(gateway, vava)
    await gateway.stop()
    await vava.stop()


def now() -> datetime:
    """The current time, UTC: submissions are dated now, so the horizon is ahead."""
    return utcnow()


def poller(run: Runner, settings: Settings, **options: Any) -> Poller:
    """A poller with short leases and retries, started."""
    options.setdefault("consumer_options", FAST_GROUP)
    options.setdefault("min_lease", 2.0)
    options.setdefault("retry_first", 0.2)
    options.setdefault("auth_pause", 1.0)
    worker = Poller(settings, handle_signals=False, **options)
    run.start(worker)
    return worker


async def schedule(db: asyncpg.Connection) -> dict[tuple[str, str, str], asyncpg.Record]:
    """Every row of ``poll_schedule`` by (provider, message_id, recipient)."""
    rows = await db.fetch("SELECT * FROM poll_schedule")
    return {(r["provider"], r["message_id"], r["recipient"]): r for r in rows}


async def statuses(db: asyncpg.Connection, provider: str) -> dict[tuple[str, str], str | None]:
    """``recipient_status.status`` of one provider by (message_id, recipient)."""
    rows = await db.fetch(
        "SELECT message_id, recipient, status FROM recipient_status WHERE provider = $1",
        provider,
    )
    return {(r["message_id"], r["recipient"]): r["status"] for r in rows}


async def until_final(
    db: asyncpg.Connection, provider: str, count: int, timeout: float = 60
) -> None:
    """Wait until ``count`` recipients of ``provider`` have a final status."""

    async def done() -> bool:
        n = await db.fetchval(
            "SELECT count(*) FROM recipient_status WHERE provider = $1 AND is_final", provider
        )
        return bool(n >= count)

    await wait_for(done, f"{count} final {provider} recipients", timeout)


async def receipts(settings: Settings, idle: float = 0.5) -> list[DeliveryReceipt]:
    """Every record of the delivery-receipts topic, decoded."""
    records = await read_topic(
        settings.kafka_bootstrap, settings.topics.delivery_receipts, idle=idle
    )
    return [decode_delivery_receipt(r.value) for r in records]
