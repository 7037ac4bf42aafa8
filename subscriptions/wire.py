"""Orange's subscription API on the wire, without I/O: request bodies, answers, errors.

Follows the "Subscription API", "Check SMS DR subscription API" and "Unsubscription
SMS DR API" sections of Orange's SMS API documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson

from subscriptions.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    OrangeError,
    ServerError,
    Unauthorized,
    UnexpectedResponse,
)
from subscriptions.urls import subscription_id_from_resource_url

__all__ = [
    "Registration",
    "error_for",
    "orange_error_text",
    "parse_registration",
    "subscribe_body",
]

_MAX_DETAIL = 300


@dataclass(frozen=True, slots=True)
class Registration:
    """What Orange says about one delivery-receipt subscription."""

    id: str
    """The subscription id, the last segment of ``resourceURL``."""
    notify_url: str
    """The callback URL Orange posts receipts to, as Orange spells it (maybe with ``:443``)."""
    resource_url: str
    """The subscription's own URL on Orange's API."""


def subscribe_body(notify_url: str) -> bytes:
    """The JSON body of a subscribe request."""
    return orjson.dumps(
        {"deliveryReceiptSubscription": {"callbackReference": {"notifyURL": notify_url}}}
    )


def parse_registration(body: bytes) -> Registration:
    """Parse the ``deliveryReceiptSubscription`` Orange returns from subscribe and check."""
    try:
        data: Any = orjson.loads(body)["deliveryReceiptSubscription"]
        notify_url = data["callbackReference"]["notifyURL"]
        resource_url = data["resourceURL"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise UnexpectedResponse(
            "Orange's answer has no deliveryReceiptSubscription with callbackReference.notifyURL "
            "and resourceURL, as its documentation promises"
        ) from None
    if not isinstance(notify_url, str) or not isinstance(resource_url, str):
        raise UnexpectedResponse("Orange's notifyURL and resourceURL are not strings")
    return Registration(
        id=subscription_id_from_resource_url(resource_url),
        notify_url=notify_url,
        resource_url=resource_url,
    )


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _exception_text(exception: Any) -> str | None:
    if not isinstance(exception, dict):
        return None
    text = str(exception.get("text", ""))
    variables = exception.get("variables") or []
    if isinstance(variables, list):
        # OneAPI texts carry %1, %2... placeholders filled from "variables".
        for index, value in reversed(list(enumerate(variables, start=1))):
            text = text.replace(f"%{index}", str(value))
    message_id = exception.get("messageId")
    return f"{message_id} {text}".strip() if message_id else text or None


def orange_error_text(body: bytes) -> str | None:
    """Orange's own explanation in an error body, on one line, if it gave one."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return _one_line(text) if text and not text.startswith("<") else None
    if not isinstance(data, dict):
        return None
    request_error = data.get("requestError")
    if isinstance(request_error, dict):
        for kind in ("serviceException", "policyException"):
            if found := _exception_text(request_error.get(kind)):
                return _one_line(found)
    parts = [
        str(data[key])
        for key in ("message", "description", "error", "error_description")
        if data.get(key)
    ]
    return _one_line(": ".join(parts)) if parts else None


def error_for(status: int, body: bytes, *, endpoint: str, subject: str) -> OrangeError:
    """The typed error for an error answer of ``endpoint`` about ``subject``."""
    detail = orange_error_text(body)
    said = f": Orange says {detail!r}" if detail else ""
    if status == HTTPStatus.BAD_REQUEST:
        return BadRequest(
            f"Orange rejected the {endpoint} request for {subject} (400 requestError){said}",
            detail=detail,
        )
    if status == HTTPStatus.UNAUTHORIZED:
        if endpoint == "token":
            return Unauthorized(
                "Orange refused the credentials (401) — check SMSRX_ORANGE_AUTH_HEADER: "
                "it is the app's whole Authorization header from the Orange Developer "
                "portal, 'Basic ...'"
            )
        return Unauthorized(
            f"Orange refused a freshly issued access token for {endpoint} (401){said} — "
            "check that the app in SMSRX_ORANGE_AUTH_HEADER has the SMS API"
        )
    if status == HTTPStatus.FORBIDDEN:
        return Forbidden(
            f"Orange denied {endpoint} for {subject} (403){said} — check that the sender "
            "in SMSRX_ORANGE_SENDER belongs to the app and that its SMS bundle is active"
        )
    if status == HTTPStatus.NOT_FOUND:
        return NotFound(f"Orange does not know {subject} (404){said}")
    if status >= 500:
        return ServerError(f"Orange failed on {endpoint} (HTTP {status}){said}", status=status)
    return UnexpectedResponse(f"Orange answered {endpoint} with HTTP {status}{said}")
