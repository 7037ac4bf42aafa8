"""Command-line entry points of the workers.

- ``smsrx consumer status-projection`` and ``smsrx consumer analytics``: run a worker,
  with its ``/metrics`` endpoint;
- ``smsrx status PROVIDER MESSAGE_ID [--json]``: a message's story;
- ``smsrx submissions publish ...``: record that a carrier accepted a message.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from smsrx.errors import EXIT_USAGE
from smsrx.providers import NAMES as _PROVIDERS
from smsrx.settings import Settings

__all__ = ["add_commands", "run_async"]

_STATUS_EPILOG = """\
example:
  smsrx status orange 5f0c9d1e-1c2b-4a5e-9f0e-3b6f1e2d7c8a
  smsrx status orange 5f0c9d1e-1c2b-4a5e-9f0e-3b6f1e2d7c8a --json | jq '.recipients[].status'

Effects in the history: 'status X' (first receipt), 'A -> B' (replaced a lower status),
'still X' (same status again), 'late: below X, history only' (a receipt ranked below
the status already reached; it never changes the current status).
Precedence: queued < sent < unknown < expired < failed < delivered.
Exit status: 0 when the message is known, 1 when nothing is known about it.
"""

_PUBLISH_EPILOG = """\
example:
  smsrx submissions publish --provider orange --message-id 5f0c9d1e \\
      --recipient +2250700000001 --recipient +2250700000002 --tag tenant=acme --tag campaign=spring
  smsrx submissions publish --provider vavasms --lot-id LOT-20190623-1217676 \\
      --message-id SM-20190623-1217879 --recipient +2250700000001 \\
      --message-id SM-20190623-1217880 --recipient +2250700000002
