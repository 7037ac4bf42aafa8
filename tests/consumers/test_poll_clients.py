"""The poll clients over real HTTP against the fake status APIs, and the fakes' controls."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from consumers.polling.client import Outcome, PollResult
from consumers.polling.clients import FACTORIES, poll_rate
from consumers.polling.gatewaysms import GatewaySmsClient
from consumers.polling.vavasms import VavaSmsClient
from smsrx import providers
from smsrx.cli.dev.process import free_port
from smsrx.envvars import ConfigError
from smsrx.providers import Mapped
from smsrx.settings import DECLARED, Settings
from smsrx.statuses import Status
from tests.fakes.common import FakeServer, RateLimit, Script
from tests.fakes.gatewaysms import FakeGatewaySms, GatewayState
from tests.fakes.vavasms import FakeVavaSms, VavaState

TOKEN = "gw-Sup3r-S3cret-token"
PASSWORD = "vava-Sup3r-S3cret-pw"
USERNAME = "ops@example.com"
TIMEOUT = "0.3s"
IT1, IT2, IT3 = "+393495155018", "+393495155019", "+393495155020"
CI = "+2250700000001"


def settings(**env: str) -> Settings:
    """Settings with the test credentials, a short timeout and plain-HTTP carrier URLs."""
    return Settings.from_env(
        {
            "SMSRX_INSECURE_PROVIDER_URLS": "1",
            "SMSRX_GATEWAYSMS_TOKEN": TOKEN,
            "SMSRX_VAVASMS_USERNAME": USERNAME,
            "SMSRX_VAVASMS_PASSWORD": PASSWORD,
            "SMSRX_POLL_TIMEOUT": TIMEOUT,
            **env,
        }
    )


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGatewaySms]:
    """The fake Gateway SMS API, knowing the test token."""
    fake = FakeGatewaySms(token=TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def vava() -> AsyncIterator[FakeVavaSms]:
    """The fake VavaSMS status check, knowing the test credentials."""
    fake = FakeVavaSms(username=USERNAME, password=PASSWORD)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def gw_client(gateway: FakeGatewaySms) -> AsyncIterator[GatewaySmsClient]:
    """A Gateway SMS client of the fake, built from settings."""
    client = GatewaySmsClient.from_settings(settings(SMSRX_GATEWAYSMS_API_URL=gateway.url))
    yield client
    await client.close()


@pytest.fixture
async def vava_client(vava: FakeVavaSms) -> AsyncIterator[VavaSmsClient]:
    """A VavaSMS client of the fake, built from settings (with one extra mapping row)."""
    env = {"SMSRX_VAVASMS_STATUS_URL": vava.url, "SMSRX_VAVASMS_STATUS_MAP": "dlvrd=delivered"}
    client = VavaSmsClient.from_settings(settings(**env))
    yield client
    await client.close()


def statuses(result: PollResult) -> dict[str, Status]:
    """Recipient to canonical status."""
    return {s.recipient: s.mapped.status for s in result.statuses}


# -- Gateway SMS ---------------------------------------------------------------------


async def test_gateway_state_changes_after_k_polls(
    gateway: FakeGatewaySms, gw_client: GatewaySmsClient
) -> None:
    """PENDING for two polls, then DELIVERED with its delivery time; only asked recipients."""
    gateway.add_message(
        "m1",
        {
            IT1: [("PENDING", 2), ("DELIVERED", 0)],
            IT2: [("UNDELIVERABLE", 0)],
            IT3: [("DELIVERED", 0)],
        },
    )
    results = [await gw_client.poll("m1", [IT1, IT2]) for _ in range(3)]
    assert [r.outcome for r in results] == [Outcome.OK] * 3
    assert [statuses(r) for r in results] == [
        {IT1: Status.SENT, IT2: Status.FAILED},
        {IT1: Status.SENT, IT2: Status.FAILED},
        {IT1: Status.DELIVERED, IT2: Status.FAILED},
    ]
    first, last = results[0].statuses[0], results[2].statuses[0]
    assert (first.provider_status, first.occurred_at) == ("PENDING_ENROUTE", None)
    assert last.provider_status == "DELIVERED_TO_HANDSET"
    assert last.occurred_at is not None and last.occurred_at.utcoffset() is not None
    assert gateway.polls("m1", IT1) == 3
    assert [r.path for r in gateway.requests] == ["/messages/m1/recipients/"] * 3


async def test_gateway_inconsistent_item_over_http(
    gateway: FakeGatewaySms, gw_client: GatewaySmsClient, caplog: pytest.LogCaptureFixture
) -> None:
    """An answer whose state contradicts its group polls as unknown, with a warning."""
    caplog.set_level(logging.WARNING)
    gateway.add_message("m1", {IT1: [(GatewayState("DELIVERED", state="PENDING"), 0)]})
    [status] = (await gw_client.poll("m1", [IT1])).statuses
    assert status.mapped == Mapped(Status.UNKNOWN, known=False)
    assert "disagrees" in caplog.text


async def test_gateway_5xx_burst_then_ok(
    gateway: FakeGatewaySms, gw_client: GatewaySmsClient
) -> None:
    """A burst of 503s polls as RETRY, then the answer comes through."""
    gateway.add_message("m1", {IT1: [("DELIVERED", 0)]})
    gateway.fail(times=2, status=503)
    results = [await gw_client.poll("m1", [IT1]) for _ in range(3)]
    assert [r.outcome for r in results] == [Outcome.RETRY, Outcome.RETRY, Outcome.OK]
    assert results[0].reason == "HTTP 503"
    assert [r.status for r in gateway.requests] == [503, 503, 200]


async def test_gateway_bad_credentials(gateway: FakeGatewaySms) -> None:
    """A wrong token, or credentials refused by the carrier, is AUTH_FAILED."""
    gateway.add_message("m1", {IT1: [("DELIVERED", 0)]})
    wrong = GatewaySmsClient(gateway.url, "not-the-token", 1.0)
    try:
        assert (await wrong.poll("m1", [IT1])).outcome is Outcome.AUTH_FAILED
    finally:
        await wrong.close()
    right = GatewaySmsClient(gateway.url, TOKEN, 1.0)
    try:
        gateway.bad_credentials = True
        assert (await right.poll("m1", [IT1])).outcome is Outcome.AUTH_FAILED
        gateway.bad_credentials = False
        assert (await right.poll("m1", [IT1])).outcome is Outcome.OK
    finally:
        await right.close()


async def test_gateway_unknown_id(gateway: FakeGatewaySms, gw_client: GatewaySmsClient) -> None:
    """An id the carrier does not know (404) is NOT_FOUND; the id is quoted in the path."""
    result = await gw_client.poll("no such/id", [IT1])
    assert result.outcome is Outcome.NOT_FOUND
    assert gateway.requests[0].status == 404


async def test_gateway_slow_answer_is_retry(
    gateway: FakeGatewaySms, gw_client: GatewaySmsClient
) -> None:
    """An answer slower than SMSRX_POLL_TIMEOUT is RETRY; the next poll succeeds."""
    gateway.add_message("m1", {IT1: [("DELIVERED", 0)]})
    gateway.slow(2.0)
    started = time.monotonic()
    result = await gw_client.poll("m1", [IT1])
    assert result.outcome is Outcome.RETRY and "0.3" in result.reason
    assert time.monotonic() - started < 1.5
    assert (await gw_client.poll("m1", [IT1])).outcome is Outcome.OK


async def test_gateway_rate_limit_is_retry(
    gateway: FakeGatewaySms, gw_client: GatewaySmsClient
) -> None:
    """Past the carrier's rate, 429 is RETRY with Retry-After; the fake counts it."""
    gateway.add_message("m1", {IT1: [("DELIVERED", 0)]})
    gateway.limit_rate(2)
    results = [await gw_client.poll("m1", [IT1]) for _ in range(4)]
    assert [r.outcome for r in results] == [Outcome.OK] * 2 + [Outcome.RETRY] * 2
    assert (results[2].reason, results[2].retry_after) == ("HTTP 429", 1.0)
    assert gateway.rate_violations == 2


