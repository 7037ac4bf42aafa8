"""``smsrx doctor``: check a configuration, item by item, and say how to fix what is wrong.

The checks live in :mod:`smsrx.cli.doctor_services` (broker, PostgreSQL, Orange) and
:mod:`smsrx.cli.doctor_local` (certificate, allowlists, spool); each returns
:class:`~smsrx.cli.doctor_check.Check` items. This module registers the command, runs
the checks under their time limits and prints the report, as text or ``--json``.
Whatever happens, the answer is the report and an exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import orjson

from smsrx.cli.dev.state import RunningStack, dev_defaults
from smsrx.cli.doctor_check import Check, failed
from smsrx.clock import utcnow
from smsrx.errors import EXIT_FAILED
from smsrx.settings import Settings

__all__ = ["add_command", "collect", "render_json", "render_text"]

logger = logging.getLogger(__name__)

_CHECKS = """\
checks, in the order reported:
  broker               SMSRX_KAFKA_BOOTSTRAP answers, with its cluster metadata
  idempotence          whether the broker grants the idempotent producer's InitProducerId,
                       and whether SMSRX_KAFKA_IDEMPOTENCE agrees (1 needs it; 0 for brokers
                       without it, such as the development broker)
  topics               every smsrx topic exists (with SMSRX_TOPIC_PREFIX), and its partition
                       count; the counts should all be the same
  postgres             SMSRX_DATABASE_URL accepts a connection; the server's version
  migrations           the migrations applied (schema_migrations) against those this smsrx
                       ships; pending ones fail ('smsrx db migrate')
  certificate          SMSRX_TLS_CERT and SMSRX_TLS_KEY: readable, the key matches, valid
                       now, days left (a warning under 30); with SMSRX_INSECURE_HTTP=1, a
                       warning that the receiver serves plain HTTP
  allowlist orange     SMSRX_ALLOW_ORANGE: what it allows; a warning when it is empty, holds
                       0.0.0.0/0 or ::/0, or misses one of Orange's documented addresses
  allowlist vavasms    SMSRX_ALLOW_VAVASMS: the same; empty refuses every VavaSMS callback
  trusted proxies      SMSRX_TRUSTED_PROXIES: whose X-Forwarded-For is believed; a warning
                       on 0.0.0.0/0 or ::/0
  orange subscription  with SMSRX_ORANGE_AUTH_HEADER and SMSRX_ORANGE_SENDER set, what the
                       subscriptions store in PostgreSQL knows of the registration (read
                       only; Orange is not called); otherwise "not configured"
  orange (online)      only with --online: asks Orange about the stored id, as 'smsrx
                       subscriptions check' does (and records its answer, as that does)
  polling gatewaysms   whether Gateway SMS's status API is polled: SMSRX_GATEWAYSMS_TOKEN
                       set, or the running 'smsrx dev' polls it; else "not configured"
                       (its messages stay 'sent' until expired) and the variable to set
  polling vavasms      the same for VavaSMS: SMSRX_VAVASMS_USERNAME and _PASSWORD
  spool                SMSRX_SPOOL_DIR: size, whether a running receiver holds it (Linux
                       /proc/locks), and the free space of its filesystem

When the broker cannot be reached, that is its only line: idempotence and topics need
it. Likewise PostgreSQL for the migrations and the stored Orange subscription.

With 'smsrx dev' running (neither SMSRX_KAFKA_BOOTSTRAP nor SMSRX_DATABASE_URL set), the
stack is checked: its services from <state dir>/dev.json, and the certificate, allowlists
and spool that 'smsrx dev' gives its receiver, unless you set them.

