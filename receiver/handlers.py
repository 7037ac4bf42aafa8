"""Request handlers: the callback endpoint, and the health and readiness probes.

A callback goes through: allowlist, size, content type and parse (the adapter),
then the pipeline (dedup, publish). It is answered 200 only after every event in
it is durable. Errors become JSON responses in exactly one place,
:func:`receiver.middleware.error_middleware`.
Refusals (4xx) are counted exactly in the requests metric, and logged at most once per
source and minute (:mod:`receiver.logthrottle`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus

from aiohttp import web

from receiver.adapters import Route
from receiver.allowlist import Address, client_address, is_allowed
from receiver.errors import Forbidden, PayloadTooLarge, ReceiverError, RequestTimeout
from receiver.keys import OUTCOME, PIPELINE, PROVIDER, PUBLISHER, REPLAYER, SETTINGS
from receiver.logthrottle import LogThrottle
from smsrx import providers
from smsrx.clock import utcnow
from smsrx.codec import CarrierEvent as Event
from smsrx.events import DeliveryReceipt
from smsrx.privacy import Masked
from smsrx.providers import StatusMapping
from smsrx.settings import DECLARED, Network, Settings
from smsrx.statuses import Status
from smsrx.unmapped import unmapped_status

__all__ = ["callback_handler", "healthz", "readyz"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_FIELDS = {declared.env: name for name, declared in DECLARED.items()}


def allowlist_for(settings: Settings, provider: str) -> tuple[Network, ...]:
    """The networks allowed to post callbacks for ``provider``: the setting its registry
    entry names (``smsrx.providers``); none for a provider without one."""
    known = providers.PROVIDERS.get(provider)
    if known is None or known.allowlist_env is None:
        return ()
    networks: tuple[Network, ...] = getattr(settings, _FIELDS[known.allowlist_env])
    return networks


_ANSWERS: dict[tuple[str, int, int], bytes] = {}


def _answer(outcome: str, events: int, published: int) -> web.Response:
    """The 200 answer, as ``web.json_response`` writes it, its body built once per shape."""
    key = (outcome, events, published)
    body = _ANSWERS.get(key)
    if body is None:
        body = json.dumps({"status": outcome, "events": events, "published": published}).encode()
        if len(_ANSWERS) < 1024:
            _ANSWERS[key] = body
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def _read_body(request: web.Request, limit: float) -> bytes:
    if request.content.is_eof():  # the whole body has arrived already: nothing to wait for
        return await request.read()
    try:
        # aiohttp bounds the wait for headers (keepalive_timeout) but not for a body.
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"body not received within {limit:g}s") from None


def _count_unmapped(provider: str, statuses: StatusMapping, events: Sequence[Event]) -> None:
    """Count the receipts whose carrier status no mapping knows (docs/statuses.md)."""
    for event in events:
        if (
            isinstance(event, DeliveryReceipt)
            and event.status is Status.UNKNOWN
            and not statuses.map(event.provider_status).known
        ):
            unmapped_status(provider, event.provider_status)


def callback_handler(route: Route) -> Handler:
    """The POST handler of one carrier callback endpoint."""
    # Allowlist answers of this app (its settings never change), by direct peer when no
    # X-Forwarded-For is read. Carriers post from a handful of addresses.
    verdicts: dict[str, tuple[Address, bool]] = {}
    statuses = providers.get(route.provider).statuses

    def check(request: web.Request, settings: Settings) -> tuple[Address, bool]:
        # The peer's host, or "" when it has no address (a Unix socket): never allowed.
        peer = request.remote
        forwarded = request.headers.getall("X-Forwarded-For", ())
        key = peer if peer and not (forwarded and settings.trusted_proxies) else None
        if key is not None and (verdict := verdicts.get(key)) is not None:
            return verdict
        client = client_address(peer, forwarded, settings.trusted_proxies)
        verdict = client, is_allowed(client, allowlist_for(settings, route.provider))
        if key is not None and len(verdicts) < 4096:
            verdicts[key] = verdict
        return verdict

    # Anyone can send refused requests as fast as they like: the requests metric counts
    # each one, the log gets at most one line per source and minute.
    refusals = LogThrottle(
        logger,
        f"refused %(count)d more {route.provider} callbacks from %(source)s"
        " in the last %(seconds).0f s: %(reasons)s",
    )

    async def handle(request: web.Request) -> web.Response:
        request[PROVIDER] = route.provider
        settings = request.app[SETTINGS]
        source = request.remote or "unknown peer"
        try:
            client, allowed = check(request, settings)
            source = str(client)
            if not allowed:
                raise Forbidden(f"{client} may not post {route.provider} callbacks")
            return await receive(request, settings)
        except ReceiverError as exc:
            if exc.status < HTTPStatus.INTERNAL_SERVER_ERROR:
                refusals.event(
                    source,
                    exc.outcome,
                    "refused %s callback from %s (%s): %.200s",
                    route.provider,
                    source,
                    exc.outcome,
                    Masked(exc.detail),
                )
            raise

    async def receive(request: web.Request, settings: Settings) -> web.Response:
        if request.content_length is not None and request.content_length > settings.max_body_bytes:
            raise PayloadTooLarge(f"body over {settings.max_body_bytes} bytes")
        body = await _read_body(request, settings.client_timeout)
        events = route.parse(request.headers.get("Content-Type"), body, utcnow())
        _count_unmapped(route.provider, statuses, events)
        pipeline = request.app[PIPELINE]
        new = 0
        for event in events:
            new += await pipeline.accept(event)
        outcome = "accepted" if new else "duplicate"
        request[OUTCOME] = outcome
        return _answer(outcome, len(events), new)

    return handle


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: only while the Kafka producer is connected and spool replay is not stalled."""
    if not request.app[PUBLISHER].ready:
        return web.json_response(
            {"status": "not ready", "detail": "Kafka producer not connected"}, status=503
        )
    replayer = request.app.get(REPLAYER)
    if replayer is not None and replayer.stalled is not None:
        detail = f"spool replay stalled: {replayer.stalled}"
        return web.json_response({"status": "not ready", "detail": detail}, status=503)
    return web.json_response({"status": "ready"})
