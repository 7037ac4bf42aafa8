"""The receiver end to end: real HTTPS in, real broker and PostgreSQL behind."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from smsrx.cli.dev.broker import Broker
from smsrx.codec import decode_delivery_receipt, decode_inbound
from smsrx.statuses import Status
from tests.helpers import orange_receipt, read_topic
from tests.receiver_harness import client, running_receiver, url_for

SAMPLES = Path(__file__).parent / "samples"
ORANGE = "/callbacks/orange/dr"
VAVASMS = "/callbacks/vavasms/inbound"
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ALLOWED = "127.0.0.2"
REFUSED = "127.0.0.3"
PROXY = "127.0.0.4"


def nets(*items: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(i) for i in items)


@pytest.fixture
def receiver_settings(settings_factory):
    """Allow 127.0.0.2 and ::1 for both providers; trust 127.0.0.4 as a proxy."""
    return settings_factory(
        allow_orange=nets("127.0.0.2/32", "::1/128"),
        allow_vavasms=nets("127.0.0.2/32", "::1/128"),
        trusted_proxies=nets("127.0.0.4/32"),
    )


@pytest.fixture
async def receiver(receiver_settings, tls_files):
    """The real receiver over HTTPS on a dual-stack socket."""
    async with running_receiver(receiver_settings, tls_files) as running:
        yield running


async def post(receiver, tls_files, path, body, headers=JSON, source=ALLOWED, extra=None):
    async with client(tls_files, source) as session:
        async with session.post(
            url_for(receiver, path, source), data=body, headers={**headers, **(extra or {})}
        ) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers


async def receipts(settings):
    return [
        decode_delivery_receipt(r.value)
        for r in await read_topic(
            settings.kafka_bootstrap, settings.topics.delivery_receipts, idle=1.0
        )
    ]


async def inbound(settings):
    return [
        decode_inbound(r.value)
        for r in await read_topic(settings.kafka_bootstrap, settings.topics.inbound, idle=1.0)
    ]


@pytest.mark.parametrize(
    ("orange_status", "canonical"),
    [
        ("MessageWaiting", Status.QUEUED),
        ("DeliveredToNetwork", Status.SENT),
        ("DeliveryUncertain", Status.UNKNOWN),
        ("DeliveredToTerminal", Status.DELIVERED),
        ("DeliveryImpossible", Status.FAILED),
        ("BrandNewStatus", Status.UNKNOWN),
    ],
)
async def test_orange_receipt_published_once_keyed_by_message(
    receiver, tls_files, orange_status, canonical
):
    """Each Orange status gets 200 and exactly one canonical record, keyed by callbackData."""
    status, body, _ = await post(
        receiver, tls_files, ORANGE, orange_receipt("msg-42", status=orange_status)
    )
    assert status == 200 and body["status"] == "accepted"
    records = await read_topic(
        receiver.settings.kafka_bootstrap, receiver.settings.topics.delivery_receipts, idle=1.0
    )
    assert len(records) == 1
    event = decode_delivery_receipt(records[0].value)
    assert records[0].key == b"msg-42"
    assert (event.status, event.provider_status, event.recipient) == (
        canonical,
        orange_status,
        "+2250700000000",
    )


async def test_vavasms_form_and_json(receiver, tls_files):
    """VavaSMS inbound SMS are accepted as form (doc spelling 'form') and as JSON ('from')."""
    form = (SAMPLES / "vavasms_inbound.form").read_bytes()
    json_body = (SAMPLES / "vavasms_inbound.json").read_bytes()
    assert (await post(receiver, tls_files, VAVASMS, form, FORM))[0] == 200
    assert (await post(receiver, tls_files, VAVASMS, json_body, JSON))[0] == 200
    events = sorted(await inbound(receiver.settings), key=lambda e: e.message_id)
    assert [(e.message_id, e.sender) for e in events] == [
        ("SM-20190623-1217879", "+2250709000001"),
        ("SM-20190623-1217880", "+2250709000002"),
    ]


async def test_repeated_receipt_published_once(receiver, tls_files):
    """The same receipt sent three times gets 200 each time and one record."""
    answers = [await post(receiver, tls_files, ORANGE, orange_receipt()) for _ in range(3)]
    assert [(s, b["status"]) for s, b, _ in answers] == [
        (200, "accepted"),
        (200, "duplicate"),
        (200, "duplicate"),
    ]
    assert len(await receipts(receiver.settings)) == 1


async def test_concurrent_copies_published_once(receiver, tls_files):
    """Ten concurrent copies of one receipt all get 200 and only one is published."""
    answers = await asyncio.gather(
        *(post(receiver, tls_files, ORANGE, orange_receipt("msg-c")) for _ in range(10))
    )
    assert all(status == 200 for status, _, _ in answers)
    assert sum(body["published"] for _, body, _ in answers) == 1
    assert len(await receipts(receiver.settings)) == 1


async def test_inbound_repeat_published_once(receiver, tls_files):
    """An inbound SMS notified twice with the same message_id is published once."""
    form = (SAMPLES / "vavasms_inbound.form").read_bytes()
    assert (await post(receiver, tls_files, VAVASMS, form, FORM))[1]["status"] == "accepted"
    assert (await post(receiver, tls_files, VAVASMS, form, FORM))[1]["status"] == "duplicate"
    assert len(await inbound(receiver.settings)) == 1


async def test_dedup_shared_through_postgres(receiver_settings, tls_files):
    """A fresh receiver process (empty cache) still recognises a receipt another one published."""
    async with running_receiver(receiver_settings, tls_files) as first:
        assert (await post(first, tls_files, ORANGE, orange_receipt("msg-shared")))[1][
            "status"
        ] == "accepted"
    async with running_receiver(receiver_settings, tls_files) as second:
        before = (
            REGISTRY.get_sample_value(
                "smsrx_receiver_dedup_hits_total", {"provider": "orange", "source": "database"}
            )
            or 0
        )
        assert (await post(second, tls_files, ORANGE, orange_receipt("msg-shared")))[1][
            "status"
        ] == "duplicate"
        after = REGISTRY.get_sample_value(
            "smsrx_receiver_dedup_hits_total", {"provider": "orange", "source": "database"}
        )
    assert after == before + 1
    assert len(await receipts(receiver_settings)) == 1


async def test_dedup_store_down_still_accepts(settings_factory, tls_files):
    """With PostgreSQL unreachable the receiver still accepts and publishes."""
    settings = settings_factory(
        database_url="postgresql://postgres@127.0.0.1:1/none", allow_orange=nets("127.0.0.2/32")
    )
    async with running_receiver(settings, tls_files) as running:
        assert (await post(running, tls_files, ORANGE, orange_receipt("msg-nodb")))[0] == 200
        assert (await post(running, tls_files, ORANGE, orange_receipt("msg-nodb")))[1][
            "status"
        ] == "duplicate"
    assert len(await receipts(settings)) == 1


@pytest.mark.parametrize(
    ("source", "forwarded", "expected"),
    [
        (ALLOWED, None, 200),  # allowed IPv4 peer (seen IPv4-mapped on the dual-stack socket)
        (REFUSED, None, 403),  # refused IPv4 peer
        ("::1", None, 200),  # allowed IPv6 peer
        (REFUSED, ALLOWED, 403),  # X-Forwarded-For from an untrusted peer is ignored
        (PROXY, ALLOWED, 200),  # trusted proxy forwarding an allowed client
        (PROXY, f"{REFUSED}, {PROXY}", 403),  # right-most non-proxy hop is the client
        (PROXY, f"{ALLOWED}, {REFUSED}", 403),  # a forged left-most entry changes nothing
        (PROXY, f"::ffff:{ALLOWED}", 200),  # mapped IPv6 in the header is matched as IPv4
        (PROXY, "not-an-ip", 403),  # malformed header from a proxy is refused
        (PROXY, None, 403),  # the proxy itself is not an allowed carrier
    ],
)
async def test_allowlist(receiver, tls_files, source, forwarded, expected):
    """The allowlist judges the real source address, honouring X-Forwarded-For only from trusted proxies."""
    extra = {"X-Forwarded-For": forwarded} if forwarded else None
    status, body, _ = await post(
        receiver, tls_files, ORANGE, orange_receipt("msg-ip"), source=source, extra=extra
    )
    assert status == expected, body
    assert len(await receipts(receiver.settings)) == (1 if expected == 200 else 0)


async def test_refusals_counted_by_reason(receiver, tls_files):
    """A refused request is counted with its reason."""
    labels = {"provider": "orange", "outcome": "refused_ip"}
    before = REGISTRY.get_sample_value("smsrx_receiver_requests_total", labels) or 0
    assert (await post(receiver, tls_files, ORANGE, orange_receipt(), source=REFUSED))[0] == 403
    assert REGISTRY.get_sample_value("smsrx_receiver_requests_total", labels) == before + 1


async def test_vavasms_allowlist_is_separate(settings_factory, tls_files):
    """An address allowed for Orange is refused for VavaSMS when VavaSMS does not list it."""
    settings = settings_factory(
        allow_orange=nets("127.0.0.2/32"), allow_vavasms=nets("127.0.0.5/32")
    )
    async with running_receiver(settings, tls_files) as running:
        form = (SAMPLES / "vavasms_inbound.form").read_bytes()
        assert (await post(running, tls_files, VAVASMS, form, FORM))[0] == 403
        assert (await post(running, tls_files, VAVASMS, form, FORM, source="127.0.0.5"))[0] == 200


async def test_wrong_method_and_unknown_path(receiver, tls_files):
    """GET on a callback is 405 and an unknown path is 404, both as JSON."""
    async with client(tls_files, ALLOWED) as session:
        async with session.get(url_for(receiver, ORANGE, ALLOWED)) as resp:
            assert resp.status == 405
            assert (await resp.json())["error"] == "method_not_allowed"
        async with session.post(url_for(receiver, "/callbacks/nope", ALLOWED), data=b"{}") as resp:
            assert resp.status == 404


async def test_health_and_readiness(receiver, tls_files):
    """/healthz answers while alive and /readyz while the producer is connected."""
    async with client(tls_files, ALLOWED) as session:
        async with session.get(url_for(receiver, "/healthz", ALLOWED)) as resp:
            assert resp.status == 200
        async with session.get(url_for(receiver, "/readyz", ALLOWED)) as resp:
            assert resp.status == 200


async def test_broker_down_answers_503_within_timeout(settings_factory, tls_files):
    """Without a spool and with the broker stopped, a callback gets 503 with Retry-After within the timeout."""
    own = Broker()
    own.start()
    settings = settings_factory(
        kafka_bootstrap=own.bootstrap,
        kafka_send_timeout=2.0,
        allow_orange=nets("127.0.0.2/32"),
        spool_max_bytes=0,
    )
    try:
        async with running_receiver(settings, tls_files) as running:
            assert (await post(running, tls_files, ORANGE, orange_receipt("before")))[0] == 200
            own.kill()
            loop = asyncio.get_running_loop()
            started = loop.time()
            status, body, headers = await post(running, tls_files, ORANGE, orange_receipt("during"))
            elapsed = loop.time() - started
            assert status == 503 and body["error"] == "unavailable"
            assert headers["Retry-After"] == str(settings.retry_after)
            assert (
                elapsed < settings.kafka_send_timeout + 2
            )  # bounded by the send timeout, not forever
            await asyncio.sleep(1.5)  # one readiness probe interval
            async with client(tls_files, ALLOWED) as session:
                async with session.get(url_for(running, "/readyz", ALLOWED)) as resp:
                    assert resp.status == 503
            # The failed publish must not count as published: once the broker is back, a retry goes through.
            own = Broker(port=own.port)
            own.start()
            for _ in range(20):
                status, body, _ = await post(running, tls_files, ORANGE, orange_receipt("during"))
                if status == 200:
                    break
                await asyncio.sleep(0.5)
            assert (status, body["published"]) == (200, 1)
    finally:
        own.stop()
