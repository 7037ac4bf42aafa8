"""Helpers to run the real receiver app over HTTPS and to read what it published."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from receiver.app import create_app, ssl_context
from smsrx.cli.dev.process import free_port
from smsrx.settings import Settings


@dataclass
class RunningReceiver:
    """A receiver serving HTTPS on a loopback port."""

    url: str
    settings: Settings
    app: web.Application


@asynccontextmanager
async def running_receiver(
    settings: Settings, tls: dict[str, Path], host: str = "::"
) -> AsyncIterator[RunningReceiver]:
    """Serve the real app on ``host`` (``::`` is dual-stack: IPv4 peers arrive IPv4-mapped)."""
    # The listening socket is bound first, at port 0, so the port cannot be taken between
    # choosing it and binding it (a free_port() probe races other tests' connections).
    if host == "::":
        # asyncio makes IPv6 listeners V6ONLY; a dual-stack socket is built by hand so
        # that IPv4 clients arrive as IPv4-mapped IPv6 peers (::ffff:a.b.c.d).
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = int(sock.getsockname()[1])
    settings = settings.with_(
        tls_cert=tls["cert"],
        tls_key=tls["key"],
        receiver_port=port,
        receiver_metrics_port=free_port(),
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    try:
        await runner.setup()
    except BaseException:
        sock.close()
        raise
    site = web.SockSite(runner, sock, ssl_context=ssl_context(settings))
    await site.start()
    try:
        yield RunningReceiver(f"https://localhost:{port}", settings, app)
    finally:
        await runner.cleanup()


def client_ssl(tls: dict[str, Path]) -> ssl.SSLContext:
    """A client context that trusts the test CA."""
    return ssl.create_default_context(cafile=str(tls["ca"]))


@asynccontextmanager
async def client(
    tls: dict[str, Path], source: str = "127.0.0.1"
) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTPS client whose connections come from ``source`` (any 127.0.0.0/8 address, or ::1)."""
    connector = aiohttp.TCPConnector(ssl=client_ssl(tls), local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


def url_for(receiver: RunningReceiver, path: str, source: str) -> str:
    """The URL to reach the receiver from ``source``: over IPv6 loopback when it is ::1."""
    port = receiver.settings.receiver_port
    host = "[::1]" if ":" in source else "127.0.0.1"
    return f"https://{host}:{port}{path}"
