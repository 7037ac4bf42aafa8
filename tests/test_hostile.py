"""Hostile input at the edge: fuzzing from the OpenAPI document, HTTP smuggling, slow clients, TLS.

These run against `smsrx receiver` as a real process over real HTTPS.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import read_topic
from tests.live_receiver import FRAMING, GOOD, LiveReceiver, live_receiver, raw_exchange


@pytest.fixture(scope="module")
async def live(broker, migrated, tls_files, tmp_path_factory) -> AsyncIterator[LiveReceiver]:
    """A real receiver process allowing 127.0.0.1 and 127.0.0.2, with a 3 s client timeout."""
    spool = tmp_path_factory.mktemp("spool")
    async with live_receiver(broker, migrated, tls_files, spool) as receiver:
        yield receiver


@pytest.mark.timeout(300)
def test_schemathesis_against_live_receiver(live: LiveReceiver, tmp_path: Path) -> None:
    """schemathesis finds no 5xx, no accepted negative data and no response off the schema."""
    # 413 is how the receiver rejects bodies over its size limit: a valid rejection too.
    (tmp_path / "schemathesis.toml").write_text(
        "[checks.negative_data_rejection]\nexpected-statuses = [400, 403, 404, 405, 413, 415, 422]\n"
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"https://localhost:{live.port}/openapi.yaml",
            "--checks",
            "not_a_server_error,negative_data_rejection,response_schema_conformance",
            "--tls-verify",
            str(live.ca),
            "--phases",
            # The coverage phase trips an internal schemathesis error on Python 3.11
            # ("AST constructor recursion depth mismatch") before sending anything.
            "examples,fuzzing",
            "--max-time",
            "60",
            "--workers",
            "2",
            "--suppress-health-check",
            "all",
            "--warnings",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    (tmp_path.parent / "schemathesis.out").write_text(result.stdout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert live.proc.poll() is None


SMUGGLED = (
    b"POST /callbacks/orange/dr HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(GOOD)).encode() + b"\r\n\r\n" + GOOD
)


@pytest.mark.parametrize("name", [*FRAMING, "bare LF"])
async def test_smuggling_and_framing_get_400_and_nothing_dispatched(
    live: LiveReceiver, name: str
) -> None:
    """Ambiguous framing is answered 400, the connection closes, and the smuggled request never runs."""
    head = b"POST /callbacks/orange/dr HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    if name == "bare LF":
        data = (head + b"Content-Length: 2\r\n\r\n{}").replace(b"\r\n", b"\n") + SMUGGLED
    else:
        data = head + FRAMING[name] + SMUGGLED
    before = live.metric("smsrx_receiver_requests_total")
    topic = live.settings.topics.delivery_receipts
    records_before = len(await read_topic(live.settings.kafka_bootstrap, topic, idle=0.5))
    answer = await asyncio.to_thread(raw_exchange, live, data)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0], answer[:200]
    status_lines = re.findall(rb"(?:^|\r\n)HTTP/1\.[01] \d{3} ", answer)
    assert len(status_lines) == 1  # one answer: the smuggled request was not dispatched
    assert live.metric("smsrx_receiver_requests_total") == before  # no handler ran at all
    # Nothing new on the topic (the schemathesis run before may have published valid events).
    assert len(await read_topic(live.settings.kafka_bootstrap, topic, idle=0.5)) == records_before


async def _trickle(live: LiveReceiver, stop: asyncio.Event, closed: list[float]) -> None:
    """A slow client: sends a request line, then one header byte every 2 seconds."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", live.port, ssl=live.client_context(), server_hostname="localhost"
    )
    opened = time.monotonic()
    try:
        writer.write(b"POST /callbacks/orange/dr HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        while not stop.is_set():
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), 2.0) == b"":
                    closed.append(time.monotonic() - opened)
                    return
            except TimeoutError:
                writer.write(b"a")
    except (ConnectionError, ssl.SSLError):
        closed.append(time.monotonic() - opened)
    finally:
        writer.close()


@pytest.mark.timeout(120)
async def test_slow_clients_do_not_starve_legitimate_traffic(live: LiveReceiver) -> None:
    """300 connections trickling headers are cut off by the server, while real callbacks keep getting 200."""

    stop = asyncio.Event()
    closed: list[float] = []
    attackers = [asyncio.create_task(_trickle(live, stop, closed)) for _ in range(300)]
    await asyncio.sleep(1.0)
    statuses = []
    connector = aiohttp.TCPConnector(
        ssl=live.client_context(), local_addr=("127.0.0.2", 0), limit=10
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(60):
            body = GOOD.replace(b'"m-1"', f'"slow-{i}"'.encode())
            async with session.post(
                f"https://localhost:{live.port}/callbacks/orange/dr",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as resp:
                statuses.append(resp.status)
            await asyncio.sleep(0.1)
    await asyncio.sleep(4.0)  # past SMSRX_CLIENT_TIMEOUT (3 s) for every attacker
    stop.set()
    await asyncio.gather(*attackers, return_exceptions=True)
    assert statuses == [200] * 60
    assert len(closed) == 300  # the server closed every slow connection itself
    assert live.proc.poll() is None


def _handshake(live: LiveReceiver, context: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.version() or ""


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_refused(live: LiveReceiver, version: ssl.TLSVersion) -> None:
    """TLS 1.0 and 1.1 handshakes fail."""
    context = live.client_context()
    context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():  # the client must be allowed to try the deprecated versions
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        _handshake(live, context)


@pytest.mark.parametrize(
    "ciphers",
    ["AES128-SHA:AES256-SHA", "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384", "AES128-GCM-SHA256"],
)
def test_cbc_and_rsa_key_exchange_refused(live: LiveReceiver, ciphers: str) -> None:
    """A TLS 1.2 client offering only CBC or static-RSA suites cannot connect."""
    context = live.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers + ":@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        _handshake(live, context)


def test_modern_tls_works(live: LiveReceiver) -> None:
    """TLS 1.2 with ECDHE-AESGCM and TLS 1.3 both connect."""
    tls12 = live.client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(live, tls12) == "TLSv1.2"
    assert _handshake(live, live.client_context()) == "TLSv1.3"