async def test_gateway_unreadable_answer_is_retry(
    gateway: FakeGatewaySms, gw_client: GatewaySmsClient
) -> None:
    """A 200 whose body is not JSON is RETRY."""
    gateway.fail(status=200)  # a 200 with a plain-text body
    result = await gw_client.poll("m1", [IT1])
    assert (result.outcome, result.reason) == (Outcome.RETRY, "answer is not JSON")


async def test_gateway_needs_a_token() -> None:
    """Without SMSRX_GATEWAYSMS_TOKEN the client cannot be built."""
    with pytest.raises(ConfigError, match="SMSRX_GATEWAYSMS_TOKEN"):
        GatewaySmsClient.from_settings(Settings.from_env({}))


# -- VavaSMS -------------------------------------------------------------------------


async def test_vava_state_changes_after_k_polls(
    vava: FakeVavaSms, vava_client: VavaSmsClient
) -> None:
    """Status "sent" for two polls, then "delivered"; the status is kept verbatim."""
    vava.add_message("SM-1", [("sent", 2), ("delivered", 0)])
    results = [await vava_client.poll("SM-1", [CI]) for _ in range(3)]
    assert [statuses(r) for r in results] == [
        {CI: Status.SENT},
        {CI: Status.SENT},
        {CI: Status.DELIVERED},
    ]
    assert [r.statuses[0].provider_status for r in results] == ["sent", "sent", "delivered"]
    assert results[0].statuses[0].raw["description"] == "Envoyé"
    assert [r.message_id for r in vava.requests] == ["SM-1"] * 3


