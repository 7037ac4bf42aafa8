"""``<state dir>/dev.json``: where a running ``smsrx dev`` listens, for people and commands.

``smsrx dev`` writes it once everything is up and removes it when it stops. Besides the
addresses it prints, the file holds the ``SMSRX_*`` settings another command needs to
work against the stack. Every other ``smsrx`` command reads them back as its defaults
(:func:`dev_defaults`), so a second terminal needs no variables. This module needs
nothing from the ``dev`` extra.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from smsrx.settings import Settings, state_dir_of

__all__ = ["EXPLICIT", "FILE_NAME", "RunningStack", "dev_defaults", "find_running", "write"]

FILE_NAME = "dev.json"

EXPLICIT = ("SMSRX_KAFKA_BOOTSTRAP", "SMSRX_DATABASE_URL")
"""Setting either of these (or ``SMSRX_DATABASE_URL_FILE``) says which services to use: the
file is then not read at all, so a command never mixes the stack's broker with another
database, or the reverse."""


def _shared_settings(settings: Settings) -> dict[str, str]:
    """What another command takes from the stack: its services and its metrics ports."""
    return {
        "SMSRX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SMSRX_KAFKA_IDEMPOTENCE": "1" if settings.kafka_idempotence else "0",
        "SMSRX_DATABASE_URL": settings.database_url,
        "SMSRX_TOPIC_PREFIX": settings.topics.prefix,
        "SMSRX_METRICS_HOST": settings.metrics_host,
        "SMSRX_RECEIVER_METRICS_PORT": str(settings.receiver_metrics_port),
        "SMSRX_STATUS_PROJECTION_METRICS_PORT": str(settings.status_projection_metrics_port),
        "SMSRX_ANALYTICS_METRICS_PORT": str(settings.analytics_metrics_port),
        "SMSRX_INBOUND_METRICS_PORT": str(settings.inbound_metrics_port),
        "SMSRX_SUBSCRIPTIONS_METRICS_PORT": str(settings.subscriptions_metrics_port),
        "SMSRX_PRUNE_METRICS_PORT": str(settings.prune_metrics_port),
        "SMSRX_POLLER_METRICS_PORT": str(settings.poller_metrics_port),
    }


def write(path: Path, addresses: Mapping[str, object], settings: Settings) -> dict[str, object]:
    """Write the file of this process (``smsrx dev``) in one step, so no reader sees half
    of it; return what it holds: ``addresses``, ``pid`` and ``settings``."""
    document = {**addresses, "pid": os.getpid(), "settings": _shared_settings(settings)}
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(path)
    return document


@dataclass(frozen=True, slots=True)
class RunningStack:
    """A ``smsrx dev`` whose process is alive, and the settings it recorded."""

    path: Path
    """Its ``dev.json``, as found (relative when the state directory is)."""
    pid: int
    """The ``smsrx dev`` process."""
    settings: dict[str, str]
    """``SMSRX_*`` variables: its broker, database, idempotence and metrics ports."""
    polled: tuple[str, ...] = ()
    """The providers its poller polls, with credentials only it was given."""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def find_running(environ: Mapping[str, str]) -> RunningStack | None:
    """The stack in the state directory ``smsrx dev`` would use, if one runs there.

    A missing or unreadable file, or one whose process is gone, is no stack.
    """
    path = state_dir_of(environ) / FILE_NAME
    try:
        document = json.loads(path.read_text())
        pid = int(document["pid"])
        settings = {str(name): str(value) for name, value in document["settings"].items()}
        polled = tuple(str(name) for name in document.get("polled", ()))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not _alive(pid):
        return None
    return RunningStack(path, pid, settings, polled)


def dev_defaults(environ: Mapping[str, str]) -> tuple[dict[str, str], RunningStack | None]:
    """``environ`` over a running stack's settings, and that stack; ``environ`` alone, and
    None, when it sets SMSRX_KAFKA_BOOTSTRAP or SMSRX_DATABASE_URL or no stack runs."""
    if any(environ.get(name, "").strip() for name in (*EXPLICIT, "SMSRX_DATABASE_URL_FILE")):
        return dict(environ), None
    stack = find_running(environ)
    if stack is None:
        return dict(environ), None
    return {**stack.settings, **environ}, stack
