"""Logging configuration, applied only by the entry points."""

from __future__ import annotations

import logging
import sys

__all__ = ["setup_logging"]


def setup_logging(
    level: str = "INFO", *, name: str = "smsrx", quiet_libraries: bool = False
) -> None:
    """One line per record on stderr: time, level, process role, logger and message.

    ``quiet_libraries`` (commands that do one thing and exit) drops aiokafka's records:
    the command's own one line says what failed.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)-5s {name} %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every reconnect attempt at ERROR; our own lines say what matters.
    floor = logging.CRITICAL if quiet_libraries else logging.WARNING
    logging.getLogger("aiokafka").setLevel(max(floor, root.level))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
