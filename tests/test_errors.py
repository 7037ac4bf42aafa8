"""One error tree (smsrx.errors), one rule for database failures (smsrx.db), and the
exit codes the command line derives from them (smsrx.cli.failures)."""

from __future__ import annotations

import asyncio
import errno
import importlib
import inspect
import pkgutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaError

from consumers.errors import is_data_error
from receiver.errors import Refused, Unavailable
from receiver.spool import SpoolLocked
from smsrx import errors
from smsrx.cli.dev.process import free_port
from smsrx.cli.failures import Failure, explain
from smsrx.db import DB_ERRORS, is_transient_db_error
from smsrx.errors import SmsrxError
from smsrx.kafka import BrokerWithoutIdempotence
from smsrx.settings import ConfigError, Settings
from subscriptions.errors import InvalidNotifyURL, ServerError, Unauthorized

_PACKAGES = ("smsrx", "receiver", "consumers", "subscriptions")

_NOT_YET: set[str] = set()
"""ValueErrors whose modules were outside the change that made the tree; each needs
``SmsrxError`` as a first base, after which it leaves this set."""


def _modules() -> Iterator[ModuleType]:
    for name in _PACKAGES:
        package = importlib.import_module(name)
        yield package
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if info.name.rsplit(".", 1)[-1] == "__main__":  # runs the command when imported
                continue
            yield importlib.import_module(info.name)


def _error_classes() -> dict[str, type[BaseException]]:
    """Every public exception class defined in the project, by qualified name.

    Module-private ones (``_NoRoom``, ``_NotReady``, ``_Stop``) are signals that never
    leave their module and stand in for a library's type (an OSError, a KafkaError).
    """
    found = {}
    for module in _modules():
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[f"{module.__name__}.{obj.__qualname__}"] = obj
    return found


def test_every_error_class_derives_from_smsrx_error() -> None:
    """Every public exception class in smsrx, receiver, consumers and subscriptions is an SmsrxError."""
    classes = _error_classes()
    assert "receiver.errors.Refused" in classes and "smsrx.envvars.ConfigError" in classes
    strays = {name for name, cls in classes.items() if not issubclass(cls, SmsrxError)}
    assert strays == _NOT_YET


def test_the_drawn_tree_names_every_error() -> None:
    """smsrx/errors.py's docstring draws every SmsrxError subclass the project defines."""
    tree = errors.__doc__ or ""
    classes = _error_classes()
    missing = {
        name
        for name, cls in classes.items()
        if issubclass(cls, SmsrxError) and f" {cls.__name__} " not in tree.replace("\n", " \n")
    }
    assert missing == set()


def test_old_bases_still_catch() -> None:
    """Callers that catch ValueError or RuntimeError still catch ConfigError and SpoolLocked."""
    assert issubclass(ConfigError, ValueError)
    assert issubclass(SpoolLocked, RuntimeError)


def test_behaviour_flags() -> None:
    """retriable and exit_code are set where the behaviour differs from the root's."""
    assert SmsrxError.retriable is False and SmsrxError.exit_code == errors.EXIT_FAILED
    assert Unavailable.retriable and not Refused.retriable
    assert ServerError.retriable and not Unauthorized.retriable
    assert ConfigError.exit_code == InvalidNotifyURL.exit_code == errors.EXIT_USAGE
    assert Unauthorized.exit_code == errors.EXIT_FAILED


_TRANSIENT = [
    asyncpg.SerializationError("could not serialize access"),  # 40001
    asyncpg.DeadlockDetectedError("deadlock detected"),  # 40P01
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.ConnectionFailureError("connection failure"),  # 08006
    asyncpg.CannotConnectNowError("the database system is starting up"),  # 57P03
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.QueryCanceledError("canceling statement due to statement timeout"),  # 57014
    asyncpg.TooManyConnectionsError("too many clients already"),  # 53300
    asyncpg.DiskFullError("could not extend file"),  # 53100
    asyncpg.InterfaceError("connection is closed"),
    # asyncpg clears its statement cache as it raises this: the transaction, tried again, works.
    asyncpg.OutdatedSchemaCacheError("cache lookup failed"),
    asyncpg.InternalClientError("cannot switch to state 11; another operation is in progress"),
    ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    TimeoutError(),
    socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
]

_NOT_TRANSIENT_DB = [
    asyncpg.UntranslatableCharacterError("unsupported Unicode escape sequence"),  # 22P05
    asyncpg.CharacterNotInRepertoireError("invalid byte sequence"),  # 22021
    asyncpg.NumericValueOutOfRangeError("integer out of range"),  # 22003
    asyncpg.UniqueViolationError("duplicate key value"),  # 23505
    asyncpg.UndefinedTableError('relation "status_outbox" does not exist'),  # 42P01
    asyncpg.PostgresSyntaxError("syntax error"),  # 42601
    asyncpg.InvalidPasswordError("password authentication failed"),  # 28P01
    asyncpg.ClientConfigurationError("invalid connection option"),
]

_NOT_DB = [ValueError("not a database error"), KafkaConnectionError("nor a Kafka one")]


