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

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from smsrx.settings import ConfigError, Settings

__all__ = [
    "EXIT_FAILED",
    "EXIT_NO_IDEMPOTENCE",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "Failure",
    "explain",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 4
EXIT_NO_IDEMPOTENCE = 5


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


def _config(exc: BaseException, settings: Settings) -> str:
    return f"configuration error: {exc}"


def _no_idempotence(exc: BaseException, settings: Settings) -> str:
    return str(getattr(exc, "message", exc))


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
    """(which failures, exit code, its line), first match wins; imported only on failure."""
    import asyncpg
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    from smsrx.kafka import BrokerWithoutIdempotence

    return (
        (_is(ConfigError), EXIT_USAGE, _config),
        (_is(BrokerWithoutIdempotence), EXIT_NO_IDEMPOTENCE, _no_idempotence),
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
    for matches, code, describe in _rules():
        if matches(exc):
            return Failure(code, describe(exc, settings))
    return None