"""


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(main)
    return uvloop.run(main)


def _run_status_projection(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.process import run_process
    from consumers.status_projection import StatusProjection

    worker = StatusProjection(settings, expiry_sweep=not args.no_expiry_sweep)
    return int(run_async(run_process(worker, settings.status_projection_metrics_port)))


def _run_analytics(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.analytics import Analytics
    from consumers.process import run_process

    return int(run_async(run_process(Analytics(settings), settings.analytics_metrics_port)))


def _run_inbound(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.inbound import Inbound
    from consumers.process import run_process
    from consumers.routes import load_rules

    rules = load_rules(settings.inbound_routes, topic_prefix=settings.topics.prefix)
    return int(run_async(run_process(Inbound(settings, rules), settings.inbound_metrics_port)))


def _run_status(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.status_cli import run_status

    return run_status(settings, args)


def _run_poller(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.poller import Poller
    from consumers.polling.clients import missing_credentials
    from consumers.process import run_process

    missing = missing_credentials(settings)
    if all(missing.values()):
        needs = "; ".join(f"{name}: {' and '.join(envs)}" for name, envs in missing.items())
        sys.stderr.write(
            f"smsrx consumer poller: no provider can be polled: set its credentials ({needs})\n"
        )
        return EXIT_USAGE
    return int(run_async(run_process(Poller(settings), settings.poller_metrics_port)))


def _publish_submission(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.submit import SubmissionError, build_submissions, publish_submission

    try:
        submissions = build_submissions(
            provider=args.provider,
            message_ids=args.message_id,
            recipients=args.recipient,
            submitted_at=args.submitted_at,
            tags=args.tag or [],
            lot_id=args.lot_id,
        )
    except SubmissionError as exc:
        sys.stderr.write(f"smsrx submissions publish: {exc}\n")
        return EXIT_USAGE
    for submission in submissions:
        topic, partition, offset = asyncio.run(publish_submission(settings, submission))
        sys.stdout.write(
            f"published submission {submission.event_id}: {submission.provider} message "
            f"{submission.message_id} to {len(submission.recipients)} recipient(s) "
            f"-> {topic}[{partition}]@{offset}\n"
        )
    return 0


def _add_consumer(sub: Any) -> None:
    consumer = sub.add_parser(
        "consumer",
        help="run a Kafka consumer-group worker (status-projection, analytics, inbound, poller)",
        description="Run one worker. Each batch is applied in one PostgreSQL transaction and "
        "its offsets are committed after it; SIGTERM drains the batch in flight (at most "
        "SMSRX_SHUTDOWN_TIMEOUT). Run as many replicas as there are partitions.",
    )
    workers = consumer.add_subparsers(dest="worker", metavar="WORKER", required=True)
    projection = workers.add_parser(
        "status-projection",
        help="current status of every recipient, history, status changes, expiry",
        description="Consume sms.delivery-receipts.v1, sms.submissions.v1 and sms.inbound.v1 "
        "(group smsrx-status-projection) into PostgreSQL: current status by precedence, the "
        "receipt history, submissions and inbound SMS. Publish each change of current status "
        "to sms.message-status.v1, and sweep recipients with no final status after "
        "SMSRX_EXPIRY_HORIZON to 'expired'. Metrics on SMSRX_STATUS_PROJECTION_METRICS_PORT.",
    )
    projection.add_argument(
        "--no-expiry-sweep",
        action="store_true",
        help="never run the expiry sweep in this replica (another replica sweeps)",
    )
    projection.set_defaults(handler=_run_status_projection)
    workers.add_parser(
        "analytics",
        help="per-minute rollups, latency histograms and delivery rates",
        description="Consume sms.delivery-receipts.v1, sms.inbound.v1 and sms.message-status.v1 "
        "(group smsrx-analytics) into per-minute rollups by provider, country and status, "
        "time-to-final histograms and the delivery-rate views, counting each event once. "
        "Metrics on SMSRX_ANALYTICS_METRICS_PORT.",
    ).set_defaults(handler=_run_analytics)
    workers.add_parser(
        "inbound",
        help="opt-outs (STOP, ARRET), the suppression list, keyword routing of inbound SMS",
        description="Consume sms.inbound.v1 and sms.opt-outs.v1 (group smsrx-inbound). Route "
        "each new inbound SMS by its first keyword to sms.inbound.routed.v1 (rules: "
        "SMSRX_INBOUND_ROUTES), publish its opt-out or opt-in to sms.opt-outs.v1, and apply "
        "every opt-out event to the suppression list in PostgreSQL. Serves /metrics and "
        "GET /v1/optouts/{e164} on SMSRX_INBOUND_METRICS_PORT. See docs/inbound.md.",
    ).set_defaults(handler=_run_inbound)
    workers.add_parser(
        "poller",
        help="poll Gateway SMS and VavaSMS status APIs for delivery statuses",
        description="Consume sms.submissions.v1 and sms.message-status.v1 (group smsrx-poller). "
        "Schedule each recipient of a submission whose provider has a status API and "
        "credentials (Gateway SMS: SMSRX_GATEWAYSMS_TOKEN; VavaSMS: SMSRX_VAVASMS_USERNAME "
        "and SMSRX_VAVASMS_PASSWORD), poll it on SMSRX_POLL_SCHEDULE within "
        "SMSRX_<PROVIDER>_POLL_RATE, and publish each status change to "
        "sms.delivery-receipts.v1 with source 'poll'. Polling stops at a final status, "
        "pushed or polled, and at SMSRX_EXPIRY_HORIZON. Metrics on SMSRX_POLLER_METRICS_PORT. "
        "See docs/statuses.md.",
    ).set_defaults(handler=_run_poller)


def _add_status(sub: Any) -> None:
    status = sub.add_parser(
        "status",
        help="show a message's current status per recipient and its history",
        description="Print what smsrx knows about one message: its submission, the current "
        "status of each recipient, when it became final and how long it took, and every "
        "receipt in the order it was applied, with what it did.",
        epilog=_STATUS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("provider", metavar="PROVIDER", help="the carrier, e.g. orange")
    status.add_argument("message_id", metavar="MESSAGE_ID", help="the carrier's message id")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(handler=_run_status, one_shot=True)


def _add_submissions(sub: Any) -> None:
    tasks = sub.add_parser(
        "submissions", help="submission tasks (topic sms.submissions.v1)"
    ).add_subparsers(dest="submissions", metavar="TASK", required=True)
    publish = tasks.add_parser(
        "publish",
        help="record that a carrier accepted a message",
        description="Publish one submission to sms.submissions.v1, keyed by the message id: "
        "the recipients' receipts are then joined to it (submission time, time to final). "
        "Sending services do the same from their own code; see docs/schemas/submission.v1.json.",
        epilog=_PUBLISH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument(
        "--provider",
        required=True,
        metavar="PROVIDER",
        help=f"the carrier: {', '.join(_PROVIDERS)}",
    )
    publish.add_argument(
        "--message-id",
        required=True,
        action="append",
        help="the carrier's id of the message, as its receipts carry; for vavasms, which "
        "gives each recipient its own id, one per --recipient, in the same order",
    )
    publish.add_argument("--lot-id", help="VavaSMS's lot_id of the send, kept as the tag lot_id")
    publish.add_argument(
        "--recipient",
        required=True,
        action="append",
        metavar="+E164",
        help="a recipient's number in international form; repeat for each recipient",
    )
    publish.add_argument(
        "--submitted-at",
        metavar="RFC3339",
        help="when the carrier accepted the message, e.g. 2026-03-02T09:00:00Z (default: now)",
    )
    publish.add_argument(
        "--tag",
        action="append",
        metavar="KEY=VALUE",
        help="a free-form label such as tenant=acme or campaign=spring; repeatable",
    )
    publish.set_defaults(handler=_publish_submission, one_shot=True)


def add_commands(sub: Any) -> None:
    """Register ``consumer``, ``status``, ``submissions`` and ``optouts`` on the ``smsrx`` parser."""
    from consumers.optouts_cli import add_command as add_optouts

    _add_consumer(sub)
    _add_status(sub)
    _add_submissions(sub)
    add_optouts(sub)
