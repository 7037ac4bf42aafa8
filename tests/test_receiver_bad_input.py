"""Malformed callbacks: each class gets a clear 4xx naming the problem, never a 5xx or a record."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from receiver.app import create_app
from smsrx.cli.dev.process import free_port
from tests.helpers import read_topic
from tests.receiver_harness import client, client_ssl, running_receiver, url_for

ORANGE = "/callbacks/orange/dr"
VAVASMS = "/callbacks/vavasms/inbound"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
GOOD = b'{"deliveryInfoNotification":{"callbackData":"m-1","deliveryInfo":{"address":"tel:+2250700000000","deliveryStatus":"DeliveredToTerminal"}}}'


def orange(callback: str = '"m-1"', info: str | None = None) -> bytes:
    info = info or '{"address":"tel:+2250700000000","deliveryStatus":"DeliveredToTerminal"}'
    return f'{{"deliveryInfoNotification":{{"callbackData":{callback},"deliveryInfo":{info}}}}}'.encode()


# (name, path, content type, body, expected status, expected field or None)
CORPUS = [
    ("empty body", ORANGE, JSON, b"", 400, None),
    ("whitespace body", ORANGE, JSON, b"   \n", 400, None),
    ("truncated JSON", ORANGE, JSON, GOOD[:40], 400, None),
    ("invalid UTF-8", ORANGE, JSON, GOOD.replace(b"m-1", b"m-\xff"), 400, None),
    ("raw NUL byte", ORANGE, JSON, GOOD[:20] + b"\x00" + GOOD[20:], 400, None),
    (
        "escaped NUL in id",
        ORANGE,
        JSON,
        orange('"m\\u0000x"'),
        400,
        "deliveryInfoNotification.callbackData",
    ),
    ("lone surrogate", ORANGE, JSON, orange('"m\\ud800"'), 400, None),
    ("duplicate keys", ORANGE, JSON, orange('"a","callbackData":"b"'), 400, "callbackData"),
    ("1e309", ORANGE, JSON, orange("1e309"), 400, None),
    ("NaN literal", ORANGE, JSON, orange("NaN"), 400, None),
    ("top-level array", ORANGE, JSON, b"[" + GOOD + b"]", 400, "body"),
    ("top-level string", ORANGE, JSON, b'"hello"', 400, "body"),
    (
        "notification not an object",
        ORANGE,
        JSON,
        b'{"deliveryInfoNotification": 7}',
        400,
        "deliveryInfoNotification",
    ),
    ("missing notification", ORANGE, JSON, b'{"other": {}}', 400, "deliveryInfoNotification"),
    (
        "missing callbackData",
        ORANGE,
        JSON,
        b'{"deliveryInfoNotification":{"deliveryInfo":{}}}',
        400,
        "deliveryInfoNotification.callbackData",
    ),
    (
        "callbackData wrong type",
        ORANGE,
        JSON,
        orange("12345"),
        400,
        "deliveryInfoNotification.callbackData",
    ),
    (
        "callbackData empty",
        ORANGE,
        JSON,
        orange('""'),
        400,
        "deliveryInfoNotification.callbackData",
    ),
    (
        "callbackData too long",
        ORANGE,
        JSON,
        orange('"' + "x" * 300 + '"'),
        400,
        "deliveryInfoNotification.callbackData",
    ),
    (
        "missing deliveryInfo",
        ORANGE,
        JSON,
        b'{"deliveryInfoNotification":{"callbackData":"m-1"}}',
        400,
        "deliveryInfoNotification.deliveryInfo",
    ),
    (
        "empty deliveryInfo list",
        ORANGE,
        JSON,
        orange(info="[]"),
        400,
        "deliveryInfoNotification.deliveryInfo",
    ),
    (
        "address not a number",
        ORANGE,
        JSON,
        orange(info='{"address":"tel:+hello","deliveryStatus":"DeliveredToTerminal"}'),
        400,
        "deliveryInfoNotification.deliveryInfo.address",
    ),
    (
        "address missing",
        ORANGE,
        JSON,
        orange(info='{"deliveryStatus":"DeliveredToTerminal"}'),
        400,
        "deliveryInfoNotification.deliveryInfo.address",
    ),
    (
        "status wrong type",
        ORANGE,
        JSON,
        orange(info='{"address":"tel:+2250700000000","deliveryStatus":["x"]}'),
        400,
        "deliveryInfoNotification.deliveryInfo.deliveryStatus",
    ),
    ("deep nesting within size", ORANGE, JSON, b"[" * 5000 + b"]" * 5000, 400, None),
    # Within orjson's own limit (1024) but far past any carrier payload: bounded at 32.
    ("arrays nested 1,000 deep", ORANGE, JSON, b"[" * 1000 + b"]" * 1000, 400, None),
    ("objects nested 1,000 deep", ORANGE, JSON, b'{"a":' * 1000 + b"1" + b"}" * 1000, 400, None),
    ("nested 100,000 deep", ORANGE, JSON, b"[" * 100_000 + b"]" * 100_000, 413, None),
    ("1 MB string", ORANGE, JSON, orange('"' + "x" * 1_000_000 + '"'), 413, None),
    ("text/plain", ORANGE, "text/plain", GOOD, 415, None),
    ("no content type", ORANGE, None, GOOD, 415, None),
    ("form to Orange", ORANGE, FORM, b"callbackData=m-1", 415, None),
    (
        "form invalid UTF-8",
        VAVASMS,
        FORM,
        b"message_id=SM-1&from=%FF&content=a&sms_date=x",
        400,
        None,
    ),
    (
        "form duplicate field",
        VAVASMS,
        FORM,
        b"message_id=SM-1&message_id=SM-2&from=2250709000001&content=a&sms_date=x",
        400,
        "message_id",
    ),
    (
        "form missing message_id",
        VAVASMS,
        FORM,
        b"from=2250709000001&content=a&sms_date=x",
        400,
        "message_id",
    ),
    (
        "form sender not a number",
        VAVASMS,
        FORM,
        b"message_id=SM-1&from=bob&content=a&sms_date=x",
        400,
        "from",
    ),
    ("form missing sender", VAVASMS, FORM, b"message_id=SM-1&content=a&sms_date=x", 400, "from"),
    (
        "JSON content wrong type",
        VAVASMS,
        JSON,
        b'{"message_id":"SM-1","from":"2250709000001","content":5,"sms_date":"x"}',
        400,
        "content",
    ),
    ("XML to VavaSMS", VAVASMS, "application/xml", b"<sms/>", 415, None),
]


@pytest.fixture
async def receiver(settings_factory, tls_files):
    """A receiver that allows 127.0.0.2 for both providers."""
    allowed = (ipaddress.ip_network("127.0.0.2/32"),)
    async with running_receiver(
        settings_factory(allow_orange=allowed, allow_vavasms=allowed), tls_files
    ) as running:
        yield running


async def test_malformed_corpus(receiver, tls_files):
    """38 classes of malformed callbacks are refused with the right 4xx and nothing is published."""
    async with client(tls_files, "127.0.0.2") as session:
        for name, path, content_type, body, expected, field in CORPUS:
            headers = {"Content-Type": content_type} if content_type else {}
            async with session.post(
                url_for(receiver, path, "127.0.0.2"),
                data=body,
                headers=headers,
                skip_auto_headers=["Content-Type"],
            ) as resp:
                doc = await resp.json(content_type=None)
                assert resp.status == expected, (name, resp.status, doc)
                assert doc["error"] and doc["detail"], name
                if field is not None:
                    assert doc.get("field") == field, (name, doc)
        async with session.get(url_for(receiver, "/healthz", "127.0.0.2")) as resp:
            assert resp.status == 200
    for topic in (receiver.settings.topics.delivery_receipts, receiver.settings.topics.inbound):
        assert await read_topic(receiver.settings.kafka_bootstrap, topic, idle=0.5) == []


async def test_unix_socket_peer_is_refused_not_500(settings_factory, tmp_path):
    """A peer with no IP address (a Unix socket) gets 403 for a good receipt and every corpus entry."""
    everyone = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    settings = settings_factory(
        allow_orange=everyone, allow_vavasms=everyone, receiver_metrics_port=free_port()
    )
    runner = web.AppRunner(create_app(settings), access_log=None, shutdown_timeout=2)
    await runner.setup()
    path = str(tmp_path / "rx.sock")
    try:
        await web.UnixSite(runner, path).start()
        connector = aiohttp.UnixConnector(path=path)
        async with aiohttp.ClientSession(connector=connector) as session:
            for name, route, content_type, body, _, _ in [
                ("good receipt", ORANGE, JSON, GOOD, 200, None),
                *CORPUS,
            ]:
                headers = {"Content-Type": content_type} if content_type else {}
                async with session.post(
                    f"http://localhost{route}",
                    data=body,
                    headers=headers,
                    skip_auto_headers=["Content-Type"],
                ) as resp:
                    doc = await resp.json(content_type=None)
                    assert resp.status == 403, (name, resp.status, doc)
                    assert doc["error"] == "refused_ip", (name, doc)
    finally:
        await runner.cleanup()
    topic = settings.topics.delivery_receipts
    assert await read_topic(settings.kafka_bootstrap, topic, idle=0.5) == []


async def test_oversized_body_by_length_and_chunked(receiver, tls_files):
    """A body one byte over the limit is 413 whether sent with Content-Length or chunked."""
    limit = receiver.settings.max_body_bytes
    body = orange('"' + "x" * (limit - len(orange('""')) + 1) + '"')
    assert len(body) == limit + 1

    async def chunks():
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    async with client(tls_files, "127.0.0.2") as session:
        url = url_for(receiver, ORANGE, "127.0.0.2")
        async with session.post(url, data=body, headers={"Content-Type": JSON}) as resp:
            assert resp.status == 413
        async with session.post(url, data=chunks(), headers={"Content-Type": JSON}) as resp:
            assert resp.status == 413


async def test_many_bad_requests_concurrently_keep_the_server_up(receiver, tls_files):
    """200 concurrent malformed requests get 4xx and a good one still gets 200 afterwards."""
    async with client(tls_files, "127.0.0.2") as session:
        url = url_for(receiver, ORANGE, "127.0.0.2")

        async def bad(i: int) -> int:
            async with session.post(
                url, data=GOOD[: i % len(GOOD)], headers={"Content-Type": JSON}
            ) as resp:
                return resp.status

        statuses = await asyncio.gather(*(bad(i) for i in range(200)))
        assert set(statuses) == {400}
        async with session.post(url, data=GOOD, headers={"Content-Type": JSON}) as resp:
            assert resp.status == 200
        with pytest.raises(aiohttp.ClientResponseError):
            async with session.post(url, data=b"{", headers={"Content-Type": JSON}) as resp:
                resp.raise_for_status()


def _requests_total(outcome: str) -> float:
    labels = {"provider": "orange", "outcome": outcome}
    return REGISTRY.get_sample_value("smsrx_receiver_requests_total", labels) or 0.0


async def test_refused_flood_logs_one_line_per_source_and_counts_every_request(
    receiver, tls_files, caplog
):
    """1,000 refused requests from one source: 1,000 in the metric, one line in the log."""
    caplog.set_level(logging.WARNING, logger="receiver")
    refused_before, bad_before = _requests_total("refused_ip"), _requests_total("bad_request")

    async def flood(source: str, body: bytes, count: int) -> list[int]:
        connector = aiohttp.TCPConnector(ssl=client_ssl(tls_files), local_addr=(source, 0), limit=8)
        async with aiohttp.ClientSession(connector=connector) as session:
            url = url_for(receiver, ORANGE, source)

            async def post() -> int:
                async with session.post(url, data=body, headers={"Content-Type": JSON}) as resp:
                    await resp.read()
                    return resp.status

            return await asyncio.gather(*(post() for _ in range(count)))

    assert await flood("127.0.0.3", GOOD, 1000) == [403] * 1000  # not on the allowlist
    assert await flood("127.0.0.2", b"{", 300) == [400] * 300  # allowed, bad bodies
    assert _requests_total("refused_ip") - refused_before == 1000
    assert _requests_total("bad_request") - bad_before == 300
    for source, reason in (("127.0.0.3", "refused_ip"), ("127.0.0.2", "bad_request")):
        lines = [r.getMessage() for r in caplog.records if source in r.getMessage()]
        assert len(lines) == 1, (source, len(lines), lines[:3])
        assert reason in lines[0] and lines[0].startswith("refused"), lines[0]
