"""Notify URL validation, URL comparison and the paths of Orange's API, without I/O."""

from __future__ import annotations

import pytest

from subscriptions.errors import InvalidNotifyURL, UnexpectedResponse
from subscriptions.urls import (
    same_url,
    sender_segment,
    subscription_id_from_resource_url,
    validate_notify_url,
)


@pytest.mark.parametrize(
    "url", ["https://example.com/dr", "https://example.com:443/dr", "HTTPS://Example.com/dr"]
)
def test_https_on_443_is_accepted(url: str) -> None:
    """An https:// URL on port 443, implicit or explicit, is a valid notify URL."""
    assert validate_notify_url(url) == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://example.com/dr", "must start with https://"),
        ("https://example.com:8443/dr", "port 8443"),
        ("https://example.com:80/dr", "port 80"),
        ("https:///dr", "no host"),
        ("https://user:pw@example.com/dr", "user name or password"),
        ("https://example.com:99999/dr", "not a valid URL"),
        ("example.com/dr", "must start with https://"),
    ],
)
def test_other_urls_are_refused_plainly(url: str, says: str) -> None:
    """A URL Orange would never post to is refused with a message saying why."""
    with pytest.raises(InvalidNotifyURL) as caught:
        validate_notify_url(url)
    assert says in caught.value.message


def test_refusal_names_orange_requirement() -> None:
    """The refusal says that Orange requires HTTPS on port 443."""
    with pytest.raises(InvalidNotifyURL, match="Orange posts delivery receipts only to"):
        validate_notify_url("https://example.com:8443/dr")


def test_default_port_and_case_do_not_make_urls_differ() -> None:
    """Orange's echo with :443 names the same callback as the URL we sent."""
    assert same_url("https://Example.com/dr", "https://example.com:443/dr")
    assert same_url("https://example.com", "https://example.com:443/")
    assert not same_url("https://example.com/dr", "https://example.com/other")
    assert not same_url("https://example.com/dr", "https://example.com:8443/dr")
    assert not same_url("https://example.com/dr", "http://example.com/dr")


def test_sender_is_url_encoded_in_paths() -> None:
    """tel:+ is URL-encoded in Orange's paths, as its documentation requires."""
    assert sender_segment("2250000") == "tel%3A%2B2250000"


def test_subscription_id_comes_from_resource_url() -> None:
    """The id is the last segment of the documented resourceURL."""
    url = "https://api.orange.com/smsmessaging/v1/outbound/subscriptions/5e1ad26a-4f1b-4e5f"
    assert subscription_id_from_resource_url(url) == "5e1ad26a-4f1b-4e5f"
    assert subscription_id_from_resource_url(url + "/") == "5e1ad26a-4f1b-4e5f"


@pytest.mark.parametrize(
    "url", ["https://api.orange.com/smsmessaging/v1/outbound/requests/1", "", "not a url"]
)
def test_resource_url_without_an_id_is_unexpected(url: str) -> None:
    """A resourceURL that does not end in /subscriptions/{id} is reported, not guessed at."""
    with pytest.raises(UnexpectedResponse):
        subscription_id_from_resource_url(url)
