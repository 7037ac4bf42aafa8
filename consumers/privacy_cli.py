"""``smsrx privacy erase +E164 [--yes] [--json]``: erase one person's data
(:mod:`consumers.erasure`), after showing what it changes and asking.

The number is shown masked here too: what this prints ends up in tickets and terminals.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from smsrx.errors import EXIT_FAILED, EXIT_USAGE
from smsrx.settings import Settings

if TYPE_CHECKING:  # the parser is built at every start: the client libraries load on use
    from consumers.erasure import Erasure

__all__ = ["add_command"]

_EPILOG = """\
examples:
  smsrx privacy erase +2250700000001          # shows what it changes, then asks
  smsrx privacy erase +2250700000001 --yes --json

Rows are anonymised in one transaction, not deleted: the number becomes one random token
(erased:<country>:<16 hex digits>) in inbound_messages, status_events, recipient_status,
submissions and status_outbox; inbound texts become '' and raw payloads '{}'. Analytics
rollups hold no number (a country only) and are not changed. The suppression list
(suppressions, optout_events) keeps the number: it is the record that this person must
never be messaged again. Records still on Kafka topics expire with their retention.

It rewrites rows that no service's database role may rewrite: run it with the database
owner's SMSRX_DATABASE_URL, as 'smsrx db migrate' is run.

exit status: 0 erased (or nothing to erase); 1 not confirmed, --yes missing while stdin
is not a terminal, or the database role may not change those rows; 2 not a phone number;
4 the database cannot be reached.
"""


def add_command(sub: Any) -> None:
    """Register ``privacy erase`` on the ``smsrx`` parser."""
    tasks = sub.add_parser(
        "privacy", help="personal data tasks: erase a person's data"
    ).add_subparsers(dest="privacy", metavar="TASK", required=True)
    erase = tasks.add_parser(
        "erase",
        help="erase one phone number's data (data-subject request), in one transaction",
        description="Erase what smsrx stores about one phone number in SMSRX_DATABASE_URL: its "
        "inbound texts and raw payloads, and its number in receipts, current statuses and "
        "submissions, replaced by a token. The suppression list keeps the number. Prints what "
        "it would change and asks first, unless --yes.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    erase.add_argument("phone", metavar="+E164", help="the person's number, e.g. +2250700000001")
    erase.add_argument("--yes", action="store_true", help="erase without asking")
    erase.add_argument("--json", action="store_true", help="print the result as JSON")
    erase.set_defaults(handler=_run_erase, one_shot=True)


def _run_erase(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg

    from smsrx.phones import InvalidPhoneNumber, to_e164

    try:
        phone = to_e164(args.phone)
    except InvalidPhoneNumber as exc:
        sys.stderr.write(f"smsrx privacy erase: not a phone number in international form: {exc}\n")
        return EXIT_USAGE
    try:
        return int(asyncio.run(_erase(settings, phone, args)))
    except asyncpg.InsufficientPrivilegeError as exc:
        sys.stderr.write(
            f"smsrx privacy erase: nothing erased: {exc}; run it with the database owner's "
            "SMSRX_DATABASE_URL, as 'smsrx db migrate' is run\n"
        )
        return EXIT_FAILED


async def _erase(settings: Settings, phone: str, args: argparse.Namespace) -> int:
    from consumers.erasure import erase, survey
    from smsrx.db import connect

    conn = await connect(settings.database_url)
    try:
        plan = await survey(conn, phone)
        if not args.yes:
            if not sys.stdin.isatty():
                _show(plan, args.json, erased=False)
                sys.stderr.write(
                    "smsrx privacy erase: nothing erased: stdin is not a terminal to confirm "
                    "on; run it again with --yes\n"
                )
                return EXIT_FAILED
            sys.stderr.write(_render(plan, erased=False))
            if not _confirmed(plan):
                sys.stderr.write("smsrx privacy erase: nothing erased\n")
                return EXIT_FAILED
        done = await erase(conn, phone)
    finally:
        await conn.close()
    _show(done, args.json, erased=True)
    return 0


def _confirmed(plan: Erasure) -> bool:
    from smsrx.privacy import mask_phone

    sys.stderr.write(f"erase the data of {mask_phone(plan.phone)}? type 'yes': ")
    sys.stderr.flush()
    try:
        return input().strip().lower() == "yes"
    except EOFError:
        return False


def _show(result: Erasure, as_json: bool, *, erased: bool) -> None:
    if as_json:
        import orjson

        sys.stdout.write(
            orjson.dumps(_document(result, erased), option=orjson.OPT_INDENT_2).decode()
        )
        sys.stdout.write("\n")
    else:
        sys.stdout.write(_render(result, erased=erased))


def _document(result: Erasure, erased: bool) -> dict[str, object]:
    from smsrx.privacy import mask_phone

    return {
        "phone": mask_phone(result.phone),
        "erased": erased,
        "token": result.token,
        "rows": result.rows,
        "kept": result.kept,
    }


def _render(result: Erasure, *, erased: bool) -> str:
    from consumers.erasure import CHANGES, KEPT
    from smsrx.privacy import mask_phone

    masked = mask_phone(result.phone)
    if not erased:
        head = f"would erase the data of {masked}"
    elif result.token is None:
        head = f"nothing to erase for {masked}"
    else:
        head = f"erased the data of {masked} (now {result.token})"
    lines = [f"{head}:"]
    width = max(map(len, (*CHANGES, *KEPT)))
    for table, what in CHANGES.items():
        lines.append(f"  {table:<{width}}  {_rows(result.rows[table])}: {what}")
    lines.append(
        "kept: the suppression list, which keeps the number so that it is never messaged again:"
    )
    for table, what in KEPT.items():
        lines.append(f"  {table:<{width}}  {_rows(result.kept[table])}: {what}")
    lines.append("unchanged: the analytics rollups, which hold a country and no number")
    verb = "changed" if erased else "to change"
    lines.append(f"{result.total} row(s) {verb}, in one transaction")
    return "\n".join(lines) + "\n"


def _rows(count: int) -> str:
    return f"{count} row{'' if count == 1 else 's'}"
