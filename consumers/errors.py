"""Typed errors of the workers, and how database failures are classified.

::

    ConsumerError                  (smsrx.errors.SmsrxError) base of every worker error
     ├── DatabaseUnavailable       retriable: PostgreSQL is down, restarting, busy or
     │                             chose this transaction as a deadlock victim
     ├── BrokerUnavailable         retriable: records a batch publishes before it
     │                             commits (the inbound worker's) were not acknowledged
     └── RecordRejected            not retriable: PostgreSQL refuses the data itself
                                   (a NUL byte, a value out of range); the worker
                                   isolates the record, counts it invalid and skips it

:func:`is_transient` is the shared rule, :func:`smsrx.db.is_transient_db_error`. Any
other database error that is not a data error (a missing table, a bad query) is a bug
or a missing migration: it is not caught, and the worker stops.
"""

from __future__ import annotations

import asyncpg

from smsrx.db import is_transient_db_error
from smsrx.errors import SmsrxError

__all__ = [
    "BrokerUnavailable",
    "ConsumerError",
    "DatabaseUnavailable",
    "RecordRejected",
    "is_data_error",
    "is_transient",
]


class ConsumerError(SmsrxError):
    """Base class of the workers' errors."""


class DatabaseUnavailable(ConsumerError):
    """The database cannot apply a batch right now; retry the same batch later."""

    retriable = True


class BrokerUnavailable(ConsumerError):
    """The broker did not acknowledge what a batch publishes in its transaction; retry
    the same batch later (its transaction is rolled back)."""

    retriable = True


class RecordRejected(ConsumerError):
    """The database refuses a batch because of the data in it."""


is_transient = is_transient_db_error
"""Whether retrying the same work later may succeed (the workers' name for the shared rule)."""

_DATA: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,  # class 22, and asyncpg's "invalid input for query argument"
    asyncpg.exceptions.IntegrityConstraintViolationError,  # class 23
    asyncpg.exceptions.ProgramLimitExceededError,  # class 54: e.g. an index row too large
)


def is_data_error(exc: BaseException) -> bool:
    """Whether the database refused the data itself, so retrying it can never succeed."""
    return isinstance(exc, _DATA) and not is_transient_db_error(exc)
