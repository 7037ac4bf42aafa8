"""Issue 3's acceptance run: 10,000 receipts for 2,000 messages through the running receiver,
statuses mixed, repeats, shuffled order, and both workers SIGKILLed and restarted mid-run."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import orjson
import pytest

from receiver.adapters import orange
from smsrx.clock import utcnow
from smsrx.statuses import Status
from tests.consumers.conftest import oracle

pytestmark = pytest.mark.timeout(600)

STATUSES = [
    "MessageWaiting",
    "DeliveredToNetwork",
    "DeliveryUncertain",
    "DeliveredToTerminal",
    "DeliveryImpossible",
]


def _story(rng: random.Random) -> list[bytes]:
    """2,000 messages x 2 recipients, each recipient 2-3 distinct carrier statuses: 10,000 receipts."""
    bodies = []
    for message in range(2000):
        for recipient in range(2):
            number = f"+22507{message:05d}{recipient:03d}"
            count = 3 if (message + recipient) % 2 else 2
            for status in rng.sample(STATUSES, count):
                info = {"address": f"tel:{number}", "deliveryStatus": status}
                note = {"callbackData": f"e2e-{message:05d}", "deliveryInfo": info}
                bodies.append(orjson.dumps({"deliveryInfoNotification": note}))
    return bodies


async def test_ten_thousand_receipts_survive_worker_kills(make_system) -> None:
    """The projection follows precedence for every message, each event once, rollups equal distinct events."""
    rng = random.Random(3)
    bodies = _story(rng)
    rng.shuffle(bodies)
    bodies += rng.sample(bodies, 500)  # repeats
    rng.shuffle(bodies)
    events = {e.event_id: e for b in bodies for e in orange.parse("application/json", b, utcnow())}

    system = await make_system(SMSRX_BATCH_MAX_RECORDS="400")
    # The harness's load() posts receipt_body(i); here the bodies are our own, so post them directly.
    first, second = bodies[:4000], bodies[4000:]
    statuses: dict[int, int] = {}
    async with system.session() as session:
        url = f"https://localhost:{system.port}/callbacks/orange/dr"

        async def post(chunk: list[bytes]) -> None:
            for body in chunk:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

        await asyncio.gather(*(post(first[i::16]) for i in range(16)))
        system.kill("status-projection")
        system.kill("analytics")
        sending = asyncio.gather(*(post(second[i::16]) for i in range(16)))
        await asyncio.sleep(1)
        system.start_process("status-projection")
        system.start_process("analytics")
        await sending
    assert statuses == {200: len(bodies)}
    await system.settle(set(events))

    # Statuses are distinct per recipient, so precedence alone decides (no tie-breaks on
    # the receiver's received_at, which these locally parsed events do not share).
    best = {key[1:]: Status(v["status"]) for key, v in oracle(list(events.values())).items()}
    conn = await asyncpg.connect(system.database_url)
    try:
        rows = await conn.fetch("SELECT message_id, recipient, status FROM recipient_status")
        history = await conn.fetchval("SELECT count(*) FROM status_events")  # event_id is its key
        rollup = await conn.fetchval("SELECT sum(events) FROM analytics_receipts_minute")
    finally:
        await conn.close()
    projected = {(r["message_id"], r["recipient"]): Status(r["status"]) for r in rows}
    assert len(projected) == 4000
    assert projected == best  # precedence, not arrival order, for every recipient of every message
    assert history == len(events) == 10000  # every distinct receipt once, and nothing else
    assert rollup == len(events)  # the rollups sum to the distinct events
