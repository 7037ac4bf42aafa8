"""Serving the carrier-facing port: a cap on connections and a bound on the TLS handshake.

aiohttp's ``TCPSite`` hands its socket to ``loop.create_server``, which gives every
connection asyncio's default of 60 s to finish its TLS handshake, and accepts as many
connections as the process has file descriptors. :class:`EdgeSite` accepts
connections itself:

- past ``SMSRX_MAX_CONNECTIONS`` open connections (handshaking or established), a
  new one is closed at once, before any TLS work: counted in
  ``smsrx_receiver_connections_refused_total`` and logged at most once a minute;
- otherwise it goes to ``loop.connect_accepted_socket`` with
  ``ssl_handshake_timeout=SMSRX_CLIENT_TIMEOUT``, which is what ``create_server``
  does with each connection it accepts; from there on aiohttp serves it as usual.

:func:`run` serves an application on one such site per ``SMSRX_RECEIVER_HOST`` until
SIGINT or SIGTERM, as ``web.run_app`` does: the same signal handling and the same
graceful drain within ``SMSRX_SHUTDOWN_TIMEOUT``. While it serves, aiohttp's ERROR
line for each malformed HTTP request (:class:`MalformedRequestLog`) gets through once
per source and minute.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import ssl
import struct
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from aiohttp import web
from yarl import URL

from receiver import metrics
from receiver.logthrottle import LogThrottle
from smsrx.settings import Settings

__all__ = ["ConnectionCap", "EdgeSite", "MalformedRequestLog", "fit_fd_limit", "run"]

logger = logging.getLogger(__name__)

SPARE_FDS = 256
"""Descriptors kept for everything but carrier connections: listeners, the database
pool, broker connections, the spool, the metrics server, logs."""

# Out of descriptors or memory: accepting again at once would spin, so wait (as asyncio does).
_ACCEPT_PAUSE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_PAUSE = 1.0
# SO_LINGER on, 0 s: close() sends RST and frees the socket at once (no FIN_WAIT, TIME_WAIT).
_ABORT = struct.pack("ii", 1, 0)


class ConnectionCap:
    """The connections of one process, across its sites, against its limit."""

    def __init__(self, limit: int, server: web.Server) -> None:
        self.limit = limit
        self.handshaking = 0
        """Accepted connections not yet handed to aiohttp (in their TLS handshake)."""
        self._server = server
        self.log = LogThrottle(
            logger,
            "closed %(count)d more connections at once in the last %(seconds).0f s:"
            " %(source)s reached",
        )

    @property
    def open(self) -> int:
        """Connections open now: handshaking, plus those aiohttp serves."""
        return self.handshaking + len(self._server.connections)

    def refuse(self, peer: str) -> None:
        """Count (and maybe log) one connection closed because the cap was reached."""
        metrics.CONNECTIONS_REFUSED.inc()
        self.log.event(
            f"SMSRX_MAX_CONNECTIONS={self.limit}",
            "at_cap",
            "SMSRX_MAX_CONNECTIONS=%d connections open: closing new ones at once (first from %s)",
            self.limit,
            peer,
        )


class MalformedRequestLog(logging.Filter):
    """Lets aiohttp's ``Error handling request`` lines through once per source and minute.

    aiohttp answers malformed HTTP (ambiguous framing, overlong lines...) with 400 and
    logs each one at ERROR with its traceback: a request anyone can send. The first
    of a source and minute goes through; the rest are counted in a summary line.
    """

    def __init__(self) -> None:
        super().__init__()
        self.throttle = LogThrottle(
            logger,
            "dropped %(count)d more aiohttp 'Error handling request' lines from %(source)s"
            " in the last %(seconds).0f s: %(reasons)s",
        )

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a repeat of a source's malformed-request line within the minute."""
        if not str(record.msg).startswith("Error handling request") or not record.args:
            return True
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        reason = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else "error"
        try:
            return self.throttle.admit(str(args[0]), reason)
        except RuntimeError:  # no running loop (logged at shutdown): let it through
            return True


