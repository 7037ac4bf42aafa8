"""The root of every error smsrx raises on purpose, and the exit codes of ``smsrx``.

Each error carries its behaviour as class attributes, as aiokafka's do: ``retriable``
(trying the same work again later may succeed) and ``exit_code`` (what ``smsrx``
exits with when the error ends a command, after one line: :meth:`SmsrxError.line`).
Services add their own flags: ``status`` (HTTP) on the receiver's errors, ``outcome``
(a metric label) on the receiver's and Orange's. The tree, by module::

    SmsrxError                           exit 1 unless a class below says otherwise
     ├── ConfigError (ValueError)        exit 2  smsrx.envvars: a setting or option is
     │                                           missing or malformed; names it
     ├── BrokerWithoutIdempotence        exit 5  smsrx.kafka: set SMSRX_KAFKA_IDEMPOTENCE=0
     ├── DecodeError (ValueError)                smsrx.codec: not a valid record of its topic
     ├── InvalidPhoneNumber (ValueError)         smsrx.phones: not a phone number
     ├── UnknownProvider (ValueError)    exit 2  smsrx.providers: not in the registry
     ├── SubmissionError (ValueError)    exit 2  consumers.submit: a bad submission
     ├── OptOutsInputError               exit 2  consumers.optouts_csv: a bad number or file
     ├── ImportInterrupted               exit 4  consumers.optouts_commands: the broker
     │                                           failed mid-import
     ├── SpoolLocked (RuntimeError)      exit 3  receiver.spool: another process owns it
     ├── ReceiverError                           receiver.errors: answered with its status
     │    ├── BadRequest                 400
     │    ├── Forbidden                  403
     │    ├── RequestTimeout             408
     │    ├── PayloadTooLarge            413
     │    ├── UnsupportedMediaType       415
     │    └── Unavailable                503     retriable
     │         └── Refused               503     not retriable: refused for good
     ├── ConsumerError                           consumers.errors
     │    ├── DatabaseUnavailable                retriable
     │    ├── BrokerUnavailable                  retriable
     │    └── RecordRejected                     isolated and skipped
     ├── RulesError                      exit 2  consumers.routes: the inbound rules file
     ├── UnexpectedAnswer (ValueError)           consumers.polling.gatewaysms: retriable:
     │                                           not the documented answer
     └── SubscriptionError                       subscriptions.errors
          ├── InvalidNotifyURL           exit 2
          └── OrangeError
               ├── BadRequest            400
               ├── Unauthorized          401
               ├── Forbidden             403
               ├── NotFound              404
               ├── UnexpectedResponse
               ├── ServerError           5xx     retriable
               ├── Timeout                       retriable
               └── Unreachable                   retriable

Whether a *database* error is worth retrying is :func:`smsrx.db.is_transient_db_error`:
those are asyncpg's and the socket's classes, not ours. The command line maps these
errors, and the client libraries' connection errors, to one line and an exit code in
:mod:`smsrx.cli.failures`. This module imports nothing, so that any module may import it.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "EXIT_CANNOT_START",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NO_IDEMPOTENCE",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "SmsrxError",
]

EXIT_FAILED = 1
"""The command's own "no", or a local error such as a port already in use."""
EXIT_USAGE = 2
"""Bad arguments or a bad setting."""
EXIT_CANNOT_START = 3
"""A receiver worker cannot start."""
EXIT_UNREACHABLE = 4
"""The broker or the database cannot be reached."""
EXIT_NO_IDEMPOTENCE = 5
"""The broker has no idempotent producer and SMSRX_KAFKA_IDEMPOTENCE is on."""
EXIT_INTERRUPTED = 130
"""Interrupted (Ctrl-C)."""


class SmsrxError(Exception):
    """Base class of every error smsrx raises on purpose; its message is for a person."""

    retriable: ClassVar[bool] = False
    """Whether the same work may succeed if tried again later."""

    exit_code: ClassVar[int] = EXIT_FAILED
    """What ``smsrx`` exits with when this error ends a command."""

    summary: ClassVar[str] = ""
    """What kind of failure this is, the start of :meth:`line` (empty: the message alone)."""

    def line(self) -> str:
        """The one line ``smsrx`` prints (after ``smsrx: ``) when this error ends a command."""
        text = str(self)
        return f"{self.summary}: {text}" if self.summary else text