async def test_vava_description_and_setting_rows(
    vava: FakeVavaSms, vava_client: VavaSmsClient
) -> None:
    """An unmapped status falls back on its description; the setting's rows are used."""
    vava.add_message("SM-1", [(VavaState("DLV_OK", "Livré"), 0)])
    vava.add_message("SM-2", [(VavaState("DLVRD", "?"), 0)])
    for message_id in ("SM-1", "SM-2"):
        [status] = (await vava_client.poll(message_id, [CI])).statuses
        assert status.mapped == Mapped(Status.DELIVERED, known=True)


async def test_vava_bad_credentials(vava: FakeVavaSms) -> None:
    """Code 901 (HTTP 200) is AUTH_FAILED."""
    vava.add_message("SM-1", [("sent", 0)])
    client = VavaSmsClient(vava.url, USERNAME, "wrong", 1.0)
    try:
        result = await client.poll("SM-1", [CI])
        assert (result.outcome, vava.requests[0].status) == (Outcome.AUTH_FAILED, 200)
    finally:
        await client.close()


async def test_vava_unknown_id(vava_client: VavaSmsClient) -> None:
    """Code 709 is NOT_FOUND."""
    assert (await vava_client.poll("SM-nope", [CI])).outcome is Outcome.NOT_FOUND


async def test_vava_faults_are_retry(vava: FakeVavaSms, vava_client: VavaSmsClient) -> None:
    """5xx, a slow answer and 429 are RETRY; then the status comes through."""
    vava.add_message("SM-1", [("sent", 0)])
    vava.fail(times=1, status=502)
    assert (await vava_client.poll("SM-1", [CI])).reason == "HTTP 502"
    vava.slow(2.0)
    assert (await vava_client.poll("SM-1", [CI])).outcome is Outcome.RETRY
    await asyncio.sleep(1.0)  # the slow request leaves the rate window
    vava.limit_rate(1)
    first, second = [await vava_client.poll("SM-1", [CI]) for _ in range(2)]
    assert (first.outcome, second.outcome, second.retry_after) == (Outcome.OK, Outcome.RETRY, 1.0)
    assert vava.rate_violations == 1


async def test_vava_one_recipient_per_poll(vava_client: VavaSmsClient) -> None:
    """VavaSMS has one message_id per recipient: two recipients is a caller's error."""
    with pytest.raises(ValueError, match="one recipient"):
        await vava_client.poll("SM-1", [CI, IT1])


# -- secrets -------------------------------------------------------------------------


