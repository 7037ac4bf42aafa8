"""Orange's answers parsed without I/O: token, registration and error bodies."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from subscriptions.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    ServerError,
    Unauthorized,
    UnexpectedResponse,
)
from subscriptions.token import TokenCache, parse_token_response, refresh_margin
from subscriptions.wire import error_for, orange_error_text, parse_registration, subscribe_body

SAMPLES = Path(__file__).parent / "samples"


def _sample(name: str, **values: str) -> bytes:
    text = (SAMPLES / name).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text.encode()


def test_subscribe_body_is_the_documented_json() -> None:
    """The subscribe body is deliveryReceiptSubscription.callbackReference.notifyURL."""
    assert orjson.loads(subscribe_body("https://h/dr")) == {
        "deliveryReceiptSubscription": {"callbackReference": {"notifyURL": "https://h/dr"}}
    }


def test_documented_subscribe_answer_is_parsed() -> None:
    """The documented 201 answer gives the id and the notifyURL with :443 spelled out."""
    body = _sample("subscribe_201.json", dev_host="example.com", subscription_id="abc-123")
    registration = parse_registration(body)
    assert registration.id == "abc-123"
    assert registration.notify_url == "https://example.com:443/orange/smsdr.php"


def test_documented_check_answer_is_parsed() -> None:
    """The documented 200 answer of a check gives the id and the registered URL."""
    body = _sample("check_200.json", dev_host="example.com", subscription_id="abc-123")
    registration = parse_registration(body)
    assert (registration.id, registration.notify_url) == (
        "abc-123",
        "https://example.com/orange/smsdr.php",
    )


@pytest.mark.parametrize("body", [b"", b"[]", b"{}", b'{"deliveryReceiptSubscription": {}}'])
def test_undocumented_answer_is_unexpected(body: bytes) -> None:
    """An answer without the documented fields raises UnexpectedResponse."""
    with pytest.raises(UnexpectedResponse):
        parse_registration(body)


def test_documented_token_answer_with_string_expiry() -> None:
    """expires_in arrives as a string and the token is used until shortly before it ends."""
    token = parse_token_response(_sample("token_200.json", access_token="s3cr3t"), now=100.0)
    assert token.lifetime == 7776000
    assert token.use_until == 100.0 + 7776000 - 300
    assert token.authorization == "Bearer s3cr3t"
    assert "s3cr3t" not in repr(token)


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"access_token": "x"}',
        b'{"access_token": "x", "expires_in": "soon"}',
        b'{"access_token": "", "expires_in": "10"}',
        b'{"access_token": "x", "expires_in": "0"}',
        b'{"access_token": "x", "expires_in": "10", "token_type": "MAC"}',
        b"<html>",
    ],
)
def test_bad_token_answers_are_unexpected(body: bytes) -> None:
    """A token answer missing the documented fields is refused without echoing it."""
    with pytest.raises(UnexpectedResponse) as caught:
        parse_token_response(body, now=0.0)
    assert '"x"' not in caught.value.message


def test_refresh_margin_is_short_and_proportionate() -> None:
    """A token is refreshed a tenth of its life early, at most five minutes early."""
    assert refresh_margin(7776000) == 300
    assert refresh_margin(60) == 6


def test_token_cache_forgets_a_token_near_expiry() -> None:
    """The cache hands out a token until its refresh time, then nothing."""
    now = [0.0]
    cache = TokenCache(lambda: now[0])
    token = cache.store(b'{"access_token": "tok-Zq9", "expires_in": "100"}')
    assert cache.get() is token
    now[0] = 89.9
    assert cache.get() is token
    assert "tok-Zq9" not in repr(cache)
    now[0] = 90.0
    assert cache.get() is None


def test_request_error_text_is_filled_in() -> None:
    """A OneAPI requestError gives its messageId and text with the variables filled in."""
    body = orjson.dumps(
        {
            "requestError": {
                "serviceException": {
                    "messageId": "SVC0002",
                    "text": "Invalid input value for message part %1",
                    "variables": ["notifyURL"],
                }
            }
        }
    )
    assert orange_error_text(body) == "SVC0002 Invalid input value for message part notifyURL"


def test_policy_and_gateway_errors_are_read() -> None:
    """policyException, gateway and OAuth error bodies all give Orange's own words."""
    policy = {"requestError": {"policyException": {"messageId": "POL0001", "text": "Policy"}}}
    assert orange_error_text(orjson.dumps(policy)) == "POL0001 Policy"
    gateway = {"code": 42, "message": "Expired credentials", "description": "out-of-date"}
    assert orange_error_text(orjson.dumps(gateway)) == "Expired credentials: out-of-date"
    assert orange_error_text(b"upstream down") == "upstream down"
    assert orange_error_text(b"<html>502</html>") is None
    assert orange_error_text(b"[1]") is None


@pytest.mark.parametrize(
    ("status", "kind", "says"),
    [
        (400, BadRequest, "400 requestError"),
        (403, Forbidden, "SMSRX_ORANGE_SENDER"),
        (404, NotFound, "does not know subscription id=x"),
        (500, ServerError, "HTTP 500"),
        (503, ServerError, "HTTP 503"),
        (418, UnexpectedResponse, "HTTP 418"),
    ],
)
def test_statuses_map_to_typed_errors(status: int, kind: type, says: str) -> None:
    """Each error status becomes its typed error, and only 5xx is retriable."""
    error = error_for(status, b"{}", endpoint="check", subject="subscription id=x")
    assert type(error) is kind
    assert says in error.message
    assert error.retriable == (status >= 500)


def test_401_says_which_setting_to_check() -> None:
    """A 401 from the token endpoint points at SMSRX_ORANGE_AUTH_HEADER."""
    error = error_for(401, b"{}", endpoint="token", subject="the app's credentials")
    assert isinstance(error, Unauthorized)
    assert "Orange refused the credentials (401) — check SMSRX_ORANGE_AUTH_HEADER" in error.message
