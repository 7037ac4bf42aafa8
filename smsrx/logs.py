"""Logging configuration, applied only by the entry points."""

from __future__ import annotations

import logging
import sys

from smsrx.privacy import mask_phone

__all__ = ["MaskingFormatter", "setup_logging"]


class MaskingFormatter(logging.Formatter):
    """A formatter that masks every number written in international form in the whole
    line, traceback included (:func:`smsrx.privacy.mask_phone`): a number that a library,
    or a message no call site masked, would write still leaves the process masked."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_phone(super().format(record), bare=False)


def setup_logging(
    level: str = "INFO", *, name: str = "smsrx", quiet_libraries: bool = False
) -> None:
    """One line per record on stderr: time, level, process role, logger and message,
    phone numbers masked.

    ``quiet_libraries`` (commands that do one thing and exit) drops aiokafka's records:
    the command's own one line says what failed.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        MaskingFormatter(
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
