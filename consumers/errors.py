"""Typed errors of the workers, and how database failures are classified.

::

    ConsumerError                  base of every worker error
     ├── DatabaseUnavailable       retriable: PostgreSQL is down, restarting, busy or
     │                             chose this transaction as a deadlock victim
     └── RecordRejected            not retriable: PostgreSQL refuses the data itself
                                   (a NUL byte, a value out of range); the worker
                                   isolates the record, counts it invalid and skips it

Any other database error (a missing table, a bad query) is a bug or a missing
migration: it is not caught, and the worker stops.
"""

from __future__ import annotations

import asyncpg

__all__ = [
    "ConsumerError",
    "DatabaseUnavailable",
    "RecordRejected",
    "is_data_error",
    "is_transient",
]


class ConsumerError(Exception):
    """Base class of the workers' errors."""

    retriable = False


class DatabaseUnavailable(ConsumerError):
    """The database cannot apply a batch right now; retry the same batch later."""

    retriable = True


class RecordRejected(ConsumerError):
    """The database refuses a batch because of the data in it."""


_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError: refused, reset
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.InterfaceError,  # the connection closed under us
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # class 40: deadlock, serialization failure
)

_DATA: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,  # class 22
    asyncpg.exceptions.IntegrityConstraintViolationError,  # class 23
    asyncpg.exceptions.ProgramLimitExceededError,  # class 54: e.g. an index row too large
)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same work later may succeed."""
    return isinstance(exc, _TRANSIENT)


def is_data_error(exc: BaseException) -> bool:
    """Whether the database refused the data itself, so retrying it can never succeed."""
    return isinstance(exc, _DATA) and not is_transient(exc)
