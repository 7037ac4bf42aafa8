"""One worker as a process: its internal HTTP endpoint (``/metrics``, and whatever
else the worker serves there), then the worker itself until SIGTERM."""

from __future__ import annotations

import gc
import logging

from consumers.worker import Worker
from smsrx.metrics import start_metrics_server

__all__ = ["run_process"]

logger = logging.getLogger(__name__)


async def run_process(worker: Worker, port: int) -> int:
    """Serve ``/metrics`` (and :meth:`Worker.http_routes`) on ``port``, and run ``worker``
    until SIGTERM or SIGINT; return an exit code."""
    # A batch allocates tens of thousands of small objects that live until it commits;
    # with the default thresholds the cyclic collector runs hundreds of times per batch
    # and took a third of the worker's CPU. Nothing in a batch forms cycles worth chasing.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    runner = await start_metrics_server(
        worker.role, worker.settings.metrics_host, port, routes=worker.http_routes()
    )
    try:
        await worker.run()
    finally:
        await runner.cleanup()
    return 0
