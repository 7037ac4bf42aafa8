"""The HTTP client against the fake Orange API: tokens, retries and error mapping."""

from __future__ import annotations

import pytest

from smsrx.cli.dev.process import free_port
from smsrx.settings import Settings
from subscriptions.client import OrangeClient, open_client
from subscriptions.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    ServerError,
    Timeout,
    Unauthorized,
    Unreachable,
)
from tests.subscriptions.conftest import AUTH_HEADER, FAST, NOTIFY_URL, SENDER, TIMEOUT, api_calls
from tests.subscriptions.fake_orange import FakeOrange, request_error


async def test_documented_requests_round_trip(client: OrangeClient, fake: FakeOrange) -> None:
    """Subscribe, check and unsubscribe follow the documented paths and answers."""
    registration = await client.subscribe(NOTIFY_URL)
    assert registration.notify_url == "https://example.com:443/callbacks/orange/dr"
    assert fake.registration is not None and fake.registration.id == registration.id
    checked = await client.check(registration.id)
    assert checked.notify_url == NOTIFY_URL
    await client.unsubscribe(registration.id)
    assert fake.registration is None
    assert [(method, path) for _, method, path in fake.requests] == [
        ("POST", "/oauth/v2/token"),
        ("POST", f"/smsmessaging/v1/outbound/tel%3A%2B{SENDER}/subscriptions"),
        ("GET", f"/smsmessaging/v1/outbound/subscriptions/{registration.id}"),
        ("DELETE", f"/smsmessaging/v1/outbound/tel%3A%2B{SENDER}/subscriptions/{registration.id}"),
    ]


async def test_token_is_reused(client: OrangeClient, fake: FakeOrange) -> None:
    """One token serves every call while it is fresh."""
    registration = await client.subscribe(NOTIFY_URL)
    for _ in range(3):
        await client.check(registration.id)
    assert fake.count("token") == 1


async def test_token_is_refreshed_shortly_before_expiry(
    api_settings: Settings, fake: FakeOrange
) -> None:
    """Near the end of expires_in, a new token is fetched before Orange would refuse the old."""
    now = [1000.0]
    async with open_client(api_settings, retry=FAST, clock=lambda: now[0]) as client:
        registration = await client.subscribe(NOTIFY_URL)
        now[0] += 7776000 - 299  # inside the last five minutes of 90 days
        await client.check(registration.id)
    assert fake.count("token") == 2
    assert fake.count("check") == 1  # no 401 was needed


async def test_expired_token_is_replaced_once(client: OrangeClient, fake: FakeOrange) -> None:
    """A 401 on an old token fetches a new token and the call succeeds."""
    registration = await client.subscribe(NOTIFY_URL)
    refused = api_calls("check", "unauthorized")
    fake.expire_tokens()
    assert (await client.check(registration.id)).id == registration.id
    assert fake.count("token") == 2
    assert fake.count("check") == 2
    assert api_calls("check", "unauthorized") == refused + 1


async def test_second_401_is_not_retried(client: OrangeClient, fake: FakeOrange) -> None:
    """A 401 on a freshly fetched token is an error, after exactly one refresh."""
    registration = await client.subscribe(NOTIFY_URL)
    fake.fail("check", 401, times=5)
    with pytest.raises(Unauthorized, match="freshly issued access token"):
        await client.check(registration.id)
    assert fake.count("token") == 2
    assert fake.count("check") == 2


async def test_wrong_credentials_point_at_the_setting(
    api_settings: Settings, fake: FakeOrange
) -> None:
    """Orange refusing the app's header is reported with the variable to fix, not retried."""
    async with open_client(
        api_settings.with_(orange_auth_header="Basic d3Jvbmc="), retry=FAST
    ) as client:
        with pytest.raises(Unauthorized) as caught:
            await client.subscribe(NOTIFY_URL)
    assert "check SMSRX_ORANGE_AUTH_HEADER" in caught.value.message
    assert fake.count("token") == 1
    assert fake.count("subscribe") == 0


async def test_5xx_burst_is_retried(client: OrangeClient, fake: FakeOrange) -> None:
    """Two 503s then success: the call succeeds and every attempt is counted."""
    failed, ok = api_calls("subscribe", "server_error"), api_calls("subscribe", "ok")
    fake.fail("subscribe", 503, times=2)
    await client.subscribe(NOTIFY_URL)
    assert fake.count("subscribe") == 3
    assert api_calls("subscribe", "server_error") == failed + 2
    assert api_calls("subscribe", "ok") == ok + 1


