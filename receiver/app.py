"""The receiver application: ``create_app(settings)`` and the ``smsrx receiver`` entry point."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from importlib import resources
from multiprocessing.connection import Connection

from aiohttp import web

from receiver import metrics, slots
from receiver.adapters import ROUTES
from receiver.dedup import Dedup
from receiver.handlers import callback_handler, healthz, readyz
from receiver.keys import DB_POOL, DEDUP, PIPELINE, PUBLISHER, REPLAYER, SETTINGS
from receiver.middleware import error_middleware
from receiver.pipeline import Pipeline
from receiver.publisher import Publisher
from receiver.replay import Replayer
from receiver.slots import Adopted, Slot
from receiver.spool import Spool, SpoolLocked
from receiver.tls import server_context
from receiver.workers import CANNOT_START, Supervisor
from smsrx.db import create_pool
from smsrx.logs import setup_logging
from smsrx.metrics import start_metrics_server
from smsrx.process import set_parent_death_signal
from smsrx.settings import ConfigError, Settings

__all__ = ["create_app", "run"]

logger = logging.getLogger(__name__)


async def _metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    metrics.initialise(
        tuple(route.provider for route in ROUTES),
        (settings.topics.delivery_receipts, settings.topics.inbound),
    )
    metrics.SPOOL_MAX_BYTES.set(settings.spool_max_bytes)
    runner = await start_metrics_server(
        "receiver", settings.metrics_host, settings.receiver_metrics_port
    )
    yield
    await runner.cleanup()


async def _db_ctx(app: web.Application) -> AsyncIterator[None]:
    # min_size=0: no connection is needed to start; the receiver accepts without the store.
    app[DB_POOL] = await create_pool(app[SETTINGS].database_url, min_size=0, max_size=4)
    yield
    await asyncio.wait_for(app[DB_POOL].close(), 5)


async def _dedup_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    dedup = Dedup(app[DB_POOL], cache_size=settings.dedup_cache_size)
    app[DEDUP] = dedup
    yield
    await dedup.close()


async def _publisher_ctx(app: web.Application) -> AsyncIterator[None]:
    publisher = Publisher(app[SETTINGS])
    await publisher.start()
    app[PUBLISHER] = publisher
    yield
    await publisher.close()


async def _spool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    spool: Spool | None = None
    replayer: Replayer | None = None
    adopted: Adopted | None = None
    if settings.spool_max_bytes > 0:
        slot = slots.current()  # each worker process has its own spool (receiver/slots.py)
        spool = Spool(slot.spool_dir(settings.spool_dir), max_bytes=settings.spool_max_bytes)
        spool.open()
        replayer = Replayer(spool, app[PUBLISHER], app[DEDUP], rate=settings.spool_replay_rate)
        replayer.start()
        app[REPLAYER] = replayer  # /readyz reports a stalled replay
        adopted = Adopted(slot, settings, app[PUBLISHER], app[DEDUP])
        try:
            adopted.start()  # SpoolLocked if another process holds one of them
        except BaseException:
            await replayer.close()
            spool.close()
            raise
    else:
        logger.warning(
            "spool turned off (SMSRX_SPOOL_MAX_BYTES=0): callbacks get 503 while the broker is down"
        )
    app[PIPELINE] = Pipeline(app[PUBLISHER], app[DEDUP], settings.topics, spool)
    yield
    if adopted is not None:
        await adopted.close()
    if replayer is not None:
        await replayer.close()
    if spool is not None:
        spool.close()


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of the callback endpoints."""
    text = resources.files("receiver").joinpath("openapi.yaml").read_text("utf-8")
    return web.Response(text=text, content_type="application/yaml")


def create_app(settings: Settings) -> web.Application:
    """The receiver: callback routes, health endpoints and their resources."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[error_middleware],
        # A connection must complete each request's headers within the timeout (aiohttp
        # closes connections still waiting for a request when keep-alive expires); this
        # is what keeps slow-header clients from holding sockets forever.
        handler_args={"keepalive_timeout": settings.client_timeout},
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.extend([_metrics_ctx, _db_ctx, _dedup_ctx, _publisher_ctx, _spool_ctx])
    for route in ROUTES:
        app.router.add_post(route.path, callback_handler(route))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.yaml", openapi)
    return app


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context, or None when plain HTTP was asked for explicitly."""
    if settings.insecure_http:
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ConfigError(
            "HTTPS needs SMSRX_TLS_CERT and SMSRX_TLS_KEY; set SMSRX_INSECURE_HTTP=1 only behind "
            "a TLS-terminating proxy"
        )
    for name, path in (("SMSRX_TLS_CERT", settings.tls_cert), ("SMSRX_TLS_KEY", settings.tls_key)):
        if not path.is_file():
            raise ConfigError(f"{name}={path}: no such file")
    return server_context(settings.tls_cert, settings.tls_key)


def _describe(settings: Settings) -> None:
    scheme = "http" if settings.insecure_http else "https"
    logger.info(
        "receiver listening on %s port %d (hosts %s) bootstrap=%s allow_orange=%s allow_vavasms=%s trusted_proxies=%s",
        scheme,
        settings.receiver_port,
        settings.receiver_host,
        settings.kafka_bootstrap,
        ",".join(map(str, settings.allow_orange)) or "-",
        ",".join(map(str, settings.allow_vavasms)) or "-",
        ",".join(map(str, settings.trusted_proxies)) or "-",
    )
    if not settings.allow_vavasms:
        logger.warning("SMSRX_ALLOW_VAVASMS is empty: every VavaSMS callback will be refused (403)")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Serve until SIGINT or SIGTERM, then drain within SMSRX_SHUTDOWN_TIMEOUT."""
    from receiver import server  # run_app's semantics, plus the connection cap and TLS bound

    context = ssl_context(settings)
    _describe(settings)
    server.run(
        create_app(settings), settings, ssl_context=context, reuse_port=reuse_port, loop=_new_loop()
    )
    logger.info("receiver stopped")


def _worker(settings: Settings, slot: Slot, report: Connection) -> None:
    """One process of ``--workers N``: serve in ``slot`` until the parent stops it."""
    set_parent_death_signal(signal.SIGTERM)
    os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the parent only; it stops each worker once
    setup_logging(settings.log_level, name=f"receiver[{slot.index}]")
    slots.assign(slot)
    try:
        serve(settings, reuse_port=True)
    except (SpoolLocked, ConfigError, OSError) as exc:
        if isinstance(exc, TimeoutError):  # a slow shutdown, not a failed start
            raise
        report.send(str(exc))  # the parent says why, in one line, and stops
        sys.exit(CANNOT_START)


def run(settings: Settings, *, workers: int = 1) -> int:
    """Entry point of ``smsrx receiver``: serve in this process, or supervise ``workers``
    processes sharing the port (receiver/workers.py)."""
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    ssl_context(settings)  # fail fast, before starting workers, on a bad TLS configuration
    if workers > 1:
        return Supervisor(settings, workers, _worker).run()
    try:
        serve(settings)  # slot 0 of 1: <SMSRX_SPOOL_DIR>/worker-0
    except SpoolLocked as exc:
        reason = str(exc)
    else:
        return 0
    logger.error("receiver cannot start: %s", reason)  # one line: the reason is known
    return CANNOT_START
