"""``GET /v1/optouts/{e164}``: may this number be messaged? For sending services.

Served by the inbound worker beside ``/metrics``, on its internal port
(``SMSRX_INBOUND_METRICS_PORT``), never on the carrier-facing receiver. The answer
comes from PostgreSQL's suppression list::

    200 {"phone": "+2250700000001", "suppressed": true,
         "since": "2026-12-02T10:00:00.000000Z", "keyword": "ARRET"}
    200 {"phone": "+2250700000002", "suppressed": false, "since": null, "keyword": null}
    400 {"error": "invalid_phone", "detail": "..."}
    503 {"error": "unavailable", "detail": "..."}   (database down; Retry-After: 1)

A number never seen is not suppressed. ``since`` is when the latest change happened
(for an opted-in number, when it opted back in). Concurrent checks share one query
(:class:`smsrx.batching.Batcher`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import asyncpg
from aiohttp import web

from consumers import metrics
from consumers.optouts_sql import Suppression, lookup
from smsrx.batching import Batcher
from smsrx.clock import format_rfc3339
from smsrx.db import is_transient_db_error
from smsrx.phones import InvalidPhoneNumber, to_e164

__all__ = ["OptOutReader", "answer"]

logger = logging.getLogger(__name__)


def answer(phone: str, state: Suppression | None) -> dict[str, object]:
    """The JSON body for ``phone`` in ``state`` (None: never seen)."""
    if state is None:
        return {"phone": phone, "suppressed": False, "since": None, "keyword": None}
    since = format_rfc3339(state.since) if state.since is not None else None
    return {
        "phone": phone,
        "suppressed": state.suppressed,
        "since": since,
        "keyword": state.keyword,
    }


class OptOutReader:
    """Answers checks from the suppression list, batching concurrent lookups."""

    def __init__(self, pool: Callable[[], asyncpg.Pool | None]) -> None:
        self._pool = pool
        self._lookups: Batcher[str, Suppression | None] = Batcher(
            self._lookup, name="optout-lookups", max_batch=1000, concurrency=2
        )

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes of the read API."""
        return [web.get("/v1/optouts/{phone}", self.check)]

    async def _lookup(self, phones: list[str]) -> Sequence[Suppression | None]:
        pool = self._pool()
        if pool is None:
            raise ConnectionError("the worker has no database connection yet")
        found = await lookup(pool, list(set(phones)))
        return [found.get(phone) for phone in phones]

    async def check(self, request: web.Request) -> web.Response:
        """``GET /v1/optouts/{e164}``."""
        text = request.match_info["phone"]
        try:
            phone = to_e164(text)
        except InvalidPhoneNumber as exc:
            metrics.OPTOUT_CHECKS.labels("invalid").inc()
            invalid = {"error": "invalid_phone", "detail": f"{text!r}: {exc}"}
            return web.json_response(invalid, status=400)
        try:
            state = await self._lookups.submit(phone)
        except Exception as exc:
            if not (is_transient_db_error(exc) or isinstance(exc, ConnectionError)):
                raise
            metrics.OPTOUT_CHECKS.labels("unavailable").inc()
            logger.warning("optout check: database unavailable: %r", exc)
            detail = "the suppression list cannot be read now"
            return web.json_response(
                {"error": "unavailable", "detail": detail}, status=503, headers={"Retry-After": "1"}
            )
        body = answer(phone, state)
        metrics.OPTOUT_CHECKS.labels("suppressed" if body["suppressed"] else "allowed").inc()
        return web.json_response(body)

    async def close(self) -> None:
        """Finish the lookups in flight."""
        await self._lookups.close()