async def test_5xx_on_token_endpoint_is_retried(client: OrangeClient, fake: FakeOrange) -> None:
    """The token endpoint's 5xx is retried like any other call."""
    fake.fail("token", 502, times=1)
    await client.subscribe(NOTIFY_URL)
    assert fake.count("token") == 2


async def test_persistent_5xx_gives_up(client: OrangeClient, fake: FakeOrange) -> None:
    """A 5xx that lasts ends in ServerError after the bounded number of attempts."""
    fake.fail("subscribe", 500, times=10)
    with pytest.raises(ServerError) as caught:
        await client.subscribe(NOTIFY_URL)
    assert fake.count("subscribe") == FAST.attempts
    assert "HTTP 500" in caught.value.message
    assert f"gave up after {FAST.attempts} attempts" in caught.value.message


async def test_slow_answer_is_retried(client: OrangeClient, fake: FakeOrange) -> None:
    """An answer slower than the timeout is abandoned and the call tried again."""
    timeouts = api_calls("subscribe", "timeout")
    fake.slow("subscribe", TIMEOUT * 4)
    await client.subscribe(NOTIFY_URL)
    assert fake.count("subscribe") == 2
    assert api_calls("subscribe", "timeout") == timeouts + 1


async def test_persistent_slowness_is_a_timeout(client: OrangeClient, fake: FakeOrange) -> None:
    """When every attempt is too slow, the error names the timeout setting."""
    fake.slow("check", TIMEOUT * 4, times=FAST.attempts)
    with pytest.raises(Timeout) as caught:
        await client.check("abc")
    assert "SMSRX_ORANGE_TIMEOUT" in caught.value.message
    assert fake.count("check") == FAST.attempts


async def test_400_carries_orange_text_and_is_not_retried(
    client: OrangeClient, fake: FakeOrange
) -> None:
    """A 400 requestError shows Orange's own explanation and is tried only once."""
    # The client sends what it is given; the commands refuse http:// before this point.
    with pytest.raises(BadRequest) as caught:
        await client.subscribe("http://example.com/dr")
    assert caught.value.detail == "SVC0002 Invalid input value for message part notifyURL"
    assert "400 requestError" in caught.value.message
    assert fake.count("subscribe") == 1


async def test_403_is_not_retried(client: OrangeClient, fake: FakeOrange) -> None:
    """A 403 is reported at once, with Orange's words and what to check."""
    fake.fail(
        "subscribe", 403, body=request_error("POL0001", "A policy error occurred: %1", "sender")
    )
    with pytest.raises(Forbidden) as caught:
        await client.subscribe(NOTIFY_URL)
    assert "POL0001 A policy error occurred: sender" in caught.value.message
    assert "SMSRX_ORANGE_SENDER" in caught.value.message
    assert fake.count("subscribe") == 1


async def test_unknown_id_is_not_found(client: OrangeClient, fake: FakeOrange) -> None:
    """Checking or unsubscribing an id Orange does not know raises NotFound, once."""
    with pytest.raises(NotFound, match="subscription id=nope"):
        await client.check("nope")
    with pytest.raises(NotFound):
        await client.unsubscribe("nope")
    assert fake.count("check") == 1
    assert fake.count("unsubscribe") == 1


async def test_unreachable_api_is_retried_then_reported(api_settings: Settings) -> None:
    """No listener at the API URL: retried, then reported with the URL."""
    url = f"http://127.0.0.1:{free_port()}"
    before = api_calls("token", "unreachable")
    async with open_client(api_settings.with_(orange_api_url=url), retry=FAST) as client:
        with pytest.raises(Unreachable, match=f"cannot reach Orange at {url}"):
            await client.subscribe(NOTIFY_URL)
    assert api_calls("token", "unreachable") == before + FAST.attempts


async def test_client_repr_holds_no_secret(client: OrangeClient, fake: FakeOrange) -> None:
    """Neither the app's header nor the token shows in the client's repr or attributes."""
    await client.subscribe(NOTIFY_URL)
    text = repr(client) + repr(vars(client))
    assert AUTH_HEADER not in text
    assert fake.issued_tokens and all(token not in text for token in fake.issued_tokens)