@pytest.mark.parametrize("exc", _TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_database_errors(exc: BaseException) -> None:
    """A server down, restarting or busy, a lost connection, a deadlock: worth retrying."""
    assert is_transient_db_error(exc)
    assert isinstance(exc, DB_ERRORS)


@pytest.mark.parametrize("exc", _NOT_TRANSIENT_DB + _NOT_DB, ids=lambda e: type(e).__name__)
def test_errors_that_retrying_cannot_fix(exc: BaseException) -> None:
    """The data, the schema, the query or our configuration: retrying cannot help."""
    assert not is_transient_db_error(exc)


def test_any_database_error_is_a_database_error() -> None:
    """DB_ERRORS holds every database error, transient or not, and nothing from Kafka."""
    assert all(isinstance(exc, DB_ERRORS) for exc in _NOT_TRANSIENT_DB)
    assert not any(isinstance(exc, DB_ERRORS) for exc in _NOT_DB)


async def test_what_a_real_server_raises_is_classified(database_url: str) -> None:
    """Errors from the real PostgreSQL: a NUL in jsonb and a bad argument are data errors;
    a terminated session, a closed connection and a refused one are transient."""
    conn = await asyncpg.connect(database_url)
    other = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.UntranslatableCharacterError) as nul:  # 22P05
            await conn.fetchval("""SELECT '"\\u0000"'::jsonb""")
        with pytest.raises(asyncpg.DataError) as argument:  # invalid input for query argument
            await conn.fetchval("SELECT $1::text", 5)
        for caught in (nul.value, argument.value):
            assert is_data_error(caught) and not is_transient_db_error(caught)

        await conn.fetchval("SELECT pg_terminate_backend($1)", other.get_server_pid())
        with pytest.raises(DB_ERRORS) as terminated:
            await other.fetchval("SELECT 1")
        assert is_transient_db_error(terminated.value), repr(terminated.value)
    finally:
        await conn.close()
        other.terminate()

    with pytest.raises(asyncpg.InterfaceError) as closed:
        await conn.fetchval("SELECT 1")
    assert is_transient_db_error(closed.value)

    with pytest.raises(OSError) as refused:
        await asyncpg.connect(f"postgresql://smsrx@127.0.0.1:{free_port()}/smsrx", timeout=5)
    assert is_transient_db_error(refused.value)


async def test_a_real_deadlock_is_transient(database_url: str) -> None:
    """PostgreSQL's deadlock victim (40P01) is transient: the same transaction may succeed."""
    first, second = [await asyncpg.connect(database_url) for _ in range(2)]
    try:
        async with first.transaction(), second.transaction():
            await first.execute("SELECT pg_advisory_xact_lock(1)")
            await second.execute("SELECT pg_advisory_xact_lock(2)")
            results = await asyncio.gather(
                first.execute("SELECT pg_advisory_xact_lock(2)"),
                second.execute("SELECT pg_advisory_xact_lock(1)"),
                return_exceptions=True,
            )
            victims = [r for r in results if isinstance(r, BaseException)]
            assert [type(v) for v in victims] == [asyncpg.DeadlockDetectedError]
            assert is_transient_db_error(victims[0])
            raise _RollBack
    except _RollBack:
        pass
    finally:
        await first.close()
        await second.close()


class _RollBack(Exception):
    """Leave both transactions (one is aborted already)."""


_SETTINGS = Settings.from_env({"SMSRX_KAFKA_BOOTSTRAP": "127.0.0.1:1"})


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (
            ConfigError("SMSRX_TOPIC_PARTITIONS=0: must be at least 1"),
            Failure(2, "configuration error: SMSRX_TOPIC_PARTITIONS=0: must be at least 1"),
        ),
        (
            InvalidNotifyURL("notify URL must start with https://"),
            Failure(2, "notify URL must start with https://"),
        ),
        (
            SpoolLocked("spool x is used by another process"),
            Failure(3, "spool x is used by another process"),
        ),
        (
            KafkaConnectionError("Unable to bootstrap"),
            Failure(4, "cannot reach the broker at 127.0.0.1:1 (SMSRX_KAFKA_BOOTSTRAP); is it up?"),
        ),
        (
            asyncpg.CannotConnectNowError("the database system is starting up"),
            Failure(
                4,
                "database 127.0.0.1:5432/smsrx (SMSRX_DATABASE_URL): the database system is starting up",
            ),
        ),
        (
            ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
            Failure(
                4,
                "Connection refused; is the service up? database 127.0.0.1:5432/smsrx "
                "(SMSRX_DATABASE_URL), broker 127.0.0.1:1 (SMSRX_KAFKA_BOOTSTRAP)",
            ),
        ),
        (OSError(errno.EADDRINUSE, "Address already in use"), Failure(1, "Address already in use")),
        (
            Unauthorized("Orange refused the credentials (401)"),
            Failure(1, "Orange refused the credentials (401)"),
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_failures_map_to_exit_codes(exc: BaseException, failure: Failure) -> None:
    """Each expected failure gives its exit code and one line; ours by their attributes."""
    assert explain(exc, _SETTINGS) == failure


def test_idempotence_refused_exits_5() -> None:
    """A broker without the idempotent producer exits 5 with the line naming the fix."""
    failure = explain(BrokerWithoutIdempotence("127.0.0.1:1", KafkaError()), _SETTINGS)
    assert failure is not None and failure.code == 5
    assert failure.line.startswith("the broker at 127.0.0.1:1 has no idempotent producer")
    assert "SMSRX_KAFKA_IDEMPOTENCE=0" in failure.line


@pytest.mark.parametrize(
    "exc", [ValueError("x"), asyncpg.UndefinedTableError("no table"), KeyError("k")]
)
def test_bugs_keep_their_traceback(exc: BaseException) -> None:
    """Anything not expected is not explained, so it keeps its traceback."""
    assert explain(exc, _SETTINGS) is None


def test_building_the_parser_loads_no_command() -> None:
    """Every subcommand is imported when it runs, not when the parser is built."""
    probe = (
        "import sys; from smsrx.cli import build_parser; build_parser(); "
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", probe], check=True, capture_output=True, text=True
        ).stdout.split()
    )
    heavy = {
        "aiohttp",
        "aiokafka",
        "asyncpg",
        "consumers.status_cli",
        "consumers.worker",
        "receiver.app",
        "subscriptions.commands",
        "subscriptions.client",
    }
    assert loaded & heavy == set()
