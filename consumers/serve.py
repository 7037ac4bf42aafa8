"""Running one worker as a process: its ``/metrics`` endpoint, then the worker itself."""

from __future__ import annotations

import gc
import logging

from consumers.worker import Worker
from smsrx.metrics import start_metrics_server

__all__ = ["serve"]

logger = logging.getLogger(__name__)


async def serve(worker: Worker, metrics_port: int) -> int:
    """Serve ``/metrics`` and run ``worker`` until SIGTERM or SIGINT; return an exit code."""
    # A batch allocates tens of thousands of small objects that live until it commits;
    # with the default thresholds the cyclic collector runs hundreds of times per batch
    # and took a third of the worker's CPU. Nothing in a batch forms cycles worth chasing.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    runner = await start_metrics_server(worker.role, worker.settings.metrics_host, metrics_port)
    try:
        await worker.run()
    finally:
        await runner.cleanup()
    return 0
