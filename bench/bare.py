"""The framework ceiling: a bare aiohttp handler that reads the body and answers 200.

It is served exactly like the receiver (``receiver.app.serve``): same event loop
(uvloop), same TLS context, same keep-alive and body limits, no access log. Only
the work inside the handler differs. Run as ``python -m bench.bare`` with the
receiver's ``SMSRX_*`` variables (port, certificate, ``SMSRX_INSECURE_HTTP``).
"""

from __future__ import annotations

import os

from aiohttp import web

from receiver.app import ssl_context
from smsrx.settings import Settings

_BODY = b'{"status": "accepted", "events": 1, "published": 1}'


async def handle(request: web.Request) -> web.Response:
    """Read the body, answer 200 with a body the size of the receiver's."""
    await request.read()
    return web.Response(body=_BODY, content_type="application/json")


def main() -> None:
    """Serve until SIGTERM."""
    import uvloop

    settings = Settings.from_env(os.environ)
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        handler_args={"keepalive_timeout": settings.client_timeout},
    )
    app.router.add_post("/callbacks/orange/dr", handle)
    web.run_app(
        app,
        host=settings.receiver_host,
        port=settings.receiver_port,
        ssl_context=ssl_context(settings),
        shutdown_timeout=settings.shutdown_timeout,
        keepalive_timeout=settings.client_timeout,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
