"""Metrics every smsrx process exposes, and the plain-HTTP server for ``/metrics``.

Each process owns its own metrics module (``receiver/metrics.py``, ...); this one
holds what they share: build info, and the endpoint on a port carriers never reach.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Sequence

import prometheus_client
from aiohttp import web

from smsrx import __version__

__all__ = ["BUILD_INFO", "metrics_app", "start_metrics_server"]

logger = logging.getLogger(__name__)

# Counters export only their value: the *_created series double the cardinality for nothing.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

BUILD_INFO = prometheus_client.Info(
    "smsrx_build", "Version of smsrx and Python running this process"
)


async def _metrics(request: web.Request) -> web.Response:
    body = prometheus_client.generate_latest(prometheus_client.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})


def metrics_app(role: str, routes: Sequence[web.RouteDef] = ()) -> web.Application:
    """An app serving ``GET /metrics`` for the process ``role``, and ``routes``."""
    BUILD_INFO.info({"version": __version__, "python": platform.python_version(), "role": role})
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    app.add_routes(routes)
    return app


async def start_metrics_server(
    role: str, host: str, port: int, *, routes: Sequence[web.RouteDef] = ()
) -> web.AppRunner:
    """Serve ``/metrics`` (and ``routes``) on host:port; the caller cleans the runner up."""
    runner = web.AppRunner(metrics_app(role, routes), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    logger.info("metrics on http://%s:%d/metrics", host, port)
    return runner
