"""A fake of Orange's OAuth2 and SMS DR subscription API, over real HTTP on loopback.

It follows the requests and answers of Orange's documentation ("Authentication",
"Subscription API", "Check SMS DR subscription API", "Unsubscription SMS DR API"):
it checks the app's authorization header and form body, the bearer token, the
``tel%3A%2B{sender}`` path segment and the JSON body, answers 201 with a resourceURL
(and the notifyURL with ``:443`` spelled out, as the documentation shows), 200 on a
check, 204 on an unsubscribe and 404 for an id it does not know. The account holds
one registration: the latest subscribe replaces it, and the ids before it are gone.

Faults to inject: expired tokens, error bursts, slow answers, a registration deleted
or changed behind the client's back.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from aiohttp import web

from smsrx.cli.dev.process import free_port

_EXPIRED = {
    "code": 42,
    "message": "Expired credentials",
    "description": "The requested service needs credentials, and the ones provided were out-of-date.",
}
_INVALID_CLIENT = {
    "error": "invalid_client",
    "error_description": "The requested service needs credentials, but the ones provided were invalid.",
}
_UNAVAILABLE = {
    "code": 5001,
    "message": "Service unavailable",
    "description": "The service is temporarily unavailable.",
}


def request_error(message_id: str, text: str, *variables: str) -> dict[str, Any]:
    """A OneAPI ``requestError`` body, as Orange's SMS API sends with a 400."""
    return {
        "requestError": {
            "serviceException": {
                "messageId": message_id,
                "text": text,
                "variables": list(variables),
            }
        }
    }


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _with_port_443(url: str) -> str:
    """``https://host/path`` as Orange echoes it: ``https://host:443/path``."""
    parts = urlsplit(url)
    if parts.port is None and parts.scheme == "https":
        return urlunsplit(parts._replace(netloc=f"{parts.netloc}:443"))
    return url


@dataclass
class Registration:
    """The account's one delivery-receipt registration."""

    id: str
    notify_url: str