Each item is OK, WARN (it works, but look) or FAIL, followed by the fix.
Exit status: 0 when nothing failed (warnings allowed), 1 when something failed, 2 for a
malformed setting.
"""

_LABEL = {"ok": "OK", "warn": "WARN", "fail": "FAIL"}


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the time limit must be more than zero")
    return value


def add_command(sub: Any) -> None:
    """Register ``doctor`` on the ``smsrx`` parser."""
    parser = sub.add_parser(
        "doctor",
        help="check the configuration: services, certificate, allowlists, Orange, polling, spool",
        description="Check the configuration in the environment, item by item: each is OK,\n"
        "a warning or a failure, with what to do about it. Nothing is changed.",
        epilog=_CHECKS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--online",
        action="store_true",
        help="also ask Orange's API about the stored subscription (off by default)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=3.0,
        metavar="SECONDS",
        help="time limit of each check of a service (default 3; --online: at least twice "
        "SMSRX_ORANGE_TIMEOUT)",
    )
    parser.set_defaults(handler=_run, one_shot=True)


def _broken(name: str, exc: Exception) -> Check:
    """The item of a check that raised: a bug, reported instead of a traceback."""
    logger.debug("doctor: check %s raised", name, exc_info=exc)
    return failed(
        name,
        f"the check itself failed: {exc!r}",
        "run with SMSRX_LOG_LEVEL=DEBUG for the traceback, and report it",
    )


def _safely(name: str, work: Callable[[], list[Check]]) -> list[Check]:
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - reported as the item's failure
        return [_broken(name, exc)]


async def _safely_async(name: str, work: Callable[[], Awaitable[list[Check]]]) -> list[Check]:
    try:
        return await work()
    except Exception as exc:  # noqa: BLE001 - reported as the item's failure
        return [_broken(name, exc)]


async def collect(
    settings: Settings,
    *,
    limit: float = 3.0,
    online: bool = False,
    now: datetime | None = None,
    dev: RunningStack | None = None,
) -> list[Check]:
    """Every check of ``settings``, in the order of ``smsrx doctor --help``; ``dev`` is
    the running ``smsrx dev`` whose stack is checked, if any."""
    from smsrx.cli import doctor_local as local
    from smsrx.cli import doctor_polling as polling
    from smsrx.cli import doctor_services as services

    moment = now or utcnow()
    kafka, database = await asyncio.gather(
        _safely_async("broker", lambda: services.broker(settings, limit)),
        _safely_async("postgres", lambda: services.postgres(settings, limit)),
    )
    store_ready = all(check.ok is not False for check in database)
    return [
        *kafka,
        *database,
        *_safely("certificate", lambda: [local.certificate(settings, moment)]),
        *_safely("allowlists", lambda: local.allowlists(settings)),
        *await _safely_async(
            "orange subscription",
            lambda: services.orange(
                settings, limit, moment, online=online, store_ready=store_ready
            ),
        ),
        *_safely("polling", lambda: polling.polling(settings, dev)),
        *_safely("spool", lambda: [local.spool(settings, local.read_flock_holders())]),
    ]


def _counts(checks: Sequence[Check]) -> dict[str, int]:
    return {status: sum(check.status == status for check in checks) for status in _LABEL}


def render_text(checks: Sequence[Check]) -> str:
    """The report for people: one line per item, its fix under it, then a summary."""
    width = max((len(check.name) for check in checks), default=0)
    lines = []
    for check in checks:
        lines.append(f"{_LABEL[check.status]:<4}  {check.name:<{width}}  {check.detail}")
        if check.fix and check.ok is not True:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
    counts = _counts(checks)
    lines.append(
        f"\n{len(checks)} checks: {counts['ok']} OK, {counts['warn']} warning(s), "
        f"{counts['fail']} failed"
    )
    return "\n".join(lines)


def render_json(checks: Sequence[Check]) -> str:
    """The report for programs: ``ok``, the counts, and every item."""
    document = {
        "ok": all(check.ok is not False for check in checks),
        "counts": _counts(checks),
        "checks": [
            {
                "name": check.name,
                "status": check.status,
                "ok": check.ok,
                "detail": check.detail,
                "fix": check.fix,
            }
            for check in checks
        ],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


def _checked_settings(settings: Settings) -> tuple[Settings, RunningStack | None]:
    """``settings``, or, on a running ``smsrx dev``, the settings its receiver runs with.

    dev.json names the stack's services; the certificate, allowlists and spool are
    what the stack gives its processes (:meth:`Stack.env`) unless set here.
    """
    environ, running = dev_defaults(os.environ)
    if running is None:
        return settings, None
    from smsrx.cli.dev.stack import Stack

    variables = {name: value for name, value in environ.items() if name.startswith("SMSRX_")}
    stack = Stack(running.path.parent, free_ports=False, inherit={}, variables=variables)
    return stack.settings(), running


def _run(settings: Settings, args: argparse.Namespace) -> int:
    checked, running = _checked_settings(settings)
    checks = asyncio.run(collect(checked, limit=args.timeout, online=args.online, dev=running))
    print(render_json(checks) if args.json else render_text(checks), flush=True)
    if any(check.ok is False for check in checks):
        return EXIT_FAILED
    return 0