class EdgeSite(web.BaseSite):
    """A TCP site that caps connections and bounds the TLS handshake (see the module docstring)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        *,
        cap: ConnectionCap,
        handshake_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._cap = cap
        self._handshake_timeout = handshake_timeout
        self._reuse_port = reuse_port
        self._listeners: list[socket.socket] = []
        self._handshakes: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        """The URL served, as aiohttp's TCPSite names it."""
        scheme = "https" if self._ssl_context else "http"
        return str(URL.build(scheme=scheme, host=self._host or "0.0.0.0", port=self.port))

    @property
    def port(self) -> int:
        """The port bound (the one asked for, before start)."""
        if self._listeners:
            return int(self._listeners[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        """Bind every address of the host and start accepting."""
        await super().start()
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self._host or None,
            self._port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
        self._listeners = _listen(
            infos, backlog=self._backlog, reuse_port=self._reuse_port, host=self._host
        )
        for listener in self._listeners:
            loop.add_reader(listener.fileno(), self._accept, listener)

    async def stop(self) -> None:
        """Stop accepting, drop the connections still in their handshake, unregister."""
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.remove_reader(listener.fileno())
            listener.close()
        self._listeners = []
        await asyncio.sleep(0)  # every handshake task has started: cancelling one closes it
        for task in self._handshakes:
            task.cancel()
        await asyncio.gather(*self._handshakes, return_exceptions=True)
        await super().stop()

    def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self._backlog):
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_PAUSE_ERRNOS:
                    self._pause(listener, exc)
                    return
                continue  # that one connection is gone (ECONNABORTED...): the next
            if self._cap.open >= self._cap.limit:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
                conn.close()
                self._cap.refuse(str(address[0]))
                continue
            self._cap.handshaking += 1
            task = loop.create_task(self._handshake(conn))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    def _pause(self, listener: socket.socket, exc: OSError) -> None:
        loop = asyncio.get_running_loop()
        logger.error(
            "accept failed on %s: %s; pausing accepts for %.0f s", self.name, exc, _ACCEPT_PAUSE
        )
        loop.remove_reader(listener.fileno())
        loop.call_later(_ACCEPT_PAUSE, self._resume, listener)

    def _resume(self, listener: socket.socket) -> None:
        if listener in self._listeners:
            asyncio.get_running_loop().add_reader(listener.fileno(), self._accept, listener)

    async def _handshake(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        server = self._runner.server
        assert server is not None
        try:
            conn.setblocking(False)
            if self._ssl_context is None:
                await loop.connect_accepted_socket(server, conn)
            else:
                await loop.connect_accepted_socket(
                    server,
                    conn,
                    ssl=self._ssl_context,
                    ssl_handshake_timeout=self._handshake_timeout,
                )
        except OSError:  # the handshake failed or timed out; the transport closed the socket
            late = loop.time() - started >= self._handshake_timeout
            metrics.HANDSHAKE_FAILURES.labels("timeout" if late else "error").inc()
        finally:
            self._cap.handshaking -= 1


def _listen(
    infos: Sequence[tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]],
    *,
    backlog: int,
    reuse_port: bool,
    host: str | None,
) -> list[socket.socket]:
    """Listening sockets for the addresses of ``infos``, set up as loop.create_server does."""
    listeners: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:  # several processes share the port (receiver --workers)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # so that "::" and "0.0.0.0" can both be bound
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"cannot listen on {host} {address!r}: {exc.strerror}"
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    return listeners


def fit_fd_limit(max_connections: int) -> int:
    """The connection cap the open-file limit allows.

    The soft limit is raised to ``max_connections`` plus :data:`SPARE_FDS` when the hard
    limit allows it (systemd's default soft limit is 1024); otherwise the cap is
    lowered to fit, with a warning, so that the cap, not EMFILE, refuses connections.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max_connections + SPARE_FDS
    if soft == resource.RLIM_INFINITY or soft >= need:
        return max_connections
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    with suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft >= need:
        logger.info("open-file limit raised to %d for SMSRX_MAX_CONNECTIONS", soft)
        return max_connections
    fitted = max(1, soft - SPARE_FDS)
    logger.warning(
        "SMSRX_MAX_CONNECTIONS=%d does not fit the open-file limit (%d); capping at %d",
        max_connections,
        soft,
        fitted,
    )
    return fitted


async def _serve(
    app: web.Application, settings: Settings, ssl_context: ssl.SSLContext | None, reuse_port: bool
) -> None:
    runner = web.AppRunner(
        app,
        handle_signals=True,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout,
        keepalive_timeout=settings.client_timeout,
    )
    await runner.setup()
    cap: ConnectionCap | None = None
    malformed = MalformedRequestLog()
    aiohttp_server_log = logging.getLogger("aiohttp.server")
    aiohttp_server_log.addFilter(malformed)
    try:
        assert runner.server is not None
        cap = ConnectionCap(fit_fd_limit(settings.max_connections), runner.server)
        metrics.MAX_CONNECTIONS.set(cap.limit)
        metrics.CONNECTIONS.set_function(lambda: cap.open)
        hosts = [host.strip() for host in settings.receiver_host.split(",") if host.strip()]
        for host in hosts:
            site = EdgeSite(
                runner,
                host,
                settings.receiver_port,
                cap=cap,
                handshake_timeout=settings.client_timeout,
                ssl_context=ssl_context,
                reuse_port=reuse_port,
            )
            await site.start()
        await asyncio.Event().wait()  # until SIGINT or SIGTERM (GracefulExit) or cancelled
    finally:
        await runner.cleanup()
        aiohttp_server_log.removeFilter(malformed)
        malformed.throttle.close()
        if cap is not None:
            cap.log.close()


def run(
    app: web.Application,
    settings: Settings,
    *,
    ssl_context: ssl.SSLContext | None,
    reuse_port: bool = False,
    loop: asyncio.AbstractEventLoop | None = None,
) -> None:
    """Serve ``app`` on ``settings.receiver_host`` (comma-separated) and port until SIGINT
    or SIGTERM, then drain within ``settings.shutdown_timeout``, as ``web.run_app`` does."""
    loop = loop or asyncio.new_event_loop()
    main = loop.create_task(_serve(app, settings, ssl_context, reuse_port))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass  # the runner's signal handlers raise GracefulExit: drain below
    finally:
        try:
            if not main.done():
                main.cancel()
                with suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left and report what failed, as ``web.run_app`` does on its way out."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