@dataclass
class FakeOrange:
    """The fake API; ``url`` is its base URL once started."""

    auth_header: str
    sender: str
    token_lifetime: str = "7776000"
    registration: Registration | None = None
    issued_tokens: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    """(endpoint, method, raw path) of every request, in order."""
    url: str = ""
    _valid_tokens: set[str] = field(default_factory=set)
    _failures: dict[str, deque[tuple[int, Any]]] = field(default_factory=dict)
    _slow: dict[str, deque[float]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    # -- fault injection -------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every token issued so far now gets 401 Expired credentials."""
        self._valid_tokens.clear()

    def fail(self, endpoint: str, status: int, times: int = 1, body: Any = None) -> None:
        """The next ``times`` requests to ``endpoint`` get ``status`` (default body per status)."""
        if body is None and status == 401:
            body = _EXPIRED
        elif body is None and status < 500:
            body = {
                "requestError": {
                    "policyException": {"messageId": "POL0001", "text": "A policy error occurred"}
                }
            }
        elif body is None:
            body = _UNAVAILABLE
        self._failures.setdefault(endpoint, deque()).extend([(status, body)] * times)

    def slow(self, endpoint: str, delay: float, times: int = 1) -> None:
        """The next ``times`` requests to ``endpoint`` wait ``delay`` seconds before answering."""
        self._slow.setdefault(endpoint, deque()).extend([delay] * times)

    def delete_behind_our_back(self) -> None:
        """Someone removed the registration (on the portal, or with another client)."""
        self.registration = None

    def drift(self, notify_url: str) -> None:
        """The registration now posts to ``notify_url``, under the same id."""
        assert self.registration is not None
        self.registration.notify_url = notify_url

    def subscribe_elsewhere(self, notify_url: str) -> str:
        """Another client subscribed: a new id and URL replace ours. Returns the new id."""
        self.registration = Registration(str(uuid.uuid4()), notify_url)
        return self.registration.id

    def count(self, endpoint: str) -> int:
        """How many requests ``endpoint`` received."""
        return sum(1 for name, _, _ in self.requests if name == endpoint)

    # -- server ----------------------------------------------------------------------

    async def start(self) -> None:
        """Serve on a free loopback port."""
        app = web.Application(middlewares=[self._faults])
        app.router.add_post("/oauth/v2/token", self._token, name="token")
        app.router.add_post(
            "/smsmessaging/v1/outbound/{sender}/subscriptions", self._subscribe, name="subscribe"
        )
        app.router.add_get(
            "/smsmessaging/v1/outbound/subscriptions/{id}", self._check, name="check"
        )
        app.router.add_delete(
            "/smsmessaging/v1/outbound/{sender}/subscriptions/{id}",
            self._unsubscribe,
            name="unsubscribe",
        )
        # handler_cancellation: a client that gave up on a slow answer ends the handler.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route.name or "unknown"
        self.requests.append((route, request.method, request.raw_path))
        if delays := self._slow.get(route):
            await asyncio.sleep(delays.popleft())
        if failures := self._failures.get(route):
            status, body = failures.popleft()
            return _json(status, body)
        response: web.StreamResponse = await handler(request)
        return response

    # -- the documented endpoints ----------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self.auth_header:
            return _json(401, _INVALID_CLIENT)
        if request.content_type != "application/x-www-form-urlencoded":
            return _json(400, {"error": "invalid_request", "error_description": "form body"})
        form = await request.post()
        if form.get("grant_type") != "client_credentials" or len(form) != 1:
            return _json(400, {"error": "unsupported_grant_type"})
        token = secrets.token_urlsafe(24)
        self.issued_tokens.append(token)
        self._valid_tokens.add(token)
        return _json(
            200,
            {"token_type": "Bearer", "access_token": token, "expires_in": self.token_lifetime},
        )

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme == "Bearer" and token in self._valid_tokens

    def _sender_error(self, request: web.Request) -> web.Response | None:
        # The documentation requires tel:+ URL-encoded in the path: tel%3A%2B{sender}.
        if f"/outbound/tel%3A%2B{self.sender}/" not in request.raw_path:
            return _json(
                400, request_error("SVC0002", "Invalid input value for message part %1", "sender")
            )
        return None

    def _subscription(self, notify_url: str, subscription_id: str) -> dict[str, Any]:
        return {
            "deliveryReceiptSubscription": {
                "callbackReference": {"notifyURL": notify_url},
                "resourceURL": f"{self.url}/smsmessaging/v1/outbound/subscriptions/{subscription_id}",
            }
        }

    async def _subscribe(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _json(401, _EXPIRED)
        if (error := self._sender_error(request)) is not None:
            return error
        if request.content_type != "application/json":
            return _json(400, request_error("SVC0001", "A service error occurred: %1", "JSON"))
        try:
            body = orjson.loads(await request.read())
            notify_url = body["deliveryReceiptSubscription"]["callbackReference"]["notifyURL"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _json(
                400, request_error("SVC0002", "Invalid input value for message part %1", "body")
            )
        if not isinstance(notify_url, str) or not notify_url.startswith("https://"):
            return _json(
                400,
                request_error("SVC0002", "Invalid input value for message part %1", "notifyURL"),
            )
        self.registration = Registration(str(uuid.uuid4()), notify_url)
        return _json(201, self._subscription(_with_port_443(notify_url), self.registration.id))

    async def _check(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _json(401, _EXPIRED)
        registration = self.registration
        if registration is None or registration.id != request.match_info["id"]:
            return _json(404, request_error("SVC0004", "No subscription found for %1", "id"))
        return _json(200, self._subscription(registration.notify_url, registration.id))

    async def _unsubscribe(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _json(401, _EXPIRED)
        if (error := self._sender_error(request)) is not None:
            return error
        registration = self.registration
        if registration is None or registration.id != request.match_info["id"]:
            return _json(404, request_error("SVC0004", "No subscription found for %1", "id"))
        self.registration = None
        return web.Response(status=204)
