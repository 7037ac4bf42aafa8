"""The failures a command expects: one line on stderr and an exit code, never a traceback.

Exit codes of ``smsrx``:

- 0: done;
- 1: the command's own "no" (``smsrx status``: nothing known about the message;
  ``smsrx subscriptions``: see docs/subscriptions.md), or a local error such as a port
  already in use;
- 2: bad arguments or a bad setting;
- 3: a receiver worker cannot start (``smsrx receiver --workers N``);
- 4: the broker or the database cannot be reached;
- 5: the broker has no idempotent producer and SMSRX_KAFKA_IDEMPOTENCE is on;
- 130: interrupted (Ctrl-C).

Our own errors say which by their ``exit_code``, and their line by
:meth:`~smsrx.errors.SmsrxError.line` (the tree is in :mod:`smsrx.errors`). The client
libraries' connection errors, and the socket's, are told apart below. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from smsrx.errors import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    SmsrxError,
)
from smsrx.settings import Settings

__all__ = ["Failure", "explain"]


@dataclass(frozen=True, slots=True)
class Failure:
    """What to tell the operator, and the exit code."""

    code: int
    line: str


def _database(url: str) -> str:
    """Where the database is, without the password a URL may carry."""
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError:  # a URL asyncpg reads but urlsplit does not (several hosts)
        return "the database"
    return f"{parts.hostname}:{port}{parts.path}"


def _broker(exc: BaseException, settings: Settings) -> str:
    return (
        f"cannot reach the broker at {settings.kafka_bootstrap} (SMSRX_KAFKA_BOOTSTRAP); is it up?"
    )


def _postgres(exc: BaseException, settings: Settings) -> str:
    return f"database {_database(settings.database_url)} (SMSRX_DATABASE_URL): {exc}"


def _reason(exc: BaseException) -> str:
    """An OSError's text without its ``[Errno N]``."""
    return str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)


def _service(exc: BaseException, settings: Settings) -> str:
    # asyncpg lets the socket's OSError through; aiokafka wraps its own (_broker).
    return (
        f"{_reason(exc)}; is the service up? database {_database(settings.database_url)} "
        f"(SMSRX_DATABASE_URL), broker {settings.kafka_bootstrap} (SMSRX_KAFKA_BOOTSTRAP)"
    )


def _local(exc: BaseException, settings: Settings) -> str:
    return _reason(exc)


def _unreachable(exc: BaseException) -> bool:
    """A connection that failed, as opposed to a local error (a port in use, a file)."""
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return True
    # errno None: "Multiple exceptions: ...", every address of a host name refused us.
    return isinstance(exc, OSError) and exc.errno in {None, errno.EHOSTUNREACH, errno.ENETUNREACH}


def _is(*types: type[BaseException]) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, types)


_Rule = tuple[Callable[[BaseException], bool], int, Callable[[BaseException, Settings], str]]


def _rules() -> tuple[_Rule, ...]:
    """(which failures, exit code, its line) for the libraries' errors, first match wins;
    imported only on failure."""
    import asyncpg
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    return (
        (_is(KafkaConnectionError, KafkaTimeoutError), EXIT_UNREACHABLE, _broker),
        (
            _is(
                asyncpg.PostgresConnectionError,  # SQLSTATE class 08
                asyncpg.InvalidAuthorizationSpecificationError,  # 28: no such role, password
                asyncpg.InvalidCatalogNameError,  # 3D000: no such database
                asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
                asyncpg.TooManyConnectionsError,  # 53300
            ),
            EXIT_UNREACHABLE,
            _postgres,
        ),
        (_unreachable, EXIT_UNREACHABLE, _service),
        (_is(OSError), EXIT_FAILED, _local),
    )


def explain(exc: BaseException, settings: Settings) -> Failure | None:
    """The line and exit code of an expected failure; None for anything else."""
    if isinstance(exc, SmsrxError):
        return Failure(exc.exit_code, exc.line())
    for matches, code, describe in _rules():
        if matches(exc):
            return Failure(code, describe(exc, settings))
    return None