async def test_secrets_never_in_reasons_or_logs(
    gateway: FakeGatewaySms,
    gw_client: GatewaySmsClient,
    vava: FakeVavaSms,
    vava_client: VavaSmsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither the token nor the password reaches a reason, a repr or a log line."""
    caplog.set_level(logging.DEBUG)
    gateway.add_message("m1", {IT1: [(GatewayState("DELIVERED", state="X"), 0)]})
    vava.add_message("SM-1", [("sent", 0)])
    results: list[PollResult] = []
    polls: list[tuple[FakeServer, Callable[[], Awaitable[PollResult]]]] = [
        (gateway, functools.partial(gw_client.poll, "m1", [IT1])),
        (vava, functools.partial(vava_client.poll, "SM-1", [CI])),
    ]
    for fake, poll in polls:
        fake.bad_credentials = True
        results.append(await poll())
        fake.bad_credentials = False
        fake.fail(status=500)
        results.append(await poll())
        fake.slow(1.0)
        results.append(await poll())
        results.append(await poll())
    dead = f"http://127.0.0.1:{free_port()}"
    for client in (
        GatewaySmsClient(dead, TOKEN, 1.0),
        VavaSmsClient(dead, USERNAME, PASSWORD, 1.0),
    ):
        try:
            result = await client.poll("m1", [IT1])
            assert result.outcome is Outcome.RETRY and "Connect" in result.reason
            results.append(result)
        finally:
            await client.close()
    text = " ".join(r.reason + repr(r) for r in results) + caplog.text
    text += repr(gw_client) + repr(vava_client)
    assert {r.outcome for r in results} >= {Outcome.AUTH_FAILED, Outcome.RETRY, Outcome.OK}
    assert TOKEN not in text and PASSWORD not in text
    assert all("\n" not in r.reason for r in results)


# -- the fakes themselves ------------------------------------------------------------


def test_rate_limit_sliding_window() -> None:
    """Every arrival in the last second counts, refused or not; each refusal is counted."""
    limit = RateLimit(2)
    arrivals = (0.0, 0.1, 0.2, 1.25, 1.3, 1.35)
    assert [limit.admit(t) for t in arrivals] == [True, True, False, True, True, False]
    assert limit.violations == 2
    assert RateLimit().admit(0.0) and RateLimit().violations == 0


def test_script_steps() -> None:
    """A script answers each step for its number of polls; the last step lasts."""
    script = Script([("a", 2), ("b", 1), ("c", 0)])
    assert [script.advance() for _ in range(5)] == ["a", "a", "b", "c", "c"]
    assert script.polls == 5


async def test_fakes_record_requests(gateway: FakeGatewaySms, vava: FakeVavaSms) -> None:
    """Both fakes log time, method, path, message id and status; JSON bodies work too."""
    gateway.add_message("m1", {IT1: [("DELIVERED", 0)]})
    vava.add_message("SM-1", [("sent", 0)])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{gateway.url}/messages/m1/recipients/+39-3495155018", headers=auth
        ) as r:
            body: Any = orjson.loads(await r.read())
            assert body["data"][0]["number"] == "+39-3495155018"
            assert body["message"] == "1 Result" and "timestamp_delivery" in body["data"][0]
        async with http.get(f"{gateway.url}/messages/m2/recipients/", headers=auth) as r:
            assert r.status == 404
            assert orjson.loads(await r.read()) == {
                "data": [],
                "success": False,
                "message": "Not found",
                "error": 404,
            }
        async with http.get(f"{gateway.url}/messages/m1/recipients/") as r:
            assert r.status == 401
        form = {"username": USERNAME, "password": PASSWORD, "message_id": "SM-1"}
        async with http.post(vava.url, json=form) as r:
            assert orjson.loads(await r.read())["data"][0]["status"] == "sent"
    got = [(r.method, r.path, r.message_id, r.status) for r in gateway.requests + vava.requests]
    assert got == [
        ("GET", "/messages/m1/recipients/+39-3495155018", "m1", 200),
        ("GET", "/messages/m2/recipients/", "m2", 404),
        ("GET", "/messages/m1/recipients/", "m1", 401),
        ("POST", "/api/v1/text/status", "SM-1", 200),
    ]
    times = [r.at for r in gateway.requests]
    assert times == sorted(times) and times[-1] <= time.monotonic()
    assert gateway.count("m1") == 2 and vava.count() == 1


def test_every_polled_provider_declares_its_settings() -> None:
    """Each provider that polls has a client, and its credential and rate settings exist."""
    declared = {d.env for d in DECLARED.values()}
    polled = [p.name for p in providers.PROVIDERS.values() if p.polls]
    assert sorted(polled) == sorted(FACTORIES)
    for name in polled:
        provider = providers.get(name)
        assert provider.poll_rate_env in declared
        assert set(provider.credential_envs) <= declared
    settings = Settings.from_env({"SMSRX_VAVASMS_POLL_RATE": "7.5"})
    assert poll_rate(settings, "vavasms") == 7.5
    assert poll_rate(settings, "gatewaysms") == settings.gatewaysms_poll_rate
