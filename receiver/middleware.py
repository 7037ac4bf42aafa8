"""The error middleware: every error a request meets becomes a JSON response here, and
every callback's outcome and latency is recorded here, whatever the outcome."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from receiver import metrics
from receiver.errors import ReceiverError, Unavailable
from receiver.keys import OUTCOME, PROVIDER, SETTINGS
from smsrx.settings import Settings

__all__ = ["error_middleware"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTPOUTCOMES = {
    HTTPStatus.NOT_FOUND: "not_found",
    HTTPStatus.METHOD_NOT_ALLOWED: "method_not_allowed",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "too_large",
    HTTPStatus.BAD_REQUEST: "bad_request",
}


def _error_response(exc: ReceiverError, settings: Settings) -> web.Response:
    headers = {"Retry-After": str(settings.retry_after)} if isinstance(exc, Unavailable) else None
    return web.json_response(exc.body(), status=exc.status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map errors to JSON responses and record every callback's outcome and latency."""
    if request.path in ("/healthz", "/readyz"):
        return await handler(request)
    started = time.perf_counter()
    metrics.IN_FLIGHT_NOW.enter()
    outcome = "error"
    try:
        response = await handler(request)
    except ReceiverError as exc:
        outcome = exc.outcome
        if isinstance(exc, Unavailable):
            logger.warning(
                "answering 503 provider=%s: %s", request.get(PROVIDER, "none"), exc.detail
            )
        return _error_response(exc, request.app[SETTINGS])
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        outcome = _HTTPOUTCOMES.get(HTTPStatus(exc.status), "bad_request")
        body = {"error": outcome, "detail": exc.reason}
        return web.json_response(
            body, status=exc.status, headers={k: v for k, v in exc.headers.items() if k == "Allow"}
        )
    except Exception:
        logger.exception("unexpected error path=%s", request.path)
        return web.json_response({"error": "internal", "detail": "unexpected error"}, status=500)
    else:
        outcome = request.get(OUTCOME, "ok")
        return response
    finally:
        metrics.IN_FLIGHT_NOW.leave()
        metrics.observe_request(
            request.get(PROVIDER, "none"), outcome, time.perf_counter() - started
        )
